"""The seam between the trainer loop and a distributed strategy (debug, Accelerate, DeepSpeed).

The loop calls only these methods, so a task runs unchanged on every backend. Collective methods
(marked) must be called by every rank in the same order.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Dict, Iterator

import torch

from mars_dist.engine.task import ModelSpec, Models


class Backend(ABC):
    name: str = "abstract"

    def __init__(self, cfg: Any):
        self.cfg = cfg  # RunConfig
        self.rank = 0
        self.world_size = 1
        self.local_rank = 0
        self.device = torch.device("cpu")
        self.grad_accum = 1
        self.micro_batch = 1
        self._schedules: Dict[str, Any] = {}  # trained model -> its LrSchedule (backends fill it in prepare)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @abstractmethod
    def prepare(self, specs: Dict[str, ModelSpec], micro_batch: int, grad_accum: int) -> Models:
        """Moves/wraps/shards models and builds their optimizers and lr schedules. Collective."""

    @contextlib.contextmanager
    def micro_step_context(self, sync: bool) -> Iterator[None]:
        """Wraps forward+backward of one micro-batch; `sync` is True on the last micro-batch of a step
        (DDP reduces gradients only then)."""
        yield

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on GPU when configured; a no-op on CPU."""
        return contextlib.nullcontext()

    @abstractmethod
    def backward(self, name: str, loss: torch.Tensor) -> None:
        """Backward of a micro-batch mean loss for model `name` (scaled by 1/grad_accum here)."""

    @abstractmethod
    def step(self, name: str) -> float:
        """Clip, optimizer step, lr schedule step, zero grads for model `name`; returns the grad norm."""

    def zero_grad(self, name: str) -> None:
        """Drops the accumulated gradients of `name` without stepping (used to skip a non-finite step)."""

    @abstractmethod
    def save_checkpoint(self, directory: Path) -> None:
        """Writes every model's, optimizer's and scheduler's state under `directory`. Collective."""

    @abstractmethod
    def load_checkpoint(self, directory: Path, saved_world_size: int) -> None:
        """Restores what save_checkpoint wrote, also when `saved_world_size` differs. Collective."""

    @abstractmethod
    def full_state_dict(self, name: str) -> Dict[str, torch.Tensor]:
        """Consolidated fp32 weights of `name` on CPU (complete on rank 0). Collective."""

    @abstractmethod
    def full_optimizer_state(self, name: str) -> Dict[str, Dict[str, torch.Tensor]]:
        """Consolidated optimizer state of `name` per parameter name ({fqn: {"exp_avg": ..., ...}}) on
        CPU, complete on rank 0; parameters that never stepped have none. Collective."""

    def learning_rates(self) -> Dict[str, float]:
        """The lr of each trained model's first param group for the coming optimizer step (for logs)."""
        return {name: schedule.base_lrs[0] * schedule.factor() for name, schedule in self._schedules.items() if schedule.base_lrs}

    # --- collectives used by the loop (no-ops in one process) ---
    def all_reduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def all_reduce_max(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def barrier(self) -> None:
        pass

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        return obj

    def peak_memory_bytes(self) -> int:
        return 0

    def shutdown(self) -> None:
        pass

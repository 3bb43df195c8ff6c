"""The seam between the trainer loop and a distributed strategy (debug, Accelerate, DeepSpeed), and
what every strategy shares.

The loop calls only these methods, so a task runs unchanged on every backend. `Backend` holds what
all backends do alike: the walk over the task's models in `prepare` (frozen ones moved and kept as
they are, trained ones handed to `_prepare_trained`, which each backend wraps its own way, and an lr
schedule per trained model), the collectives over the launcher's process group, lr reporting, and
the context (`parallel`) tasks and models reach distribution through. `OptimizerBackend`
(engine/backends/optimizer_backend.py) adds the plain-torch optimizer step debug and Accelerate
share; DeepSpeed steps through its engines. Collective methods (marked) must be called by every
rank in the same order.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import torch
from torch import nn

from mars_dist.data.geometry import BatchGeometry
from mars_dist.engine.schedule import LrSchedule
from mars_dist.engine.task import ModelSpec, Models
from mars_dist.parallel import process_group
from mars_dist.parallel.context import ParallelContext


def freeze(module: nn.Module, device: torch.device) -> nn.Module:
    """A frozen model is moved, put in eval mode and excluded from autograd; never wrapped or sharded."""
    module.to(device)
    module.eval()
    module.requires_grad_(False)
    return module


def trained_entry(table: Mapping[str, Any], name: str) -> Any:
    """`table[name]` for a trained model (its optimizer or engine), or an error naming the trained ones."""
    if name not in table:
        raise KeyError(f"backward/step for model {name!r}, but the trained models are {sorted(table)}")
    return table[name]


class Backend(ABC):
    name: str = "abstract"

    def __init__(self, cfg: Any):
        self.cfg = cfg  # RunConfig
        self.rank = 0
        self.world_size = 1
        self.local_rank = 0
        self.device = torch.device("cpu")
        self.geometry: Optional[BatchGeometry] = None
        self.parallel = ParallelContext()  # sharding backends replace it with their own
        self._wrapped: Dict[str, nn.Module] = {}
        self._plain: Dict[str, nn.Module] = {}
        self._trained: Dict[str, Any] = {}  # trained model -> its optimizer (or DeepSpeed engine)
        self._schedules: Dict[str, LrSchedule] = {}
        # checkpoint model names that differ from today's (a renamed model: name -> its name in the files)
        self._saved_names: Dict[str, str] = {}

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def grad_accum(self) -> int:
        return self.geometry.grad_accum if self.geometry else 1

    @property
    def micro_batch(self) -> int:
        return self.geometry.micro_batch if self.geometry else 1

    # --- setup ---------------------------------------------------------------------------------
    def prepare(self, specs: Dict[str, ModelSpec], geometry: BatchGeometry) -> Models:
        """Moves/wraps/shards models and builds their optimizers and lr schedules. Collective."""
        self.geometry = geometry
        for name, spec in specs.items():
            if not spec.trained:
                self._wrapped[name] = self._plain[name] = freeze(spec.module, self.device)
                continue
            wrapped, plain, optimizer, step_handle = self._prepare_trained(name, spec)
            self._wrapped[name], self._plain[name], self._trained[name] = wrapped, plain, step_handle
            self._schedules[name] = LrSchedule.for_optimizer(optimizer, spec.lr_multiplier)
        return Models(dict(self._wrapped), dict(self._plain), self.parallel)

    @abstractmethod
    def _prepare_trained(self, name: str, spec: ModelSpec) -> Tuple[nn.Module, nn.Module, torch.optim.Optimizer, Any]:
        """(the module to call, the plain module, its torch optimizer, what `step` drives: the
        optimizer itself or the backend's engine) for one trained model."""

    def trained_names(self):
        return list(self._trained)

    def frozen(self) -> Dict[str, nn.Module]:
        return {name: module for name, module in self._plain.items() if name not in self._trained}

    # --- one step ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def micro_step_context(self, sync: bool) -> Iterator[None]:
        """Wraps forward+backward of one micro-batch; `sync` is True on the last micro-batch of a step
        (DDP reduces gradients only then)."""
        yield

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast when configured; a no-op otherwise."""
        return contextlib.nullcontext()

    @abstractmethod
    def backward(self, name: str, loss: torch.Tensor) -> None:
        """Backward of a micro-batch mean loss for model `name` (scaled by 1/grad_accum here)."""

    @abstractmethod
    def step(self, name: str) -> float:
        """Clip, optimizer step, lr schedule step, zero grads for model `name`; returns the grad norm."""

    def zero_grad(self, name: str) -> None:
        """Drops the accumulated gradients of `name` without stepping (used to skip a non-finite step)."""

    # --- checkpoints ---------------------------------------------------------------------------
    @abstractmethod
    def save_checkpoint(self, directory: Path) -> None:
        """Writes every model's, optimizer's and scheduler's state under `directory`. Collective."""

    @abstractmethod
    def load_checkpoint(self, directory: Path, saved_world_size: int) -> None:
        """Restores what save_checkpoint wrote, also when `saved_world_size` differs. Collective."""

    def lr_steps(self) -> Dict[str, int]:
        """The lr-schedule steps each trained model has taken (what a checkpoint keeps of a schedule)."""
        return {name: s.steps_taken for name, s in self._schedules.items()}

    def rename_saved_models(self, saved_names: Mapping[str, str]) -> None:
        """A checkpoint about to be loaded names some models differently (a model renamed since it was
        written): {name today: name in the checkpoint}."""
        self._saved_names = dict(saved_names)

    def saved_name(self, name: str) -> str:
        return self._saved_names.get(name, name)

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

    # --- collectives used by the loop (no-ops in one process) ----------------------------------
    def all_reduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        return process_group.all_reduce_mean(values)

    def all_reduce_max(self, values: torch.Tensor) -> torch.Tensor:
        return process_group.all_reduce_max(values)

    def barrier(self) -> None:
        process_group.barrier()

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        return process_group.broadcast_object(obj, src)

    def peak_memory_bytes(self) -> int:
        from mars_dist.engine.metrics import peak_memory_bytes

        return peak_memory_bytes(self.device)

    def shutdown(self) -> None:
        process_group.destroy()

"""The "debug" backend: plain PyTorch on one device, no launcher needed.

`python mars_dist/train.py` runs it in one process on the GPU if there is one, else on the CPU.
Under torchrun with several workers it becomes plain torch DDP with every rank holding the full
(replicated) state. That keeps it the simplest reference for the Accelerate and DeepSpeed
backends, and lets the engine's own multi-process features (preemption agreement, non-finite
agreement, checkpoint commit) be tested without either library. Replicated state also makes its
checkpoints trivially elastic: rank 0 writes one file per model and any world size reads it.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Dict, Iterator, List

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mars_dist.engine import distributed
from mars_dist.engine.backend import Backend
from mars_dist.engine.backends._common import (
    BACKEND_STATE_FILE,
    LrSchedule,
    TorchDistributedCollectives,
    check_backend_state,
    freeze,
    total_grad_norm,
    trained_entry,
    write_json_atomic,
)
from mars_dist.engine.device import resolve_autocast_dtype, resolve_device
from mars_dist.engine.checkpoint import atomic_torch_save
from mars_dist.engine.task import ModelSpec, Models


class DebugBackend(TorchDistributedCollectives, Backend):
    name = "debug"

    def __init__(self, cfg):
        super().__init__(cfg)
        launch = distributed.launcher_info()
        self.device = resolve_device(cfg.engine.device, launch.local_rank)
        info = distributed.init_distributed(self.device, cfg.engine.dist_timeout_s)
        self.rank, self.world_size, self.local_rank = info.rank, info.world_size, info.local_rank
        self.autocast_dtype = resolve_autocast_dtype(cfg.engine.mixed_precision, self.device)
        self._modules: Dict[str, nn.Module] = {}
        self._wrapped: Dict[str, nn.Module] = {}
        self._optimizers: Dict[str, torch.optim.Optimizer] = {}
        self._schedules: Dict[str, LrSchedule] = {}

    def prepare(self, specs: Dict[str, ModelSpec], micro_batch: int, grad_accum: int) -> Models:
        self.micro_batch, self.grad_accum = micro_batch, grad_accum
        for name, spec in specs.items():
            if not spec.trained:
                module = freeze(spec.module, self.device)
                self._modules[name] = self._wrapped[name] = module
                continue
            module = spec.module.to(self.device)
            self._modules[name] = module
            self._wrapped[name] = self._ddp(module) if self.world_size > 1 else module
            self._optimizers[name] = spec.optimizer(module.parameters())
            self._schedules[name] = LrSchedule.for_optimizer(self._optimizers[name], spec.lr_multiplier)
        return Models(dict(self._wrapped), dict(self._modules))

    def _ddp(self, module: nn.Module) -> nn.Module:
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # A model may hold parameters its forward never uses (see the Accelerate backend).
        return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=True)

    @property
    def trained(self) -> List[str]:
        return list(self._optimizers)

    @contextlib.contextmanager
    def micro_step_context(self, sync: bool) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            if not sync:
                for name in self.trained:
                    wrapped = self._wrapped[name]
                    if isinstance(wrapped, DistributedDataParallel):
                        stack.enter_context(wrapped.no_sync())
            yield

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _optimizer(self, name: str) -> torch.optim.Optimizer:
        return trained_entry(self._optimizers, name)

    def backward(self, name: str, loss: torch.Tensor) -> None:
        self._optimizer(name)
        (loss / self.grad_accum).backward()

    def step(self, name: str) -> float:
        optimizer = self._optimizer(name)
        norm = total_grad_norm(self._modules[name].parameters(), self.cfg.optim.grad_clip)
        self._schedules[name].apply(optimizer.param_groups)
        optimizer.step()
        self._schedules[name].advance()
        optimizer.zero_grad(set_to_none=True)
        return norm

    def zero_grad(self, name: str) -> None:
        self._optimizer(name).zero_grad(set_to_none=True)

    def _model_file(self, directory: Path, name: str) -> Path:
        return Path(directory) / f"debug-{name}.pt"

    def save_checkpoint(self, directory: Path) -> None:
        if not self.is_main:
            return  # every rank holds the same state
        for name, module in self._modules.items():
            optimizer = self._optimizers.get(name)
            atomic_torch_save(
                {"model": module.state_dict(), "optimizer": optimizer.state_dict() if optimizer else None},
                self._model_file(directory, name),
            )
        write_json_atomic(
            Path(directory) / BACKEND_STATE_FILE,
            {"backend": self.name, "lr_steps": {name: s.steps_taken for name, s in self._schedules.items()}},
        )

    def load_checkpoint(self, directory: Path, saved_world_size: int) -> None:
        state = check_backend_state(Path(directory), self.name, self.trained)
        for name, module in self._modules.items():
            path = self._model_file(directory, name)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; the checkpoint has no state for model {name!r}")
            saved = torch.load(path, map_location=self.device, weights_only=True)
            module.load_state_dict(saved["model"])
            if name in self._optimizers:
                self._optimizers[name].load_state_dict(saved["optimizer"])
                self._schedules[name].steps_taken = int(state["lr_steps"][name])

    def full_state_dict(self, name: str) -> Dict[str, torch.Tensor]:
        if name not in self._modules:
            raise KeyError(f"no model {name!r} (models: {', '.join(self._modules)})")
        return {
            key: value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype).clone()
            for key, value in self._modules[name].state_dict().items()
        }

    def full_optimizer_state(self, name: str) -> Dict[str, Dict[str, torch.Tensor]]:
        """Every rank holds the whole optimizer (data parallel), so this is its state by parameter name."""
        optimizer = self._optimizer(name)
        names = {p: fqn for fqn, p in self._modules[name].named_parameters()}
        return {names[p]: {k: (v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v) for k, v in state.items()}
                for p, state in optimizer.state.items()}

    def shutdown(self) -> None:
        distributed.destroy()

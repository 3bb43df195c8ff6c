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
from typing import Any, Dict, Tuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mars_dist.device import resolve_autocast_dtype, resolve_device
from mars_dist.engine.backends._common import check_backend_state, saved_lr_steps, write_backend_state
from mars_dist.engine.backends.optimizer_backend import OptimizerBackend
from mars_dist.engine.checkpoint import CheckpointError
from mars_dist.engine.task import ModelSpec
from mars_dist.io.atomic import atomic_torch_save
from mars_dist.parallel import process_group


class DebugBackend(OptimizerBackend):
    name = "debug"

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        launch = process_group.launcher_info()
        self.device = resolve_device(cfg.engine.device, launch.local_rank)
        info = process_group.init_distributed(self.device, cfg.engine.dist_timeout_s)
        self.rank, self.world_size, self.local_rank = info.rank, info.world_size, info.local_rank
        self.autocast_dtype = resolve_autocast_dtype(cfg.engine.mixed_precision, self.device)

    def _prepare_trained(self, name: str, spec: ModelSpec) -> Tuple[nn.Module, nn.Module, torch.optim.Optimizer, Any]:
        module = spec.module.to(self.device)
        wrapped = self._ddp(module) if self.world_size > 1 else module
        optimizer = spec.optimizer(module.parameters())
        return wrapped, module, optimizer, optimizer

    def _ddp(self, module: nn.Module) -> nn.Module:
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # A model may hold parameters its forward never uses (see the Accelerate backend).
        return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=True)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _model_file(self, directory: Path, name: str) -> Path:
        return Path(directory) / f"debug-{self.saved_name(name)}.pt"

    def save_checkpoint(self, directory: Path) -> None:
        if not self.is_main:
            return  # every rank holds the same state
        for name, module in self._plain.items():
            optimizer = self._trained.get(name)
            atomic_torch_save(
                {"model": module.state_dict(), "optimizer": optimizer.state_dict() if optimizer else None},
                self._model_file(directory, name),
            )
        write_backend_state(self, directory)

    def load_checkpoint(self, directory: Path, saved_world_size: int) -> None:
        state = check_backend_state(Path(directory), self.name, self.trained_names(), self.saved_name)
        for name, module in self._plain.items():
            path = self._model_file(directory, name)
            if not path.is_file():
                raise CheckpointError(f"{path}: missing; the checkpoint has no state for model {name!r}")
            saved = torch.load(path, map_location=self.device, weights_only=True)
            module.load_state_dict(saved["model"])
            if name in self._trained:
                self._trained[name].load_state_dict(saved["optimizer"])
                self._schedules[name].steps_taken = saved_lr_steps(state, name, self.saved_name)

    def full_state_dict(self, name: str) -> Dict[str, torch.Tensor]:
        if name not in self._plain:
            raise KeyError(f"no model {name!r} (models: {', '.join(self._plain)})")
        return {
            key: value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype).clone()
            for key, value in self._plain[name].state_dict().items()
        }

    def full_optimizer_state(self, name: str) -> Dict[str, Dict[str, torch.Tensor]]:
        """Every rank holds the whole optimizer (data parallel), so this is its state by parameter name."""
        optimizer = self._optimizer(name)
        names = {p: fqn for fqn, p in self._plain[name].named_parameters()}
        return {names[p]: {k: (v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v) for k, v in state.items()}
                for p, state in optimizer.state.items()}

"""Helpers every backend shares: device choice, lr multiplier schedule, grad norm, small JSON state.

Kept apart from the backends so that the debug, Accelerate and DeepSpeed strategies compute the
learning rate and the clipped gradient norm the same way: a run must mean the same thing on each.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

import torch
from torch import nn

from mars_dist.io.atomic import atomic_torch_save, atomic_write_text
from mars_dist.engine import distributed


def trained_entry(table: Dict[str, Any], name: str) -> Any:
    """`table[name]` for a trained model (its optimizer or engine), or an error naming the trained ones."""
    if name not in table:
        raise KeyError(f"backward/step for model {name!r}, but the trained models are {sorted(table)}")
    return table[name]


def freeze(module: nn.Module, device: torch.device) -> nn.Module:
    """A frozen model is moved, put in eval mode and excluded from autograd; never wrapped or sharded."""
    module.to(device)
    module.eval()
    module.requires_grad_(False)
    return module


class LrSchedule:
    """lr of every param group = its base lr x `multiplier(optimizer steps taken so far)`.

    One implementation for all backends instead of torch LambdaLR: DeepSpeed wraps the optimizer
    (its param_groups are the wrapper's), and the only state worth checkpointing is the step count,
    which survives any resharding as a plain integer.
    """

    def __init__(self, base_lrs: List[float], multiplier: Optional[Callable[[int], float]]):
        self.base_lrs = list(base_lrs)
        self.multiplier = multiplier
        self.steps_taken = 0

    @classmethod
    def for_optimizer(cls, optimizer: torch.optim.Optimizer, multiplier: Optional[Callable[[int], float]]) -> "LrSchedule":
        return cls([group["lr"] for group in optimizer.param_groups], multiplier)

    def factor(self) -> float:
        return 1.0 if self.multiplier is None else float(self.multiplier(self.steps_taken))

    def apply(self, param_groups: List[Dict[str, Any]]) -> None:
        """Sets the lr for the coming optimizer step."""
        if len(param_groups) != len(self.base_lrs):
            raise RuntimeError(f"optimizer has {len(param_groups)} param groups, the lr schedule was built for {len(self.base_lrs)}")
        factor = self.factor()
        for group, base_lr in zip(param_groups, self.base_lrs):
            group["lr"] = base_lr * factor

    def advance(self) -> None:
        self.steps_taken += 1


def total_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> float:
    """Global L2 norm of the gradients (before clipping); clips in place when max_norm > 0.

    Works for plain tensors (DDP: gradients are already all-reduced) and for FSDP2 DTensor shards,
    whose partial norms are reduced across the mesh by `full_tensor()` (as torchtitan does).
    """
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.get_total_norm([p.grad for p in params], norm_type=2.0)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return float(norm)


def write_json_atomic(path: Path, payload: Dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=True))


def read_json(path: Path, what: str) -> Dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing ({what}); is this a checkpoint written by this backend?")
    with open(path) as f:
        return json.load(f)


BACKEND_STATE_FILE = "backend_state.json"


def _frozen_file(directory: Path, name: str) -> Path:
    return Path(directory) / f"frozen-{name}.pt"


def save_frozen(directory: Path, frozen: Dict[str, nn.Module], is_main: bool) -> None:
    """Rank 0 writes the state dict of every frozen model (an EMA changes although no optimizer steps it).

    Frozen models are never wrapped or sharded, so every rank holds the same full copy and the file
    loads on any world size.
    """
    if is_main:
        for name, module in frozen.items():
            atomic_torch_save(module.state_dict(), _frozen_file(directory, name))


def load_frozen(directory: Path, frozen: Dict[str, nn.Module]) -> None:
    for name, module in frozen.items():
        path = _frozen_file(directory, name)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; the checkpoint has no state for the frozen model {name!r} "
                                    "(accelerate/deepspeed checkpoints of mars_dist before frozen models were saved lack it)")
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))  # copied onto the module's device


def check_backend_state(directory: Path, backend: str, names: List[str]) -> Dict[str, Any]:
    """Reads backend_state.json and checks that it was written by `backend` for the same models."""
    state = read_json(directory / BACKEND_STATE_FILE, f"{backend} backend state")
    if state.get("backend") != backend:
        raise ValueError(
            f"{directory}: checkpoint was written by the {state.get('backend')!r} backend, this run uses {backend!r} "
            "(export it with `python -m mars_dist.export` and start from the exported weights instead)"
        )
    saved = sorted(state.get("lr_steps", {}))
    if saved != sorted(names):
        raise ValueError(f"{directory}: checkpoint holds models {saved}, this task trains {sorted(names)}")
    return state


class TorchDistributedCollectives:
    """The Backend collectives over the default torch.distributed process group (Accelerate, DeepSpeed).

    Mixed in before `Backend`; delegates to mars_dist.engine.distributed, whose helpers are no-ops
    without a process group.
    """

    device: torch.device

    def all_reduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        return distributed.all_reduce_mean(values)

    def all_reduce_max(self, values: torch.Tensor) -> torch.Tensor:
        return distributed.all_reduce_max(values)

    def barrier(self) -> None:
        distributed.barrier()

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        return distributed.broadcast_object(obj, src)

    def peak_memory_bytes(self) -> int:
        from mars_dist.engine.metrics import peak_memory_bytes

        return peak_memory_bytes(self.device)

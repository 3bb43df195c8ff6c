"""Helpers the backends share: the clipped gradient norm, small JSON state, frozen models' files.

Kept apart from the backends so that the debug, Accelerate and DeepSpeed strategies compute the
clipped gradient norm and write their own state the same way: a run must mean the same thing on each.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List

import torch
from torch import nn

from mars_dist.engine.checkpoint import CheckpointError
from mars_dist.io.atomic import atomic_torch_save, atomic_write_text


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
        raise CheckpointError(f"{path}: missing ({what}); is this a checkpoint written by this backend?")
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


def load_frozen(directory: Path, frozen: Dict[str, nn.Module], saved_name: Callable[[str], str]) -> None:
    for name, module in frozen.items():
        path = _frozen_file(directory, saved_name(name))
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; the checkpoint has no state for the frozen model {name!r} "
                                  "(accelerate/deepspeed checkpoints of mars_dist before frozen models were saved lack it)")
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))  # copied onto the module's device


def check_backend_state(directory: Path, backend: str, names: List[str], saved_name: Callable[[str], str]) -> Dict[str, Any]:
    """Reads backend_state.json and checks that it was written by `backend` for the same models."""
    state = read_json(directory / BACKEND_STATE_FILE, f"{backend} backend state")
    if state.get("backend") != backend:
        raise CheckpointError(
            f"{directory}: checkpoint was written by the {state.get('backend')!r} backend, this run uses {backend!r} "
            "(export it with mars-export and start from the exported weights instead)"
        )
    saved = sorted(state.get("lr_steps", {}))
    if saved != sorted(saved_name(n) for n in names):
        raise CheckpointError(f"{directory}: checkpoint holds models {saved}, this task trains {sorted(names)}")
    return state


def write_backend_state(backend: Any, directory: Path, **details: Any) -> None:
    """backend_state.json (rank 0): the backend that wrote the checkpoint, on how many processes, the
    lr-schedule steps of each trained model, and the backend's own `details`."""
    if backend.is_main:
        write_json_atomic(Path(directory) / BACKEND_STATE_FILE, {
            "backend": backend.name, "world_size": backend.world_size, "lr_steps": backend.lr_steps(), **details})


def saved_lr_steps(state: Dict[str, Any], name: str, saved_name: Callable[[str], str]) -> int:
    return int(state["lr_steps"][saved_name(name)])

"""Process-group setup from launcher environment variables, and the few collectives the training loop,
the backends' contexts and the distributed evaluation need.

torchrun and `accelerate launch` both describe a worker with RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT; a plain `python mars_dist/train.py` sets none of them and runs as
rank 0 of 1 without a process group. Every helper here is therefore a no-op when no group exists,
so callers never branch on "distributed or not".
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist

from mars_dist.errors import UserValueError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise UserValueError(f"environment variable {name}={value!r}: expected an integer (set by torchrun/accelerate)") from None


def launcher_info() -> DistInfo:
    """Rank, world size and local rank as the launcher announced them (0, 1, 0 without a launcher)."""
    info = DistInfo(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    if not 0 <= info.rank < info.world_size:
        raise UserValueError(f"RANK={info.rank} is outside WORLD_SIZE={info.world_size}")
    return info


def init_distributed(device: torch.device, timeout_s: float = 1800.0) -> DistInfo:
    """Joins the launcher's process group (nccl on GPU, gloo on CPU) when there is more than one worker.

    Idempotent: a group some library (or a test harness) already created is reused as it is.
    """
    info = launcher_info()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if info.world_size > 1 and not is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    if is_initialized() and (dist.get_rank(), dist.get_world_size()) != (info.rank, info.world_size):
        raise RuntimeError(
            f"process group says rank {dist.get_rank()} of {dist.get_world_size()}, the launcher's environment "
            f"says {info.rank} of {info.world_size}"
        )
    return info


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce(values: torch.Tensor, op: "dist.ReduceOp") -> torch.Tensor:
    """`op` over ranks of a copy (the input is left unchanged); `values` itself without a group."""
    if not is_initialized():
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=op)
    return out


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Element-wise mean over ranks."""
    if not is_initialized():
        return values
    return _all_reduce(values, dist.ReduceOp.SUM) / dist.get_world_size()


def all_reduce_max(values: torch.Tensor) -> torch.Tensor:
    return _all_reduce(values, dist.ReduceOp.MAX)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    return _all_reduce(values, dist.ReduceOp.SUM)


def broadcast_tensor(values: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank `src`'s `values` on every rank (a copy; the input is left unchanged; `values` itself without a group)."""
    if not is_initialized():
        return values
    out = values.detach().clone().contiguous()
    dist.broadcast(out, src=src)
    return out


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not is_initialized():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def gather_object(obj: Any, dst: int = 0) -> Optional[List[Any]]:
    """Every rank's picklable `obj`, in rank order, on rank `dst` (None on the others); [obj] without a group."""
    if not is_initialized():
        return [obj]
    gathered = [None] * dist.get_world_size() if dist.get_rank() == dst else None
    dist.gather_object(obj, gathered, dst=dst)
    return gathered


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()


def current_rank() -> int:
    """This process's rank in the default group (0 without one)."""
    return dist.get_rank() if is_initialized() else 0


def current_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1

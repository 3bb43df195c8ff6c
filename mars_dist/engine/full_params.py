"""Full (unsharded) views of parameters that a backend may have sharded (FSDP2 DTensor, ZeRO-3).

The tasks read and edit weights outside the optimizer (the tokenizer's EMA and its shadow
discriminator read them, the dead-code restart writes codebook rows, the AR's media gathers them).
Under DDP a parameter is a plain full tensor; under FSDP2 it is a DTensor shard and under ZeRO-3 an
empty placeholder. DeepSpeed (every ZeRO stage) also keeps its own fp32 master copy that the next
optimizer step copies back over the module's parameters, so an edit must reach that copy too.
These helpers hide the differences so the tasks stay backend-agnostic. Sharded cases are collective:
every rank must enter them in the same order.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Sequence

import torch
from torch import nn


def _is_dtensor(p: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return isinstance(p, DTensor)


def _is_zero3(p: torch.Tensor) -> bool:
    return hasattr(p, "ds_id") and hasattr(p, "ds_status")


def _has_deepspeed_master(p: torch.Tensor) -> bool:
    """ZeRO-1/2 link each parameter to its fragment of the fp32 master (`_hp_mapping`); ZeRO-3
    parameters know their optimizer (`_z3_optimizer`)."""
    return hasattr(p, "_hp_mapping") or hasattr(p, "_z3_optimizer")


def _zero3_partition(p: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """This rank's partition of `full` as ZeRO-3 lays it out: the flat tensor zero-padded to
    world size x partition size, then cut into equal partitions.

    DeepSpeed's own safe_set_full_fp32_param cuts the unpadded tensor, so on the last rank the
    partition runs past the end whenever the world size does not divide the parameter's size
    (the paper's 16384 x 32 codebook on 3, 6, 12 or 24 GPUs).
    """
    size = p.ds_tensor.numel()
    flat = full.new_zeros(size * p.ds_zero_partition_world_size)
    flat[: full.numel()] = full.flatten()
    return flat.narrow(0, size * p.ds_zero_partition_rank, size)


def _write_deepspeed_masters(params: List[torch.Tensor], full: List[torch.Tensor]) -> None:
    """Copies each rank's fragment of the edited full values into DeepSpeed's fp32 master weights
    (a local copy on every rank, no collective). Without it the edit would be undone at the next
    optimizer step, which copies the masters back over the module's parameters."""
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_local_fp32_param

    for p, f in zip(params, full):
        if not (_has_deepspeed_master(p) and p.requires_grad):
            continue
        if _is_zero3(p):
            safe_set_local_fp32_param(p, _zero3_partition(p, f.float()))
        else:
            safe_set_full_fp32_param(p, f.float())


@contextlib.contextmanager
def full_tensors(params: Sequence[torch.Tensor], writeback: bool = False) -> Iterator[List[torch.Tensor]]:
    """Yields one full tensor per param; with `writeback`, in-place edits reach the (sharded) param
    and, under DeepSpeed, its fp32 master copy.

    Every rank must make the same edits: the written-back value is taken from rank 0 (ZeRO-3) or
    re-sharded from each rank's own full copy (FSDP2).
    """
    params = list(params)
    if any(_is_zero3(p) for p in params):
        import deepspeed

        with torch.no_grad(), deepspeed.zero.GatheredParameters(params, modifier_rank=0 if writeback else None):
            full = [p.data for p in params]
            yield full
            if writeback:  # inside the context: the gathered values vanish when it re-partitions them
                _write_deepspeed_masters(params, full)
        return
    with torch.no_grad():
        full = [p.full_tensor() if _is_dtensor(p) else p.data for p in params]
        yield full
        if writeback:
            from torch.distributed.tensor import distribute_tensor

            for p, f in zip(params, full):
                if _is_dtensor(p):
                    p.to_local().copy_(distribute_tensor(f, p.device_mesh, p.placements).to_local())
            _write_deepspeed_masters(params, full)


@contextlib.contextmanager
def full_named_parameters(module: nn.Module) -> Iterator[Dict[str, torch.Tensor]]:
    """{name: full tensor} of `module`'s parameters (read-only views), gathered if sharded. Collective."""
    named = list(module.named_parameters())
    with full_tensors([p for _, p in named]) as full:
        yield {name: tensor for (name, _), tensor in zip(named, full)}

"""The ParallelContext of the DeepSpeed strategy (ZeRO 1, 2, 3).

Under ZeRO-3 a parameter is an empty placeholder outside the forward of its module: a full view is
gathered with `GatheredParameters`. At every stage DeepSpeed also keeps its own fp32 master copy,
which the next optimizer step copies back over the module's parameters, so an edit (`writeback`)
must reach that copy too, or it would be undone at the next step.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Sequence

import torch

from mars_dist.parallel.context import ParallelContext


def _is_zero3(p: torch.Tensor) -> bool:
    return hasattr(p, "ds_id") and hasattr(p, "ds_status")


def _has_master(p: torch.Tensor) -> bool:
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


def _write_masters(params: List[torch.Tensor], full: List[torch.Tensor]) -> None:
    """Copies each rank's fragment of the edited full values into DeepSpeed's fp32 master weights
    (a local copy on every rank, no collective)."""
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_local_fp32_param

    for p, f in zip(params, full):
        if not (_has_master(p) and p.requires_grad):
            continue
        if _is_zero3(p):
            safe_set_local_fp32_param(p, _zero3_partition(p, f.float()))
        else:
            safe_set_full_fp32_param(p, f.float())


class ZeROContext(ParallelContext):
    @contextlib.contextmanager
    def full_tensors(self, params: Sequence[torch.Tensor], writeback: bool = False) -> Iterator[List[torch.Tensor]]:
        """Every rank must make the same edits: under ZeRO-3 the written-back value is rank 0's."""
        params = list(params)
        if any(_is_zero3(p) for p in params):
            import deepspeed

            with torch.no_grad(), deepspeed.zero.GatheredParameters(params, modifier_rank=0 if writeback else None):
                full = [p.data for p in params]
                yield full
                if writeback:  # inside the context: the gathered values vanish when it re-partitions them
                    _write_masters(params, full)
            return
        with torch.no_grad():
            full = [p.data for p in params]
            yield full
            if writeback:
                _write_masters(params, full)

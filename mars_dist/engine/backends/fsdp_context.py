"""The ParallelContext of the FSDP2 strategy: parameters are DTensor shards on the device mesh.

A full view is `full_tensor()` (an all-gather); with `writeback`, each rank re-shards its (identical)
edited full copy into its own shard.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Sequence

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from mars_dist.parallel.context import ParallelContext


class FSDPContext(ParallelContext):
    @contextlib.contextmanager
    def full_tensors(self, params: Sequence[torch.Tensor], writeback: bool = False) -> Iterator[List[torch.Tensor]]:
        params = list(params)
        with torch.no_grad():
            full = [p.full_tensor() if isinstance(p, DTensor) else p.data for p in params]
            yield full
            if writeback:
                for p, f in zip(params, full):
                    if isinstance(p, DTensor):
                        p.to_local().copy_(distribute_tensor(f, p.device_mesh, p.placements).to_local())

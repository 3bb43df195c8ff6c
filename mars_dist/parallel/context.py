"""What a backend tells tasks and models about distribution, so that neither knows which backend runs.

A task or model that works outside the optimizer (an EMA reading the live weights, the quantizer
rewriting dead codebook rows, a validation pass summing counts over ranks, media generated from
the trained weights) asks its `ParallelContext`: who this process is, the collectives over the
training group, and full views of parameters the backend may have sharded (with `writeback`,
in-place edits of those views reach the sharded parameter and any master copy the optimizer keeps).
This base class is the context of every backend whose ranks each hold every parameter whole (one
process, DDP); the sharding backends (FSDP2, ZeRO) subclass it in mars_dist/engine/backends/ and
override `full_tensors`.
Collective methods must be entered by every rank in the same order.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Sequence

import torch
from torch import nn

from mars_dist.parallel import process_group


class ParallelContext:
    """Replicated: every rank holds every parameter whole. Collectives go over the default process
    group (no-ops without one, so a single process needs no special case)."""

    @property
    def rank(self) -> int:
        return process_group.current_rank()

    @property
    def world_size(self) -> int:
        return process_group.current_world_size()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- collectives (copies: the inputs are left unchanged) ---
    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        return process_group.all_reduce_sum(values)

    def all_reduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        return process_group.all_reduce_mean(values)

    def all_reduce_max(self, values: torch.Tensor) -> torch.Tensor:
        return process_group.all_reduce_max(values)

    def broadcast(self, values: torch.Tensor, src: int = 0) -> torch.Tensor:
        return process_group.broadcast_tensor(values, src)

    # --- full views of parameters ---
    @contextlib.contextmanager
    def full_tensors(self, params: Sequence[torch.Tensor], writeback: bool = False) -> Iterator[List[torch.Tensor]]:
        """One full tensor per parameter; with `writeback`, in-place edits of them are kept. Every rank
        must make the same edits. Here the parameters are whole: the views are their data."""
        with torch.no_grad():
            yield [p.data for p in params]

    @contextlib.contextmanager
    def full_named_parameters(self, module: nn.Module) -> Iterator[Dict[str, torch.Tensor]]:
        """{name: full tensor} of `module`'s parameters (read-only views)."""
        named = list(module.named_parameters())
        with self.full_tensors([p for _, p in named]) as full:
            yield {name: tensor for (name, _), tensor in zip(named, full)}


LOCAL = ParallelContext()  # one process, or replicated ranks: what models use unless a backend says otherwise

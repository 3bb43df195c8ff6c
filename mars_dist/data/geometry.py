"""The batch geometry of a run: how the GLOBAL batch (data.batch_size) is cut per optimizer step.

Computed once, from the data settings and the world size, and handed to both the stream (which
yields `grad_accum` micro-batches of `micro_batch` samples per rank and step) and the backend
(which accumulates, and for DeepSpeed fills its batch keys from it), so a run means the same thing
on 1 GPU and on 64 and nobody recomputes it.
"""
from __future__ import annotations

from dataclasses import dataclass

from mars_dist.errors import UserValueError


@dataclass(frozen=True)
class BatchGeometry:
    global_batch: int
    world_size: int
    micro_batch: int
    grad_accum: int

    def __post_init__(self) -> None:
        if min(self.micro_batch, self.grad_accum, self.world_size) < 1 or \
                self.global_batch != self.world_size * self.micro_batch * self.grad_accum:
            raise ValueError(f"global_batch={self.global_batch} must equal world_size={self.world_size} x "
                             f"micro_batch={self.micro_batch} x grad_accum={self.grad_accum} (all >= 1)")

    @classmethod
    def of(cls, global_batch: int, world_size: int, micro_batch_size: int = 0) -> "BatchGeometry":
        """The geometry of a GLOBAL batch on `world_size` ranks; micro_batch_size 0 means no accumulation
        (micro_batch = global_batch / world_size). A batch the ranks cannot share is a user error."""
        if global_batch < 1 or world_size < 1 or micro_batch_size < 0:
            raise UserValueError(f"data.batch_size={global_batch}, world_size={world_size}, "
                                 f"data.micro_batch_size={micro_batch_size}: expected batch_size >= 1, "
                                 "world_size >= 1, micro_batch_size >= 0")
        if micro_batch_size == 0:
            if global_batch % world_size:
                raise UserValueError(f"data.batch_size={global_batch} is not divisible by the {world_size} processes: "
                                     "choose a global batch that is a multiple of the number of processes, or set "
                                     "data.micro_batch_size to accumulate gradients")
            return cls(global_batch, world_size, global_batch // world_size, 1)
        per_step = world_size * micro_batch_size
        if global_batch % per_step:
            raise UserValueError(f"data.batch_size={global_batch} is not divisible by {world_size} processes x "
                                 f"data.micro_batch_size={micro_batch_size} = {per_step}: gradient accumulation must "
                                 "be a whole number of micro-batches")
        return cls(global_batch, world_size, micro_batch_size, global_batch // per_step)

    def describe(self) -> str:
        return (f"{self.global_batch} = {self.world_size} x {self.micro_batch} x {self.grad_accum} accumulation")

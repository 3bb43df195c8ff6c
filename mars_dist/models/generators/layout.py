"""The token pyramid as one flat sequence, for the families that model it position by position.

The tokenizer's token maps r_1..r_K (one [B, h_k, w_k] map per scale; rows are frequency, columns
time) are laid out scale-major, coarse to fine, exactly the tokens the next-scale AR models. Within
a scale the raster order is a choice:

- "time": frame by frame (column-major: every frequency row of a time column before the next
  column), so a causal model generates each scale left to right in time, like audio;
- "frequency": band by band (row-major: every time step of the lowest row first), so a causal
  model generates each scale from low to high frequencies.

The layout is a fixed permutation of the scale-major row-major flattening (the next-scale AR's own
order), so it applies to token maps and bool masks alike and costs one gather.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

from mars_dist.errors import UserValueError

TIME_MAJOR = "time"
FREQUENCY_MAJOR = "frequency"
ORDERS = (TIME_MAJOR, FREQUENCY_MAJOR)


class TokenOrderError(UserValueError):
    """An unknown raster order."""


def check_order(order: str, key: str) -> None:
    if order not in ORDERS:
        raise TokenOrderError(f"{key}={order!r}: expected one of {', '.join(ORDERS)}")


class PyramidLayout:
    """Scale-major sequence over `scales` with raster `order` inside each scale.

    `level_L[i]` is the scale of sequence position i; `flatten` / `unflatten` convert between the
    per-scale maps and [B, L] sequences.
    """

    def __init__(self, scales: Sequence[Sequence[int]], order: str = TIME_MAJOR):
        check_order(order, "order")
        self.scales: List[Tuple[int, int]] = [(int(h), int(w)) for h, w in scales]
        self.order = order
        self.lengths = [h * w for h, w in self.scales]
        self.starts = [sum(self.lengths[:k]) for k in range(len(self.scales))]
        self.num_tokens = sum(self.lengths)
        cpu = torch.device("cpu")  # also inside a meta-device context (weightless models for accounting)
        perm = []
        for (h, w), start in zip(self.scales, self.starts):
            grid_hw = torch.arange(h * w, device=cpu).view(h, w) + start
            perm.append((grid_hw.t() if order == TIME_MAJOR else grid_hw).reshape(-1))
        # sequence position i holds row-major pyramid position perm_L[i]
        self.perm_L = torch.cat(perm)
        self.inverse_L = torch.argsort(self.perm_L)
        self.level_L = torch.cat([torch.full((n,), k, device=cpu) for k, n in enumerate(self.lengths)])

    def flatten(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """One [B, h_k, w_k] map per scale (tokens or bools) -> [B, L] in sequence order."""
        if len(maps) != len(self.scales) or any(tuple(m.shape[1:]) != hw for m, hw in zip(maps, self.scales)):
            raise ValueError(f"expected one [B, h, w] map per scale {self.scales}, got shapes "
                             f"{[tuple(m.shape) for m in maps]}")
        flat_BL = torch.cat([m.flatten(1) for m in maps], dim=1)
        return flat_BL[:, self.perm_L.to(flat_BL.device)]

    def unflatten(self, seq_BL: torch.Tensor) -> List[torch.Tensor]:
        """[B, L] in sequence order -> one [B, h_k, w_k] map per scale."""
        if seq_BL.dim() != 2 or seq_BL.shape[1] != self.num_tokens:
            raise ValueError(f"expected a [B, {self.num_tokens}] sequence, got shape {tuple(seq_BL.shape)}")
        flat_BL = seq_BL[:, self.inverse_L.to(seq_BL.device)]
        return [flat_BL[:, s:s + n].reshape(-1, h, w) for s, n, (h, w) in zip(self.starts, self.lengths, self.scales)]

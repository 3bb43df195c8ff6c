"""The one optimizer builder every task uses: AdamW with weight decay on matrices only.

Biases, norm gains and per-head scales (ndim < 2) are not decayed: decaying them pulls normalised
activations towards zero and buys nothing. One builder keeps every task's optimizer (and so the
meaning of optim.* settings) the same on every backend.
"""
from __future__ import annotations

from functools import partial
from typing import Iterable, Sequence

import torch
from torch import nn


def adamw(params: Iterable[nn.Parameter], lr: float, betas: Sequence[float], weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable `params`: group 1 (ndim >= 2) decayed, group 2 not; empty groups dropped."""
    params = [p for p in params if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=tuple(betas))


def adamw_factory(optim_cfg, lr: float | None = None):
    """An OptimizerFactory (params -> optimizer) from the run's optim.* settings (lr overridable)."""
    return partial(adamw, lr=optim_cfg.lr if lr is None else lr, betas=optim_cfg.betas, weight_decay=optim_cfg.weight_decay)

"""Exponential moving average of a model's weights, kept in a frozen copy of the model.

The EMA copy is a plain module registered with the engine as a frozen model (ModelSpec with
optimizer=None), so every backend moves and checkpoints it like any other model and no EMA state
hides in task state. The live weights may be sharded by the backend; its ParallelContext gathers them.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from mars_dist.parallel.context import LOCAL, ParallelContext


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with requires_grad off and in eval mode: the EMA model's starting point."""
    ema = copy.deepcopy(module)
    ema.requires_grad_(False)
    return ema.eval()


def ema_decay_at(step: int, decay: float) -> float:
    """Warmed-up decay min(decay, (1 + step) / (10 + step)): early steps follow the live model closely
    instead of averaging in the random initialisation for ~1/(1 - decay) steps."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, live: nn.Module, decay: float, parallel: ParallelContext = LOCAL) -> None:
    """ema <- decay * ema + (1 - decay) * live for parameters; buffers are copied (they are state,
    e.g. the quantizer's dead-code counters, not weights to average). Collective if `live` is sharded."""
    live_params = dict(live.named_parameters())
    ema_params = dict(ema.named_parameters())
    if live_params.keys() != ema_params.keys():
        raise ValueError(f"EMA and live model differ in parameters: {sorted(set(live_params) ^ set(ema_params))[:5]}")
    names = sorted(live_params)
    with parallel.full_tensors([live_params[n] for n in names]) as full:
        for name, live_full in zip(names, full):
            ema_params[name].lerp_(live_full.to(ema_params[name].device, ema_params[name].dtype), 1.0 - decay)
    ema_buffers = dict(ema.named_buffers())
    for name, buf in live.named_buffers():
        ema_buffers[name].copy_(buf)

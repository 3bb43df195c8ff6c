"""Learning-rate multipliers (step -> factor on an optimizer's base lr) shared by every task, and the
schedule every backend applies them with.

One function serves the tokenizer, its discriminator and the AR: linear warm-up over
`optim.warmup_steps`, then either a constant lr or a cosine decay to `optim.min_lr_ratio` of it at
`train.max_steps`. A short run (the CPU benchmark's ~10 minutes) gains most from the decay: the
last few hundred steps at a small lr average out the noise of the large early steps, which an
EMA alone does only partly. The multiplier is a pure function of the step, so a resumed run
continues the same curve as long as `train.max_steps` is unchanged.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional

import torch

DECAYS = ("none", "cosine")


def lr_multiplier(warmup_steps: int, decay: str = "none", max_steps: int = 0, min_lr_ratio: float = 0.0) -> Callable[[int], float]:
    """step (0-based, the optimizer step about to be taken) -> lr factor."""
    if decay not in DECAYS:
        raise ValueError(f"optim.decay={decay!r}: expected one of {', '.join(DECAYS)}")
    if decay == "cosine" and max_steps <= warmup_steps:
        raise ValueError(f"optim.decay=cosine needs train.max_steps ({max_steps}) > optim.warmup_steps ({warmup_steps})")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"optim.min_lr_ratio={min_lr_ratio}: expected a value in [0, 1]")

    def multiplier(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if decay == "none":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / (max_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


def from_config(cfg) -> Callable[[int], float]:
    """The multiplier a run's `optim` and `train` sections describe."""
    o = cfg.optim
    return lr_multiplier(o.warmup_steps, o.decay, cfg.train.max_steps, o.min_lr_ratio)


class LrSchedule:
    """lr of every param group = its base lr x `multiplier(optimizer steps taken so far)`.

    One implementation for all backends instead of torch LambdaLR: DeepSpeed wraps the optimizer
    (its param_groups are the wrapper's), and the only state worth checkpointing is the step count,
    which survives any resharding as a plain integer.
    """

    def __init__(self, base_lrs: List[float], multiplier: Optional[Callable[[int], float]]):
        self.base_lrs = list(base_lrs)
        self.multiplier = multiplier
        self.steps_taken = 0

    @classmethod
    def for_optimizer(cls, optimizer: torch.optim.Optimizer, multiplier: Optional[Callable[[int], float]]) -> "LrSchedule":
        return cls([group["lr"] for group in optimizer.param_groups], multiplier)

    def factor(self) -> float:
        return 1.0 if self.multiplier is None else float(self.multiplier(self.steps_taken))

    def apply(self, param_groups: List[Dict[str, Any]]) -> None:
        """Sets the lr for the coming optimizer step."""
        if len(param_groups) != len(self.base_lrs):
            raise RuntimeError(f"optimizer has {len(param_groups)} param groups, the lr schedule was built for {len(self.base_lrs)}")
        factor = self.factor()
        for group, base_lr in zip(param_groups, self.base_lrs):
            group["lr"] = base_lr * factor

    def advance(self) -> None:
        self.steps_taken += 1

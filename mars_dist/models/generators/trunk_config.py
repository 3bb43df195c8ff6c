"""Settings of the AdaLN transformer trunk that every generator family is built on.

A family's architecture dataclass (next_scale/config.py, next_token/config.py, maskgit/config.py)
extends this one; `section` is the run-config key its task stores it under (the family's name), so
a bad value is named the way the user wrote it (`next_scale.width=...`, `maskgit.heads=...`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass
class TrunkConfig:
    section: ClassVar[str] = "generator"

    depth: int = 16
    width: int = 1024
    heads: int = 16
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    # Classifier-free guidance needs an unconditional model: with this probability a training sample
    # gets ALL its labels replaced by their null entries (the branch CFG subtracts at inference).
    cond_drop_prob: float = 0.1
    # Each label is also nulled on its own with this probability, so any subset of labels is a
    # condition the model has seen (e.g. "pitch 60, any instrument").
    label_drop_prob: float = 0.1
    attn_l2_norm: bool = True
    norm_eps: float = 1e-6
    # On CUDA, training attention is restricted to the fused SDPA kernels (efficient / cuDNN /
    # flash) so a mask they cannot take fails loudly instead of silently running the O(L^2)-memory
    # math path; set True to allow that fallback.
    allow_math_attention: bool = False

    def validate(self) -> None:
        for key in ("depth", "width", "heads"):
            if getattr(self, key) < 1:
                raise ValueError(f"{self.section}.{key}={getattr(self, key)}: must be >= 1")
        if self.width % self.heads:
            raise ValueError(f"{self.section}.width={self.width} is not divisible by {self.section}.heads={self.heads}")
        for key in ("cond_drop_prob", "label_drop_prob", "dropout"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{self.section}.{key}={value}: expected a probability in [0, 1]")

"""Architecture settings of the next-scale AR, and the named size presets the configs and benchmarks share.

The AR task (mars_dist/tasks/ar.py) adds what training needs on top (the tokenizer to train on, media)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict


@dataclass
class NextScaleConfig:
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
                raise ValueError(f"ar.{key}={getattr(self, key)}: must be >= 1")
        if self.width % self.heads:
            raise ValueError(f"ar.width={self.width} is not divisible by ar.heads={self.heads}")
        for key in ("cond_drop_prob", "label_drop_prob", "dropout"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"ar.{key}={value}: expected a probability in [0, 1]")


def var_preset(depth: int) -> Dict[str, int]:
    """VAR's family: width = 64 * depth, one 64-wide head per layer (d16 = 1024 wide, 16 heads)."""
    return {"depth": depth, "width": 64 * depth, "heads": depth}


# Sizes by name. configs/ar/<name>.yaml carry the same numbers (a test keeps them in step).
AR_PRESETS: Dict[str, Dict[str, int]] = {
    "tiny": {"depth": 2, "width": 64, "heads": 2},  # unit tests
    "small": {"depth": 4, "width": 256, "heads": 4},  # learns on the synthetic set on a 2-core CPU in minutes
    "d12": var_preset(12),  # the CPU real-time target; sizes: python -m mars_dist.bench.presets
    "d16": var_preset(16),
    "d20": var_preset(20),
    "d24": var_preset(24),
}


def ar_preset(name: str, **overrides) -> NextScaleConfig:
    if name not in AR_PRESETS:
        raise ValueError(f"unknown AR preset {name!r}: expected one of {', '.join(AR_PRESETS)}")
    return replace(NextScaleConfig(), **AR_PRESETS[name], **overrides)

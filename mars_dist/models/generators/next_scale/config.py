"""Architecture settings of the next-scale AR, and the named size presets the configs and benchmarks share.

The AR task (mars_dist/tasks/ar.py) adds what training needs on top (the tokenizer to train on, media).
The other families (next_token/, maskgit/) are built at the same presets: they share the trunk, so
equal depth and width mean equal parameter counts (python -m mars_dist.bench.presets)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Dict

from mars_dist.models.generators.trunk_config import TrunkConfig


@dataclass
class NextScaleConfig(TrunkConfig):
    section: ClassVar[str] = "ar"


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
    return preset(NextScaleConfig, name, **overrides)


def preset(config_class: type, name: str, **overrides):
    """`config_class` (any family's architecture dataclass) at the preset size `name` (overrides win)."""
    if name not in AR_PRESETS:
        raise ValueError(f"unknown preset {name!r}: expected one of {', '.join(AR_PRESETS)}")
    return replace(config_class(), **{**AR_PRESETS[name], **overrides})

"""The named sizes of the AdaLN trunk every built-in generator family is built on.

The families share the trunk, so one preset means the same depth and width, and so the same
parameter count up to the position tables, in every family (mars-bench-presets);
configs/<family>/<preset>.yaml carry the same numbers (a test keeps them in step). A family on
another trunk declares its own presets in its spec.
"""
from __future__ import annotations

from typing import Dict


def var_preset(depth: int) -> Dict[str, int]:
    """VAR's family: width = 64 * depth, one 64-wide head per layer (d16 = 1024 wide, 16 heads)."""
    return {"depth": depth, "width": 64 * depth, "heads": depth}


TRUNK_PRESETS: Dict[str, Dict[str, int]] = {
    "tiny": {"depth": 2, "width": 64, "heads": 2},  # unit tests
    "small": {"depth": 4, "width": 256, "heads": 4},  # learns on the synthetic set on a 2-core CPU in minutes
    "d12": var_preset(12),  # the CPU real-time target
    "d16": var_preset(16),
    "d20": var_preset(20),
    "d24": var_preset(24),
}

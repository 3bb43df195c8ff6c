"""Architecture settings of the next-scale AR (the trunk's; its spec is family.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mars_dist.models.generators.trunk_config import TrunkConfig


@dataclass
class NextScaleConfig(TrunkConfig):
    section: ClassVar[str] = "next_scale"

"""Architecture settings of the next-token AR (its spec is family.py; sizes: generators/presets.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mars_dist.models.generators.layout import TIME_MAJOR, check_order
from mars_dist.models.generators.trunk_config import TrunkConfig


@dataclass
class NextTokenConfig(TrunkConfig):
    section: ClassVar[str] = "next_token"

    # Raster order inside each scale of the pyramid: "time" (frame by frame) or "frequency" (band by
    # band); scales always go coarse to fine (mars_dist/models/generators/layout.py).
    order: str = TIME_MAJOR

    def validate(self) -> None:
        super().validate()
        check_order(self.order, f"{self.section}.order")

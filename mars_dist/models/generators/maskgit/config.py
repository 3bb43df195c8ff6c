"""Architecture and decoding defaults of MaskGIT (its spec is family.py; sizes: generators/presets.py).
The decoding defaults are stored with an export; the sampler's options (family.py) may override them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mars_dist.models.generators.trunk_config import TrunkConfig


@dataclass
class MaskGITConfig(TrunkConfig):
    section: ClassVar[str] = "maskgit"

    # Decoding defaults, stored with the export (the sampler's settings may override iterations).
    iterations: int = 16  # parallel decoding steps (SpecMaskGIT: <= 16)
    # Re-masking confidence = log-prob + gumbel_temperature * (1 - (t+1)/T) * Gumbel noise (MaskGIT's
    # "choice temperature", annealed to 0 at the last iteration).
    gumbel_temperature: float = 4.5

    def validate(self) -> None:
        super().validate()
        if self.iterations < 1:
            raise ValueError(f"{self.section}.iterations={self.iterations}: must be >= 1")
        if self.gumbel_temperature < 0:
            raise ValueError(f"{self.section}.gumbel_temperature={self.gumbel_temperature}: must be >= 0")

"""Settings of the Accelerate backend (engine.accelerate.*), checked when the run config loads."""
from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("ddp", "fsdp")


@dataclass
class AccelerateConfig:
    strategy: str = "ddp"  # ddp (replicated) | fsdp (FSDP2: parameters, gradients, optimizer state sharded)

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"engine.accelerate.strategy={self.strategy!r}: expected one of {', '.join(STRATEGIES)}")

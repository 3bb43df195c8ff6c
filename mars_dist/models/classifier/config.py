"""Architecture settings of the note classifier (pitch + instrument family heads on one CNN trunk).

The classifier task (mars_dist/tasks/classifier.py) adds what training needs on top."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List


@dataclass
class ClassifierConfig:
    # Frames are averaged in groups of `time_pool` before the first convolution: pitch and family
    # live in the spectral envelope and its harmonics, which change slowly over a note.
    time_pool: int = 4
    # Output channels of the strided conv stages; each stage halves frequency and time.
    channels: List[int] = field(default_factory=lambda: [16, 32, 64, 64])
    embedding_dim: int = 128  # penultimate features: the default FAD embedding
    dropout: float = 0.1
    norm_groups: int = 8  # GroupNorm (batch-independent: the same outputs at any batch or world size)

    def validate(self) -> None:
        if self.time_pool < 1 or self.embedding_dim < 1 or not self.channels:
            raise ValueError(f"classifier.time_pool={self.time_pool}, embedding_dim={self.embedding_dim}, "
                             f"channels={self.channels}: need time_pool, embedding_dim >= 1 and at least one stage")
        bad = [c for c in self.channels if c < 1 or c % min(self.norm_groups, c)]
        if bad:
            raise ValueError(f"classifier.channels={self.channels}: each must be >= 1 and divisible by "
                             f"min(norm_groups={self.norm_groups}, channels)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"classifier.dropout={self.dropout}: expected a probability in [0, 1)")

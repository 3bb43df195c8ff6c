"""What each rank evaluates: the work items (fixed global batches of one set) and their randomness.

Batches are cut from each set in global note order with a size that does not depend on the world
size, and rank r takes items r, r + W, r + 2W, ... of the one list of all items (no note twice, no
padding). A generated batch draws from a torch.Generator seeded by (seed, batch index) alone.
Together this makes every note's computation, and so every gathered feature, the same whatever the
number of processes: the metrics come out bitwise equal with 1, 2 or 3 ranks (tested).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
import torch

from mars_dist.generation.notes import LabelSet
from mars_dist.labels import CONDITION_CLASSES

REFERENCE = "reference"  # real notes of --reference (and, with a tokenizer, their reconstructions)
RECONSTRUCTION = "reconstruction"
FLOOR = "floor"  # real notes of another set, evaluated as if generated


@dataclass(frozen=True)
class WorkItem:
    set: str    # REFERENCE, FLOOR or a generator's name
    batch: int  # index of the batch within its set
    start: int  # global note indices [start, stop) of that set
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_items(set_sizes: Dict[str, int], batch: int) -> List[WorkItem]:
    """All work items: each set cut into consecutive batches of `batch` notes (the last may be shorter)."""
    if batch < 1:
        raise ValueError(f"batch={batch}: must be >= 1")
    return [WorkItem(name, b, start, min(start + batch, n))
            for name, n in set_sizes.items() for b, start in enumerate(range(0, n, batch))]


def rank_items(items: Sequence, rank: int, world_size: int) -> List:
    """Rank `rank`'s strided share of the items (or of their indices)."""
    return list(items[rank::world_size])


def batch_seed(seed: int, batch: int) -> int:
    """The seed of generated batch `batch`: independent streams per batch (numpy SeedSequence)."""
    return int(np.random.SeedSequence([seed, batch]).generate_state(1)[0])


def batch_generator(seed: int, batch: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device).manual_seed(batch_seed(seed, batch))


def generation_sources(start: int, stop: int, n_reference: int) -> List[int]:
    """Generated note j takes the labels of reference note j mod N: the reference set's label sets in
    its order, cycling when more notes are generated than there are reference notes."""
    return [j % n_reference for j in range(start, stop)]


def label_sets(labels: Dict[str, torch.Tensor]) -> List[LabelSet]:
    """The condition labels (pitch, instrument family and source, velocity) of notes, one set per note."""
    n = len(next(iter(labels.values())))
    return [{name: int(labels[name][i]) for name in CONDITION_CLASSES} for i in range(n)]

"""The sample order of a stream, as a pure function of (seed, epoch, position), and its cursor.

An epoch order maps each position of epoch e to a sample and to a partition: `GlobalOrder` is one
uniform permutation per epoch (one partition), `WindowedOrder` (mars_dist.data.windowed_order)
interleaves shard-local partitions so that readers fetch whole shards. Global step s of an epoch
consumes positions [s*G, (s+1)*G) (G = global batch); the final N mod G positions of each epoch
are dropped so that every rank gets the same number of steps. Within a global step the G
positions are ordered by partition (stably) and cut into world_size slices of
`micro_batch * grad_accum`: rank r takes slice r, in position order, cut into `grad_accum`
micro-batches. So contiguous ranks (one node) read contiguous partitions, and which rank sees a
sample depends on the world size, but the SET of samples of every global step does not: a cursor
(epoch, position) resumes exactly on any world size.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from mars_dist.data.windowed_order import WindowedOrder
from mars_dist.errors import UserValueError

CURSOR_FORMAT = "mars_dist.cursor/1"
ORDER_KINDS = ("windowed", "global")


@dataclass
class OrderConfig:
    """How a stream orders samples (docs/data.md, "Order"); fixed for a run: the cursor records it."""

    kind: str = "windowed"  # windowed: shard-local, whole-shard reads | global: one permutation, a read per sample
    partitions: int = 0  # windowed: canonical partitions P (0 = min(64, shards) rounded down to a power of 2);
    # choose P dividing data.batch_size and >= the most nodes the run will use (docs/data.md, "Order")
    shuffle_window: int = 2  # windowed: shards' worth of samples per in-partition shuffle block


class EpochOrder(Protocol):
    num_samples: int

    def describe(self) -> str:
        """What fixes the order besides seed and dataset (stored in the cursor)."""

    def epoch(self, epoch: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(sample_N, partition_N) of every position of `epoch`; partition_N None means one partition."""


def epoch_permutation(seed: int, epoch: int, num_samples: int) -> np.ndarray:
    """The visiting order of epoch `epoch` under the global order: a permutation of range(num_samples), int64."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
    return rng.permutation(num_samples)


class GlobalOrder:
    """A uniform permutation of the whole dataset per epoch: any sample may follow any other."""

    def __init__(self, seed: int, num_samples: int):
        self.seed, self.num_samples = seed, num_samples

    def describe(self) -> str:
        return "global"

    def epoch(self, epoch: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        return epoch_permutation(self.seed, epoch, self.num_samples), None


def build_order(cfg: OrderConfig, seed: int, shard_sizes: Sequence[int]) -> EpochOrder:
    """The epoch order `cfg` names, over shards of these sample counts (manifest order)."""
    if cfg.kind == "global":
        return GlobalOrder(seed, int(sum(shard_sizes)))
    if cfg.kind != "windowed":
        raise ValueError(f"data.order.kind={cfg.kind!r}: expected one of {', '.join(ORDER_KINDS)}")
    if cfg.partitions < 0 or cfg.shuffle_window < 1:
        raise ValueError(f"data.order.partitions={cfg.partitions}, data.order.shuffle_window={cfg.shuffle_window}: "
                         "expected partitions >= 1 (or 0 for the default) and shuffle_window >= 1")
    num_samples = int(sum(shard_sizes))
    mean_shard = -(-num_samples // max(1, len(shard_sizes)))
    return WindowedOrder(shard_sizes, seed, cfg.partitions or default_partitions(len(shard_sizes)),
                         block=cfg.shuffle_window * mean_shard)


def default_partitions(num_shards: int) -> int:
    """min(64, shards) rounded down to a power of two: divides any power-of-two global batch >= it,
    and is a pure function of the data set, so a cursor's order stays valid on any world size."""
    return 1 << (max(1, min(64, num_shards)).bit_length() - 1)


def dataset_fingerprint(shards: Sequence[Dict[str, Any]]) -> str:
    """Identifies the dataset a cursor belongs to: shard names, sizes and checksums, in order."""
    identity = [[s["name"], int(s["num_samples"]), s["sha256"]] for s in shards]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


class CursorError(UserValueError):
    """A saved cursor does not belong to this stream (other dataset, seed or order) or is malformed: a
    user's mistake (a checkpoint resumed on other shards or settings), reported as one line."""


@dataclass(frozen=True)
class Cursor:
    """Position of a stream: `position` samples of epoch `epoch`'s order have been consumed.

    Independent of world size, micro-batch and accumulation; `seed`, `dataset` and `order` pin
    the order it refers to, so a cursor can't silently be applied to a different stream. Cursors
    written before `order` existed lack it and mean the global order, the only one there was.
    """

    seed: int
    dataset: str
    num_samples: int
    epoch: int = 0
    position: int = 0
    order: str = "global"

    def to_dict(self) -> Dict[str, Any]:
        return {"format": CURSOR_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Cursor":
        if not isinstance(d, dict) or d.get("format") != CURSOR_FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise CursorError(f"stream cursor: format {found!r}, expected {CURSOR_FORMAT!r}")
        d = {"order": "global", **d}
        fields = {"seed": int, "dataset": str, "num_samples": int, "epoch": int, "position": int, "order": str}
        for name, kind in fields.items():
            if not isinstance(d.get(name), kind) or isinstance(d.get(name), bool):
                raise CursorError(f"stream cursor: {name}={d.get(name)!r}, expected {kind.__name__}")
        cursor = cls(**{name: d[name] for name in fields})
        if cursor.epoch < 0 or not 0 <= cursor.position <= cursor.num_samples:
            raise CursorError(f"stream cursor: epoch={cursor.epoch}, position={cursor.position} out of range "
                              f"for {cursor.num_samples} samples")
        return cursor

    def check_matches(self, seed: int, dataset: str, num_samples: int, order: str = "global") -> None:
        """Raise unless this cursor was saved for the same dataset, seed and order."""
        if (self.dataset, self.num_samples) != (dataset, num_samples):
            raise CursorError(f"stream cursor was saved for dataset {self.dataset} ({self.num_samples} samples), "
                              f"but the shards are dataset {dataset} ({num_samples} samples): "
                              "resuming on other shards would repeat and skip samples")
        if self.seed != seed:
            raise CursorError(f"stream cursor was saved with data seed {self.seed}, the stream has seed {seed}: "
                              "resuming with another seed would repeat and skip samples")
        if self.order != order:
            raise CursorError(f"stream cursor was saved with order {self.order!r}, the stream has order {order!r}: "
                              "resuming in another order would repeat and skip samples; set data.order.* to "
                              "what the cursor names")

    def normalized(self, global_batch: int) -> "Cursor":
        """The same position, moved to the next epoch's start when less than a global batch is left."""
        if self.position + global_batch > self.num_samples:
            return replace(self, epoch=self.epoch + 1, position=0)
        return self

    def after_step(self, global_batch: int) -> "Cursor":
        """The cursor once one global batch from here has been consumed."""
        return replace(self, position=self.position + global_batch).normalized(global_batch)


def global_steps(start: Cursor, global_batch: int) -> Iterator[Cursor]:
    """The cursor at the start of every global step from `start` on, forever."""
    cursor = start.normalized(global_batch)
    while True:
        yield cursor
        cursor = cursor.after_step(global_batch)


def rank_positions(partition_N: Optional[np.ndarray], first: int, global_batch: int, rank: int,
                   per_rank: int) -> np.ndarray:
    """Positions [first, first+G) of one global step that are rank `rank`'s, ascending (see module doc)."""
    positions = np.arange(first, first + global_batch)
    if partition_N is not None:
        positions = positions[np.argsort(partition_N[first:first + global_batch], kind="stable")]
        return np.sort(positions[rank * per_rank:(rank + 1) * per_rank])
    return positions[rank * per_rank:(rank + 1) * per_rank]


def rank_steps(start: Cursor, global_batch: int, rank: int, per_rank: int,
               order: EpochOrder) -> Iterator[Tuple[Cursor, np.ndarray]]:
    """(cursor at the step's start, this rank's `per_rank` sample indices) for every global step, forever."""
    epoch, sample_N, partition_N = -1, np.empty(0, dtype=np.int64), None
    for step in global_steps(start, global_batch):
        if step.epoch != epoch:
            epoch = step.epoch
            sample_N, partition_N = order.epoch(epoch)
        yield step, sample_N[rank_positions(partition_N, step.position, global_batch, rank, per_rank)]


def rank_micro_batches(start: Cursor, global_batch: int, rank: int, micro_batch: int, grad_accum: int,
                       order: Optional[EpochOrder] = None) -> Iterator[List[int]]:
    """Sample indices of this rank's micro-batches, step after step, forever (default: the global order)."""
    order = order or GlobalOrder(start.seed, start.num_samples)
    for _, samples in rank_steps(start, global_batch, rank, micro_batch * grad_accum, order):
        for a in range(grad_accum):
            yield samples[a * micro_batch:(a + 1) * micro_batch].tolist()

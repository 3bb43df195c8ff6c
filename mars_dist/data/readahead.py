"""Background read-ahead: fetch and pin the shards a rank will read, before its steps need them.

The order is known in advance (a pure function of seed, epoch and position), so a rank knows,
for each shard, the first and the last step that reads it (`ShardNeed`). The read-ahead thread
keeps every shard pinned in the node's cache from `lead` steps before its first need until its
last need has been handed to the trainer, and fetches shards in order of first need on a few
threads. In steady state the DataLoader workers therefore only ever read local files; a worker
that gets ahead of the read-ahead downloads the shard itself (the cache makes that the same,
single download).
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from mars_dist.data.order import Cursor
from mars_dist.data.shard_cache import Pin


@dataclass(frozen=True)
class ShardNeed:
    shard: int  # index into the manifest's shards
    first: int  # first step (counted from the stream's start, 0-based) that reads it
    last: int  # last such step of the same epoch


def shard_needs(steps: Iterable[Tuple[Cursor, np.ndarray]], shard_of_N: np.ndarray) -> Iterator[ShardNeed]:
    """ShardNeeds of a rank, epoch after epoch, each epoch's sorted by first step.

    `steps` is mars_dist.data.order.rank_steps(...): (cursor, samples) per step, forever, or a
    slice of it. A shard read again in a later epoch gets a new need there.
    """
    step_index = 0
    epoch: Optional[int] = None
    step_ids: List[np.ndarray] = []
    shard_ids: List[np.ndarray] = []
    for cursor, samples in steps:
        if epoch is not None and cursor.epoch != epoch:
            yield from _epoch_needs(np.concatenate(step_ids), np.concatenate(shard_ids))
            step_ids, shard_ids = [], []
        epoch = cursor.epoch
        shards = np.unique(shard_of_N[samples])
        step_ids.append(np.full(len(shards), step_index, dtype=np.int64))
        shard_ids.append(shards.astype(np.int64))
        step_index += 1
    if step_ids:  # a finite `steps` (a look at the next steps) ends inside an epoch
        yield from _epoch_needs(np.concatenate(step_ids), np.concatenate(shard_ids))


def _epoch_needs(step_ids: np.ndarray, shard_ids: np.ndarray) -> Iterator[ShardNeed]:
    shards, inverse = np.unique(shard_ids, return_inverse=True)
    first = np.full(len(shards), np.iinfo(np.int64).max, dtype=np.int64)
    last = np.full(len(shards), -1, dtype=np.int64)
    np.minimum.at(first, inverse, step_ids)
    np.maximum.at(last, inverse, step_ids)
    for i in np.argsort(first, kind="stable"):
        yield ShardNeed(int(shards[i]), int(first[i]), int(last[i]))


def peak_pinned_bytes(needs: Sequence[ShardNeed], shard_bytes: Sequence[int], lead: int) -> int:
    """Most bytes pinned at once when each need pins its shard over [first - lead, last].

    Pass the needs of all the ranks of a node (one shard pinned by two ranks counts once where
    their intervals overlap): that is the least cache a node needs for the read-ahead to work.
    """
    by_shard: Dict[int, List[Tuple[int, int]]] = {}
    for need in needs:
        by_shard.setdefault(need.shard, []).append((need.first - lead, need.last))
    events: List[Tuple[int, int]] = []
    for shard, intervals in by_shard.items():
        intervals.sort()
        start, end = intervals[0]
        for a, b in intervals[1:] + [(None, None)]:
            if a is not None and a <= end + 1:
                end = max(end, b)
                continue
            events += [(start, int(shard_bytes[shard])), (end + 1, -int(shard_bytes[shard]))]
            if a is not None:
                start, end = a, b
    peak = current = 0
    for _, delta in sorted(events):
        current += delta
        peak = max(peak, current)
    return peak


class ReadAhead:
    """The background thread of the module doc; `advance()` after each step handed to the trainer."""

    def __init__(self, needs: Iterator[ShardNeed], fetch_pinned: Callable[[int], Pin], lead: int, threads: int):
        self._needs, self._fetch_pinned, self._lead = needs, fetch_pinned, lead
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="shard-readahead")
        self._cond = threading.Condition()
        self._done = 0
        self._closed = False
        self._error: Optional[BaseException] = None
        self._pinned: Dict[int, Dict] = {}  # shard -> {"last", "future", "pin"}
        self._next: Optional[ShardNeed] = next(self._needs, None)
        self._thread = threading.Thread(target=self._run, name="shard-readahead", daemon=True)

    def start(self) -> "ReadAhead":
        self._thread.start()
        return self

    def advance(self) -> None:
        with self._cond:
            self._done += 1
            self._cond.notify_all()

    def check(self) -> None:
        """Raise the first error a fetch ended with (it names the shard and the cause)."""
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for entry in self._pinned.values():
            future: Optional[Future] = entry["future"]
            if future is not None and future.done() and not future.cancelled() and future.exception() is None:
                entry["pin"] = future.result()
            if entry["pin"] is not None:
                entry["pin"].release()
        self._pinned.clear()

    def _wake(self, _: Future) -> None:
        with self._cond:
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                self._collect_and_release()
                if self._next is None or self._next.first - self._lead > self._done:
                    self._cond.wait(timeout=1.0)
                    continue
                self._admit(self._next)
            # outside the lock: the next need may take computing a whole epoch's order, and the
            # trainer's advance() must not wait for that
            self._next = next(self._needs, None)

    def _admit(self, need: ShardNeed) -> None:
        entry = self._pinned.get(need.shard)
        if entry is not None:
            entry["last"] = max(entry["last"], need.last)
            return
        future = self._pool.submit(self._fetch_pinned, need.shard)
        self._pinned[need.shard] = {"last": need.last, "future": future, "pin": None}
        future.add_done_callback(self._wake)

    def _collect_and_release(self) -> None:
        for shard, entry in list(self._pinned.items()):
            future = entry["future"]
            if future is not None and future.done():
                entry["future"] = None
                if future.exception() is not None:
                    self._error = self._error or future.exception()
                else:
                    entry["pin"] = future.result()
            if entry["future"] is None and entry["last"] < self._done:
                if entry["pin"] is not None:
                    entry["pin"].release()
                del self._pinned[shard]

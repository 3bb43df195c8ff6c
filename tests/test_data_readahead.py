"""The read-ahead's schedule and its thread: which shards, fetched when, pinned how long.

Pure parts (a rank's ShardNeeds, a node's peak pinned bytes) on hand-made schedules; the thread
on a real ShardCache folder with real fetch threads, driven step by step like the stream does.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mars_dist.data.order import Cursor
from mars_dist.data.readahead import ReadAhead, ShardNeed, peak_pinned_bytes, shard_needs
from mars_dist.data.shard_cache import ShardCache

SHARD_OF_N = np.array([0, 0, 1, 1, 2, 2])  # six samples in three shards of two


def _steps(per_step, epochs):
    """(cursor, samples) per step: `per_step` sample lists for each epoch in turn."""
    return [(Cursor(0, "d", 6, epoch=e), np.array(samples)) for e in range(epochs) for samples in per_step]


def test_a_rank_needs_each_shard_from_its_first_to_its_last_step_of_each_epoch():
    needs = list(shard_needs(iter(_steps([[0, 2], [1, 4], [3, 5]], epochs=2)), SHARD_OF_N))
    assert needs == [ShardNeed(0, 0, 1), ShardNeed(1, 0, 2), ShardNeed(2, 1, 2),
                     ShardNeed(0, 3, 4), ShardNeed(1, 3, 5), ShardNeed(2, 4, 5)]


def test_a_nodes_peak_counts_a_shard_pinned_by_two_ranks_once_where_they_overlap():
    shard_bytes = [10, 100, 50]
    rank0 = [ShardNeed(0, 0, 5), ShardNeed(1, 4, 6)]
    rank1 = [ShardNeed(0, 2, 6), ShardNeed(2, 10, 12)]
    assert peak_pinned_bytes(rank0 + rank1, shard_bytes, lead=0) == 110  # shard 0 over [0, 6] once, 1 over [4, 6]
    assert peak_pinned_bytes(rank0 + rank1, shard_bytes, lead=6) == 160  # shard 2 now pinned from step 4


def _cache_with_shards(tmp_path, count):
    shards = [{"name": f"shard-{i:06d}.tar", "bytes": 16, "sha256": f"{i:02d}" * 32} for i in range(count)]
    return ShardCache(str(tmp_path / "cache"), 1 << 20), shards


def test_shards_are_fetched_in_order_of_need_a_lead_ahead_and_unpinned_after_their_last_step(tmp_path):
    cache, shards = _cache_with_shards(tmp_path, 4)
    fetched, lock = [], threading.Lock()

    def fetch_pinned(shard_id):
        def fill(dest):
            with lock:
                fetched.append(shard_id)
            with open(dest, "wb") as f:
                f.write(bytes(16))
        return cache.ensure(shards[shard_id], fill, pin=True)

    needs = [ShardNeed(2, 0, 1), ShardNeed(0, 1, 4), ShardNeed(3, 5, 5), ShardNeed(1, 8, 9)]
    readahead = ReadAhead(iter(needs), fetch_pinned, lead=2, threads=1).start()
    try:
        def settle():
            time.sleep(0.3)
            return list(fetched), {i for i in range(4) if cache.is_pinned(shards[i])}

        assert settle()[0] == [2, 0], "at step 0 the shards first needed by step 2 are fetched, in need order"
        for _ in range(3):
            readahead.advance()
        got, pinned = settle()
        assert got == [2, 0, 3] and pinned == {0, 3}, "after step 2: 2 is done with, 0 (until 4) and 3 pinned"
        for _ in range(3):
            readahead.advance()
        got, pinned = settle()
        assert got == [2, 0, 3, 1] and pinned == {1}, "after step 5, shard 1 (first needed at 8) is 2 steps out"
    finally:
        readahead.close()
    assert not any(cache.is_pinned(s) for s in shards), "close() releases every pin"


def test_a_failed_fetch_is_raised_to_the_trainer_by_check(tmp_path):
    def fetch_pinned(shard_id):
        raise OSError(f"s3://bucket/shard-{shard_id:06d}.tar: failed 8 times, giving up")

    readahead = ReadAhead(iter([ShardNeed(7, 0, 0)]), fetch_pinned, lead=0, threads=1).start()
    try:
        deadline = time.monotonic() + 10
        with pytest.raises(OSError, match=r"shard-000007\.tar: failed 8 times"):
            while time.monotonic() < deadline:
                readahead.check()
                time.sleep(0.05)
    finally:
        readahead.close()

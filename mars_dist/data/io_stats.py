"""Counters of what a rank's data path did, shared with its DataLoader workers through shared memory.

Workers are separate processes, so plain attributes would count only the main process's reads.
The benchmark and the tests read these to report requests, bytes fetched and cache hit rate.
"""
from __future__ import annotations

import multiprocessing
from typing import Dict

FIELDS = (
    "samples",            # samples read (by any process of the rank)
    "cache_hits",         # samples read from a shard already in the node's cache
    "cache_misses",       # samples that had to wait for their shard's download
    "downloads",          # whole shards this rank's processes downloaded into the cache
    "downloaded_bytes",
    "ranged_reads",       # per-sample byte-range requests (the global order on remote storage)
    "metadata_reads",     # manifest and index sidecars
    "retries",            # failed tries that were retried (throttling, resets, timeouts, bad checksums)
    "request_timeouts",   # of those, requests cut off by data.retry.request_timeout_s (no progress at all)
)


class IOCounters:
    """Process-shared int64 counters; create before the DataLoader forks its workers."""

    def __init__(self) -> None:
        self._values = multiprocessing.Array("q", len(FIELDS))

    def add(self, field: str, amount: int = 1, **more: int) -> None:
        """Add to one field, or to several at once (a snapshot sees all of them or none)."""
        with self._values.get_lock():
            self._values[FIELDS.index(field)] += amount
            for name, value in more.items():
                self._values[FIELDS.index(name)] += value

    def snapshot(self) -> Dict[str, int]:
        with self._values.get_lock():
            return dict(zip(FIELDS, self._values[:]))

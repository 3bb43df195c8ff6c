"""Where a sample's bytes come from: a local shard folder, ranged GETs, or the node's shard cache.

A source answers `read(shard_id, start, end)` with bytes [start, end) of one shard tar (one
sample's members, by its index sidecar) and counts what it did. Sources are picklable and open
files / filesystems lazily, so they work in forked or spawned DataLoader workers.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from mars_dist.data import fs as storage
from mars_dist.data.io_stats import IOCounters
from mars_dist.data.remote import RemoteShardSet
from mars_dist.data.retry import RetryConfig
from mars_dist.data.shard_cache import Pin, ShardCache

_EVICTED_RETRIES = 3  # an unpinned shard evicted between download and read is fetched again, a few times


class _Counting:
    counters: Optional[IOCounters] = None

    def _count(self, field: str, amount: int = 1, **more: int) -> None:
        if self.counters is not None:
            self.counters.add(field, amount, **more)


def _read_file_range(path: str, start: int, end: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)


class LocalRanges(_Counting):
    """Shards in a local folder: a seek and a read each. The folder is its own cache."""

    def __init__(self, folder: str, shards: Sequence[Mapping[str, Any]], counters: Optional[IOCounters] = None):
        self.folder, self.names, self.counters = folder, [s["name"] for s in shards], counters

    def where(self, shard_id: int) -> str:
        return os.path.join(self.folder, self.names[shard_id])

    def read(self, shard_id: int, start: int, end: int) -> bytes:
        self._count("samples")
        return _read_file_range(self.where(shard_id), start, end)


class RemoteRanges(_Counting):
    """One ranged GET per sample (the global order's random access on remote storage), retried."""

    def __init__(self, remote: RemoteShardSet, shards: Sequence[Mapping[str, Any]]):
        self.remote, self.names, self.counters = remote, [s["name"] for s in shards], remote.counters

    def where(self, shard_id: int) -> str:
        return self.remote.where(self.names[shard_id])

    def read(self, shard_id: int, start: int, end: int) -> bytes:
        self._count("samples")
        return self.remote.read_range(self.names[shard_id], start, end)


class CachedShards(_Counting):
    """Whole shards, downloaded once per node into a ShardCache, then read locally.

    The read-ahead (mars_dist.data.readahead) normally has a shard in the cache and pinned before
    any worker reads it; a read that finds it missing downloads it (or waits for the process that
    is downloading it) and counts a cache miss.
    """

    def __init__(self, cache: ShardCache, remote: RemoteShardSet, shards: Sequence[Mapping[str, Any]]):
        self.cache, self.remote, self.counters = cache, remote, remote.counters
        self.shards: List[Dict[str, Any]] = [dict(s) for s in shards]

    def where(self, shard_id: int) -> str:
        return self.remote.where(self.shards[shard_id]["name"])

    def fetch(self, shard_id: int, pin: bool = False) -> Optional[Pin]:
        """Make the shard present in the cache (one download per node), pinned if asked."""
        shard = self.shards[shard_id]
        return self.cache.ensure(
            shard, lambda dest: self.remote.download(shard["name"], dest, int(shard["bytes"]), shard["sha256"]),
            pin=pin)

    def read(self, shard_id: int, start: int, end: int) -> bytes:
        shard = self.shards[shard_id]
        path = self.cache.lookup(shard)
        if path is not None:
            try:
                data = _read_file_range(path, start, end)
                self._count("samples", cache_hits=1)
                return data
            except FileNotFoundError:
                pass  # evicted since the lookup
        for _ in range(_EVICTED_RETRIES):
            self.fetch(shard_id)
            try:
                data = _read_file_range(self.cache.path(shard), start, end)
                self._count("samples", cache_misses=1)
                return data
            except FileNotFoundError:
                continue
        raise OSError(f"{self.where(shard_id)}: evicted from the shard cache {self.cache.folder} "
                      f"{_EVICTED_RETRIES} times between download and read: the cache limit is too small "
                      "for the readers of this node (raise data.cache.limit_gb)")


def direct_source(url: str, storage_options: Optional[Mapping[str, Any]], shards: Sequence[Mapping[str, Any]],
                  remote: Optional[RemoteShardSet] = None):
    """Byte ranges straight from where the shards are: a local folder, or ranged GETs on s3://."""
    if not storage.is_s3(url):
        return LocalRanges(url, shards, remote.counters if remote is not None else None)
    return RemoteRanges(remote or RemoteShardSet(url, storage_options, RetryConfig()), shards)

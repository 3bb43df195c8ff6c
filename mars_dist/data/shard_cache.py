"""A node's local cache of whole shards: one download per shard, atomic, bounded in bytes, LRU.

Every rank and DataLoader worker of a node shares one folder (node-local disk; never a folder
shared between nodes). Entries are content-addressed by the manifest's sha256, so runs and
datasets can share a folder without confusing shards. Coordination between processes uses only
the file system:

- `locks/<entry>.lock` is flock()ed EXCLUSIVELY while its shard is downloaded or evicted, and
  SHARED while a reader pins it (the read-ahead pins every shard its rank needs in the current
  window). So a shard is downloaded once per node however many processes ask for it at once
  (the others wait for the lock, then find it present), and eviction, which only ever tries
  the lock without waiting, can never remove a pinned shard.
- A download goes to `<entry>.part-<pid>` and is renamed into place only once its size and
  sha256 match the manifest: readers see a whole, verified shard or none. A process killed
  mid-download leaves a part file that the next downloader of that shard removes.
- When a new shard would take the folder past `limit_bytes`, unpinned shards are evicted
  least recently used first (mtime, touched on use). Readers that still have an evicted file
  open keep reading it (POSIX unlink semantics).

flock() locks belong to an open file description, which fork() would share with DataLoader
workers (an inherited lock would outlive its owner's release); a fork handler closes this
module's lock descriptors in the child, where they are never used.
"""
from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Set

log = logging.getLogger(__name__)
TAR_SUFFIX = ".tar"
GB = 1 << 30
_RETRY_LOCK_S = 0.01


@dataclass
class CacheConfig:
    dir: str = ""  # node-local folder for whole shards of remote data sets ("" = <tmp>/mars_dist-shard-cache)
    limit_gb: float = 64.0  # bound of the folder's size; the pinned working set must fit (checked at start)
    readahead_steps: int = 32  # the read-ahead fetches and pins shards this many steps before they are needed
    fetch_threads: int = 4  # concurrent shard downloads per rank

    def folder(self) -> str:
        return self.dir or os.path.join(tempfile.gettempdir(), "mars_dist-shard-cache")

    def limit_bytes(self) -> int:
        return int(self.limit_gb * GB)

    def check(self) -> None:
        if self.limit_gb <= 0 or self.readahead_steps < 0 or self.fetch_threads < 1:
            raise ValueError(f"data.cache.limit_gb={self.limit_gb}, readahead_steps={self.readahead_steps}, "
                             f"fetch_threads={self.fetch_threads}: expected limit_gb > 0, readahead_steps >= 0, "
                             "fetch_threads >= 1")


_open_lock_fds: Set[int] = set()
_open_lock_fds_guard = threading.Lock()


def _close_inherited_lock_fds() -> None:
    global _open_lock_fds_guard
    for fd in list(_open_lock_fds):
        try:
            os.close(fd)
        except OSError:
            pass
    _open_lock_fds.clear()
    _open_lock_fds_guard = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_close_inherited_lock_fds)


class _Lock:
    """One open lock file; flock modes on it (see module doc)."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        with _open_lock_fds_guard:
            _open_lock_fds.add(self.fd)

    def acquire(self, exclusive: bool, wait: bool = True) -> bool:
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(self.fd, mode)
            return True
        except BlockingIOError:
            return False

    def close(self) -> None:
        if self.fd < 0:
            return
        with _open_lock_fds_guard:
            _open_lock_fds.discard(self.fd)
        os.close(self.fd)  # releases the flock
        self.fd = -1


class Pin:
    """A shared lock that keeps one cached shard from being evicted; `release()` when done with it."""

    def __init__(self, lock: _Lock, path: str):
        self._lock, self.path = lock, path

    def release(self) -> None:
        if self._lock is not None:
            _touch(self.path)
            self._lock.close()
            self._lock = None


def _touch(path: str) -> None:
    try:
        os.utime(path)
    except FileNotFoundError:
        pass


def entry_name(shard: Mapping[str, Any]) -> str:
    """Cache file stem of a manifest shard entry: its name plus its content hash."""
    return f"{shard['name'].rsplit('.', 1)[0]}-{shard['sha256'][:16]}"


class ShardCache:
    """A node's shard folder (module doc). `fill(dest)` callables write a verified shard to `dest`."""

    def __init__(self, folder: str, limit_bytes: int):
        self.folder, self.limit_bytes = folder, limit_bytes
        os.makedirs(os.path.join(folder, "locks"), exist_ok=True)
        self._warned_over_limit = False

    def path(self, shard: Mapping[str, Any]) -> str:
        return os.path.join(self.folder, entry_name(shard) + TAR_SUFFIX)

    def _lock_path(self, stem: str) -> str:
        return os.path.join(self.folder, "locks", stem + ".lock")

    def lookup(self, shard: Mapping[str, Any]) -> Optional[str]:
        """The cached file of `shard` if it is there now (it may be evicted later unless pinned)."""
        path = self.path(shard)
        return path if os.path.exists(path) else None

    def ensure(self, shard: Mapping[str, Any], fill: Callable[[str], None], pin: bool = False) -> Optional[Pin]:
        """Make `shard` present, downloading it unless it is there (or another process is fetching it).

        Returns a Pin when `pin`, else None. Raises what `fill` raised (nothing enters the cache then).
        Waiting for another process's download takes a shared lock, never an exclusive one, so a
        waiter is not blocked by the pins that the downloader (or anyone) takes afterwards.
        """
        stem, path = entry_name(shard), self.path(shard)
        while True:
            if os.path.exists(path) and not pin:
                _touch(path)
                return None
            lock = _Lock(self._lock_path(stem))
            try:
                if not os.path.exists(path) and lock.acquire(exclusive=True, wait=False):
                    if not os.path.exists(path):
                        self._download(shard, stem, path, fill)
                    if not pin:
                        lock.close()
                        return None
                # wait out a download or an eviction in progress (or downgrade our own exclusive lock,
                # which is not atomic: an eviction may slip in between, hence the check below)
                lock.acquire(exclusive=False)
                if os.path.exists(path):
                    if pin:
                        _touch(path)
                        return Pin(lock, path)
                    lock.close()
                    return None
                lock.close()
                time.sleep(_RETRY_LOCK_S)  # the file went away under us: look again
            except BaseException:
                lock.close()
                raise

    def is_pinned(self, shard: Mapping[str, Any]) -> bool:
        """Whether some process holds `shard` (pinned, or downloading or evicting it) right now."""
        lock = _Lock(self._lock_path(entry_name(shard)))
        try:
            return not lock.acquire(exclusive=True, wait=False)
        finally:
            lock.close()

    def _download(self, shard: Mapping[str, Any], stem: str, path: str, fill: Callable[[str], None]) -> None:
        for name in os.listdir(self.folder):
            if name.startswith(stem + TAR_SUFFIX + ".part-"):  # a killed downloader's leftover
                os.remove(os.path.join(self.folder, name))
        self.make_room(int(shard["bytes"]), keep=path)
        part = f"{path}.part-{os.getpid()}"
        try:
            fill(part)
            os.replace(part, path)
        finally:
            if os.path.exists(part):
                os.remove(part)

    def entries(self) -> List[Dict[str, Any]]:
        """Cached shards: {"path", "bytes", "used"} (used = mtime), least recently used first."""
        found = []
        with os.scandir(self.folder) as it:
            for item in it:
                if item.name.endswith(TAR_SUFFIX):
                    try:
                        st = item.stat()
                    except FileNotFoundError:
                        continue
                    found.append({"path": item.path, "bytes": st.st_size, "used": st.st_mtime})
        return sorted(found, key=lambda e: e["used"])

    def size_bytes(self) -> int:
        return sum(e["bytes"] for e in self.entries())

    def make_room(self, incoming_bytes: int, keep: str = "") -> None:
        """Evict unpinned shards, least recently used first, until `incoming_bytes` more fit the limit."""
        entries = self.entries()
        total = sum(e["bytes"] for e in entries)
        for entry in entries:
            if total + incoming_bytes <= self.limit_bytes:
                return
            if entry["path"] == keep:
                continue
            stem = os.path.basename(entry["path"])[: -len(TAR_SUFFIX)]
            lock = _Lock(self._lock_path(stem))
            try:
                if lock.acquire(exclusive=True, wait=False):  # pinned or being fetched: skip it
                    try:
                        os.remove(entry["path"])
                        total -= entry["bytes"]
                    except FileNotFoundError:
                        pass
            finally:
                lock.close()
        if total + incoming_bytes > self.limit_bytes and not self._warned_over_limit:
            self._warned_over_limit = True
            log.warning("shard cache %s: %d bytes are pinned by readers, over the limit of %d bytes: raise "
                        "data.cache.limit_gb, or lower data.order.partitions, data.order.shuffle_window or "
                        "data.cache.readahead_steps", self.folder, total + incoming_bytes, self.limit_bytes)


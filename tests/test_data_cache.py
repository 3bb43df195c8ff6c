"""The node-local shard cache with real processes and threads racing on a real folder.

One download per shard however many processes ask at once; readers see whole files or none;
a killed downloader leaves nothing behind that a reader could take for a shard; pinned shards
are never evicted and the others go least recently used first; a forked worker does not keep
its parent's pins alive. The "remote" here is a local folder (the S3 side is in test_s3_retries.py).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from mars_dist.data.shard_cache import ShardCache, entry_name

SHARD_BYTES = 64 << 10


def _make_shards(folder: Path, count: int):
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for i in range(count):
        data = bytes([i]) * SHARD_BYTES
        (folder / f"shard-{i:06d}.tar").write_bytes(data)
        shards.append({"name": f"shard-{i:06d}.tar", "bytes": SHARD_BYTES, "sha256": f"{i:02d}" * 32})
    return shards


def _slow_copy(src: Path, log: Path = None, delay_s: float = 0.05):
    """A fill that takes a while (so that others arrive meanwhile) and records who downloaded what."""
    def fill(dest: str) -> None:
        data = src.read_bytes()
        with open(dest, "wb") as f:
            for i in range(0, len(data), 8192):
                f.write(data[i:i + 8192])
                f.flush()
                time.sleep(delay_s / 8)
        if log is not None:
            with open(log, "a") as f:
                f.write(f"{src.name} {os.getpid()}\n")
    return fill


def _race(cache_dir: str, remote: str, shards, order, pin: bool, log: str, out: str) -> None:
    cache = ShardCache(cache_dir, 1 << 30)
    pins = []
    for i in order:
        pin_ = cache.ensure(shards[i], _slow_copy(Path(remote) / shards[i]["name"], Path(log)), pin=pin)
        pins.append(pin_)
        with open(cache.path(shards[i]), "rb") as f:
            assert f.read() == bytes([i]) * SHARD_BYTES, "a reader saw a partial or wrong shard"
    Path(out).write_text("ok")
    time.sleep(0.2)
    for p in pins:
        if p is not None:
            p.release()


def test_processes_racing_for_the_same_shards_download_each_exactly_once(tmp_path):
    shards = _make_shards(tmp_path / "remote", 3)
    log = tmp_path / "downloads.log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_race, args=(str(tmp_path / "cache"), str(tmp_path / "remote"), shards,
                                             order, pin, str(log), str(tmp_path / f"ok-{n}")))
             for n, (order, pin) in enumerate([([0, 1, 2], True), ([2, 1, 0], False), ([1, 0, 2], True),
                                               ([0, 2, 1], False)])]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert all((tmp_path / f"ok-{n}").read_text() == "ok" for n in range(4))
    downloaded = sorted(line.split()[0] for line in log.read_text().splitlines())
    assert downloaded == [s["name"] for s in shards], f"each shard must be fetched once per node: {downloaded}"
    assert sorted(os.listdir(tmp_path / "cache")) == sorted([entry_name(s) + ".tar" for s in shards] + ["locks"])


def test_waiting_for_a_download_is_not_blocked_by_the_downloaders_pin(tmp_path):
    """A reader that arrives during the read-ahead's download must not wait for the read-ahead's pin."""
    shards = _make_shards(tmp_path / "remote", 1)
    cache = ShardCache(str(tmp_path / "cache"), 1 << 30)
    started, pins = threading.Event(), []

    def fill_and_signal(dest):
        started.set()
        _slow_copy(tmp_path / "remote" / shards[0]["name"], delay_s=0.3)(dest)

    readahead = threading.Thread(target=lambda: pins.append(cache.ensure(shards[0], fill_and_signal, pin=True)))
    readahead.start()
    assert started.wait(10)
    reader = threading.Thread(target=cache.ensure, args=(shards[0], pytest.fail))
    reader.start()
    reader.join(timeout=10)
    readahead.join(timeout=10)
    assert not reader.is_alive(), "the reader is still waiting although the shard is in the cache"
    assert pins and pins[0] is not None
    pins[0].release()


def test_pinned_shards_survive_eviction_and_unpinned_ones_go_least_recently_used_first(tmp_path, caplog):
    shards = _make_shards(tmp_path / "remote", 5)
    cache = ShardCache(str(tmp_path / "cache"), int(2.5 * SHARD_BYTES))
    fill = [_slow_copy(tmp_path / "remote" / s["name"], delay_s=0) for s in shards]
    pinned = cache.ensure(shards[0], fill[0], pin=True)  # the oldest, but pinned
    cache.ensure(shards[1], fill[1])
    time.sleep(0.02)
    cache.ensure(shards[2], fill[2])  # the folder now holds 3 > 2.5 shards' worth: 1 goes, not the pinned 0
    present = [i for i in range(5) if cache.lookup(shards[i])]
    assert present == [0, 2]
    time.sleep(0.02)
    cache.ensure(shards[0], pytest.fail)  # a hit: 0 becomes the most recently used
    time.sleep(0.02)
    pinned.release()
    time.sleep(0.02)
    cache.ensure(shards[3], fill[3])
    assert [i for i in range(5) if cache.lookup(shards[i])] == [0, 3], "2 was the least recently used"
    assert cache.size_bytes() <= cache.limit_bytes
    pins = [cache.ensure(shards[i], fill[i], pin=True) for i in (0, 3)]
    with caplog.at_level(logging.WARNING, logger="mars_dist.data.shard_cache"):
        cache.ensure(shards[4], fill[4])
    assert [i for i in range(5) if cache.lookup(shards[i])] == [0, 3, 4]
    assert "pinned by readers, over the limit" in caplog.text and "data.cache.limit_gb" in caplog.text
    for p in pins:
        p.release()


def _download_and_hang(cache_dir: str, remote: str, shard) -> None:
    def fill(dest):
        with open(dest, "wb") as f:
            f.write(b"half a shard")
            f.flush()
            os.kill(os.getpid(), signal.SIGSTOP)  # the test SIGKILLs us here, mid-download

    ShardCache(cache_dir, 1 << 30).ensure(shard, fill)


def test_a_killed_download_leaves_no_shard_and_the_next_downloader_completes(tmp_path):
    shards = _make_shards(tmp_path / "remote", 1)
    cache_dir = tmp_path / "cache"
    proc = multiprocessing.get_context("spawn").Process(target=_download_and_hang,
                                                         args=(str(cache_dir), str(tmp_path / "remote"), shards[0]))
    proc.start()
    deadline = time.monotonic() + 60
    while not any(".part-" in n for n in (os.listdir(cache_dir) if cache_dir.exists() else [])):
        assert time.monotonic() < deadline and proc.is_alive(), "the downloader never started"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=10)
    cache = ShardCache(str(cache_dir), 1 << 30)
    assert cache.lookup(shards[0]) is None, "a partial download must never look like a shard"
    cache.ensure(shards[0], _slow_copy(tmp_path / "remote" / shards[0]["name"], delay_s=0))
    assert Path(cache.path(shards[0])).read_bytes() == bytes([0]) * SHARD_BYTES
    assert not [n for n in os.listdir(cache_dir) if ".part-" in n], "the killed download's part file is gone"


def test_a_failed_fill_adds_nothing_and_raises_its_error(tmp_path):
    shards = _make_shards(tmp_path / "remote", 1)
    cache = ShardCache(str(tmp_path / "cache"), 1 << 30)

    def broken(dest):
        Path(dest).write_bytes(b"partial")
        raise OSError("connection reset by peer")

    with pytest.raises(OSError, match="connection reset by peer"):
        cache.ensure(shards[0], broken)
    assert os.listdir(tmp_path / "cache") == ["locks"]


def test_a_forked_child_does_not_keep_its_parents_pin_alive(tmp_path):
    """flock() locks are shared with fork() children; the cache closes its lock files in the child."""
    shards = _make_shards(tmp_path / "remote", 2)
    cache = ShardCache(str(tmp_path / "cache"), int(1.5 * SHARD_BYTES))
    pin = cache.ensure(shards[0], _slow_copy(tmp_path / "remote" / shards[0]["name"], delay_s=0), pin=True)
    release_child_r, release_child_w = os.pipe()
    child_up_r, child_up_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a DataLoader worker: lives on while the parent moves on
        os.write(child_up_w, b"x")  # the fork handlers have run by now
        os.read(release_child_r, 1)
        os._exit(0)
    try:
        os.read(child_up_r, 1)
        pin.release()
        cache.ensure(shards[1], _slow_copy(tmp_path / "remote" / shards[1]["name"], delay_s=0))
        assert cache.lookup(shards[0]) is None, "shard 0 was released by its only owner and had to make room"
    finally:
        os.write(release_child_w, b"x")
        os.waitpid(pid, 0)

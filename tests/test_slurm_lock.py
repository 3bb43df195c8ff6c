"""The run-folder lock of slurm/*.sh and launch/sweep.py (launch/run_folder.py): one live owner at a
time, idempotent for its owner, stale locks taken over, exactly one winner among racing takers."""
from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from launch.run_folder import LOCK_FILE, Owner, RunLockedError, acquire, lock_holder, release
from tests.ar_exports import AR_TINY
from tests.fixtures.slurm import REPO


def process_owner(pid: int) -> Owner:
    return Owner("process", f"{socket.gethostname()}:{pid}")


def test_a_live_owner_keeps_the_folder_and_only_it_releases_it(tmp_path):
    me = Owner.current()
    acquire(tmp_path, me)
    acquire(tmp_path, me)  # a second rank, or the next start of a requeued job
    assert lock_holder(tmp_path) == me
    with subprocess.Popen(["sleep", "60"]) as other:
        try:
            with pytest.raises(RunLockedError) as refused:
                acquire(tmp_path, process_owner(other.pid))
            assert str(refused.value).startswith(f"run directory {tmp_path} is in use by process {os.getpid()} on ")
            assert not release(tmp_path, process_owner(other.pid)) and lock_holder(tmp_path) == me
        finally:
            other.kill()
    assert release(tmp_path, me) and not (tmp_path / LOCK_FILE).exists()


def ended_owner() -> Owner:
    with subprocess.Popen(["true"]) as ended:
        ended.wait()
    return process_owner(ended.pid)


def test_the_lock_of_an_ended_owner_is_taken_over(tmp_path):
    acquire(tmp_path, ended_owner())
    acquire(tmp_path, Owner.current())
    assert lock_holder(tmp_path) == Owner.current()


def test_an_unreadable_lock_is_refused_not_taken(tmp_path):
    (tmp_path / LOCK_FILE).write_text("{not json")
    with pytest.raises(RunLockedError, match="unreadable LOCK file"):
        acquire(tmp_path, Owner.current())


def _race(folder, start, hold, results):
    start.wait()
    try:
        acquire(Path(folder), process_owner(os.getpid()))
        results.put("won")
    except RunLockedError:
        results.put("refused")
    hold.wait()  # stay alive: a dead winner's lock would be stale and fair game


@pytest.mark.parametrize("stale", [False, True], ids=["fresh folder", "stale lock"])
def test_exactly_one_of_many_racing_takers_wins(tmp_path, stale):
    if stale:
        acquire(tmp_path, ended_owner())
    ctx = multiprocessing.get_context("fork")
    takers = 8
    start, hold, results = ctx.Barrier(takers), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), start, hold, results)) for _ in range(takers)]
    for p in procs:
        p.start()
    try:
        outcomes = sorted(results.get(timeout=60) for _ in procs)
        holder = lock_holder(tmp_path)
        assert outcomes == ["refused"] * (takers - 1) + ["won"], outcomes
        assert holder in {process_owner(p.pid) for p in procs}
    finally:
        hold.set()
        for p in procs:
            p.join(timeout=30)


def prepare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch.run_folder", "prepare", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_prepare_resolves_the_run_folder_records_the_config_and_clears_an_old_preemption(tmp_path):
    run_dir = tmp_path / "ar"
    run_dir.mkdir()
    (run_dir / "PREEMPTED").write_text("an earlier start's\n")
    out = prepare("--job", "41", "--config", str(AR_TINY), "--", f"run_dir={run_dir}", "train.max_steps=9")
    assert (out.returncode, out.stdout.strip()) == (0, str(run_dir)), out.stderr
    assert lock_holder(run_dir) == Owner("slurm", "41")
    assert "max_steps: 9" in (run_dir / "logs" / "slurm-41.config.yaml").read_text()
    assert not (run_dir / "PREEMPTED").exists(), "a crash of this start must not count as a preemption"


def test_prepare_names_a_missing_config_in_one_line(tmp_path):
    out = prepare("--job", "41", "--config", str(tmp_path / "nope.yaml"))
    assert (out.returncode, out.stderr) == (2, f"error: config file not found: {tmp_path / 'nope.yaml'}\n")

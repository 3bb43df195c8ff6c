"""Preemption under launchers, with real processes and real signals: what a scheduler sees.

- Every worker exits 75, also the one the launcher SIGTERMs while it is still shutting down (the
  toy task makes rank 1 take 3 s to exit after its last step, as a worker flushing logs would;
  for plain torchrun without restarts: tests/test_engine_failures.py).
- Plain torchrun reports a failure (exit 1) and, with --max-restarts, restarts the preempted group,
  which must then exit 75 at once instead of training on past the scheduler's deadline.
- `python -m mars_dist.torchrun` (torchrun's arguments) ends a preempted job with 75 and does not
  restart it, whether a worker or the launcher itself got the signal; a killed worker still restarts
  the group (tests/test_torchrun_dead_rank.py).
- A signal during start-up (imports, data set-up, checkpoint loading) exits 75 without a new
  checkpoint, the last committed one standing.
The toy task on the debug backend keeps each launch to a few seconds.
"""
from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest

from mars_dist.engine.checkpoint import committed_checkpoints
from mars_dist.engine.preemption import PREEMPTED_MARKER, REQUEUE_EXIT_CODE
from tests.fixtures.processes import (
    RESTART_SAFE_ENV,
    finish,
    handles_signal,
    launch_command,
    launcher_exit_statuses,
    start,
    torchrun_exit_codes,
    wait_for,
    worker_pids,
    write_config,
)
pytestmark = [pytest.mark.distributed, pytest.mark.slow]

LONG_RUN = ("train.max_steps=100000", "checkpoint.every_steps=20", "checkpoint.keep_last=2", "train.log_every=1")
SLOW_EXIT = {"TOY_TASK_SLOW_EXIT": "1:3"}  # rank 1 takes 3 s to exit (tests/toy_task.py)
PREEMPTED_STATUS = f"exit {REQUEUE_EXIT_CODE} (preempted)"


def _marker_checkpoint(run_dir: Path) -> str:
    return (run_dir / PREEMPTED_MARKER).read_text().splitlines()[0]


def _preempt_a_running_group(tmp_path, tiny_shards, launcher: str, *launcher_args: str, signal_launcher: bool = False):
    """Starts 2 workers under `launcher`, sends SIGUSR1 to worker 1 (or SIGTERM to the launcher) after
    the first checkpoint; returns (exit status, log text, run_dir, step of the newest checkpoint before)."""
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, tiny_shards, run_dir, *LONG_RUN)
    log = tmp_path / "launcher.log"
    proc = start(launch_command(launcher, 2, config, *launcher_args), log, **RESTART_SAFE_ENV, **SLOW_EXIT)
    wait_for(lambda: committed_checkpoints(run_dir), proc, log, "the first checkpoint")
    workers = worker_pids(proc, 2, log)
    before = committed_checkpoints(run_dir)[-1][0]
    if signal_launcher:
        proc.send_signal(signal.SIGTERM)
    else:
        os.kill(workers[1], signal.SIGUSR1)
    status = finish(proc, log)
    return status, log.read_text(), run_dir, before


def _assert_committed_at_the_preemption(run_dir: Path, before: int) -> int:
    newest_step, newest = committed_checkpoints(run_dir)[-1]
    assert newest_step > before, "the preemption checkpoint is newer than the last periodic one"
    assert _marker_checkpoint(run_dir) == str(newest)
    return newest_step


def test_plain_torchrun_restarting_a_preempted_group_does_not_train_on(tiny_shards, tmp_path):
    status, text, run_dir, before = _preempt_a_running_group(tmp_path, tiny_shards, "torchrun", "--max-restarts", "1")
    assert status == 1, "plain torchrun reports workers that exit 75 as failed (use python -m mars_dist.torchrun)"
    assert text.count("resumed from") == 1, "torchrun restarted the preempted group once"
    assert "torchrun restarted this group after it was preempted" in text, text[-3000:]
    newest_step = _assert_committed_at_the_preemption(run_dir, before)
    after_restart = text[text.index("resumed from"):]
    logged = [int(step) for step in re.findall(r"\bstep (\d+)(?:/\d+)? \|", after_restart)]  # console lines after it
    assert f"at step {newest_step} " in text and not logged, f"the restarted group trained on: steps {logged}"
    assert torchrun_exit_codes(text) == {0: REQUEUE_EXIT_CODE, 1: REQUEUE_EXIT_CODE}, text[-3000:]


@pytest.mark.parametrize("signal_launcher", [False, True], ids=["sigusr1-to-a-worker", "sigterm-to-the-launcher"])
def test_the_package_launcher_ends_a_preempted_job_with_75_and_no_restart(tiny_shards, tmp_path, signal_launcher):
    status, text, run_dir, before = _preempt_a_running_group(tmp_path, tiny_shards, "mars_dist.torchrun", "--max-restarts", "2",
                                                            signal_launcher=signal_launcher)
    assert status == REQUEUE_EXIT_CODE, text[-3000:]
    assert launcher_exit_statuses(text) == {0: PREEMPTED_STATUS, 1: PREEMPTED_STATUS}, text[-3000:]
    assert "restart worker group" not in text and "resumed from" not in text, "a preempted group must not be restarted"
    _assert_committed_at_the_preemption(run_dir, before)


def _signal_at_start_up(proc, pid: int, sig: int, log: Path) -> None:
    """Sends `sig` as soon as `pid` handles it, i.e. while it imports torch and builds the run."""
    wait_for(lambda: handles_signal(pid, sig), proc, log, f"a handler for signal {sig}", timeout_s=60)
    os.kill(pid, sig)


def test_a_signal_during_start_up_exits_75_without_writing_a_checkpoint(tiny_shards, tmp_path):
    """A plain process, then two workers under the package launcher (only rank 1 signalled: both agree).
    That a committed checkpoint stands is checked by the restart test above, which loads one first."""
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, tiny_shards, run_dir, "train.max_steps=4")
    log = tmp_path / "train.log"
    single = start([sys.executable, "-m", "mars_dist.train", "--config", config], log)
    _signal_at_start_up(single, single.pid, signal.SIGTERM, log)
    assert finish(single, log) == REQUEUE_EXIT_CODE, log.read_text()[-3000:]
    assert "preempted during start-up (signal 15)" in log.read_text()
    assert committed_checkpoints(run_dir) == [] and _marker_checkpoint(run_dir) == "", "nothing trained, nothing committed"

    launcher = start(launch_command("mars_dist.torchrun", 2, config), log)
    _signal_at_start_up(launcher, worker_pids(launcher, 2, log)[1], signal.SIGUSR1, log)
    assert finish(launcher, log) == REQUEUE_EXIT_CODE, log.read_text()[-3000:]
    text = log.read_text()
    assert launcher_exit_statuses(text) == {0: PREEMPTED_STATUS, 1: PREEMPTED_STATUS}, text[-3000:]
    assert "preempted during start-up (signal on another rank)" in text, text[-3000:]
    assert committed_checkpoints(run_dir) == [], "no checkpoint is written before the first step"

"""Failures with real processes and real signals: preemption (SIGUSR1 to one worker of a 2-process
torchrun run: both exit 75, also the one torchrun SIGTERMs while it shuts down; SIGTERM to a single
process), SIGKILL in the middle of a checkpoint write, and non-finite agreement across ranks. Each
test launches `mars_dist/train.py` the way users do; preemption under launchers in more detail:
test_preemption_launchers.py."""
from __future__ import annotations

import os
import signal
import sys

import pytest

from mars_dist.engine.checkpoint import committed_checkpoints, read_train_state, resolve_resume
from mars_dist.engine.preemption import REQUEUE_EXIT_CODE
from mars_dist.engine.trainer import PREEMPTED_MARKER
from tests.fixtures.processes import REPO, TRAIN_PY, finish, start, torchrun_exit_codes, wait_for, worker_pids, write_config

PAUSED_TRAIN_PY = str(REPO / "tests" / "checkpoint_pause.py")  # train.py with one checkpoint's commit delayed

LONG_RUN = ("train.max_steps=100000", "checkpoint.every_steps=20", "checkpoint.keep_last=2", "train.log_every=20")


def test_sigterm_preempts_a_single_process_run_which_then_resumes(tiny_shards, tmp_path):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, tiny_shards, run_dir, *LONG_RUN)
    log = tmp_path / "train.log"
    proc = start([sys.executable, TRAIN_PY, "--config", config], log)
    wait_for(lambda: committed_checkpoints(run_dir), proc, log, "the first checkpoint")
    proc.send_signal(signal.SIGTERM)
    assert finish(proc, log) == REQUEUE_EXIT_CODE, log.read_text()[-3000:]

    newest_step, newest = committed_checkpoints(run_dir)[-1]
    assert newest_step > 20, "the preemption checkpoint is the one of the step it stopped at"
    assert (run_dir / PREEMPTED_MARKER).read_text().splitlines()[0] == str(newest)
    assert "preempted (signal 15)" in log.read_text()

    resumed = start([sys.executable, "-m", "mars_dist.train", "--config", config, f"train.max_steps={newest_step + 2}"], log)
    assert finish(resumed, log) == 0, log.read_text()[-3000:]
    assert committed_checkpoints(run_dir)[-1][0] == newest_step + 2
    assert not (run_dir / PREEMPTED_MARKER).exists()


@pytest.mark.distributed
def test_sigusr1_to_one_of_two_torchrun_workers_stops_both_at_one_checkpoint(tiny_shards, tmp_path):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, tiny_shards, run_dir, *LONG_RUN)
    log = tmp_path / "torchrun.log"
    # Rank 1 alone sees a NaN loss at step 3: both ranks must skip that step together. Rank 0 takes
    # 3 s to exit, so torchrun, seeing rank 1 exit 75, SIGTERMs it while it shuts down: it must still exit 75.
    proc = start([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--max-restarts", "0",
                  "-m", "mars_dist.train", "--config", config],
                 log, TOY_TASK_NONFINITE="1:3", TOY_TASK_SLOW_EXIT="0:3")
    wait_for(lambda: committed_checkpoints(run_dir), proc, log, "the first checkpoint")
    os.kill(worker_pids(proc, 2, log)[1], signal.SIGUSR1)
    assert finish(proc, log) != 0, "torchrun reports workers that exit 75 as failed"
    text = log.read_text()
    assert torchrun_exit_codes(text) == {0: REQUEUE_EXIT_CODE, 1: REQUEUE_EXIT_CODE}, text[-3000:]
    assert "preempted (signal on another rank)" in text  # rank 0 stopped because rank 1 got the signal

    newest_step, newest = committed_checkpoints(run_dir)[-1]
    state = read_train_state(newest)
    assert state["world_size"] == 2 and state["step"] == newest_step > 20
    assert state["nonfinite_skips"] == 1
    assert sorted(p.name for p in newest.glob("rng-rank*.pt")) == ["rng-rank00000.pt", "rng-rank00001.pt"]
    assert (run_dir / PREEMPTED_MARKER).read_text().splitlines()[0] == str(newest)

    # Elastic: the 2-process checkpoint resumes in one plain process and continues.
    single = start([sys.executable, TRAIN_PY, "--config", config, f"train.max_steps={newest_step + 1}"], log)
    assert finish(single, log) == 0, log.read_text()[-3000:]
    assert read_train_state(committed_checkpoints(run_dir)[-1][1])["samples_seen"] == (newest_step + 1) * 4


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one_selected(tiny_shards, tmp_path):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, tiny_shards, run_dir, "train.max_steps=4", "checkpoint.every_steps=2")
    log = tmp_path / "train.log"
    proc = start([sys.executable, PAUSED_TRAIN_PY, "4", "120", "--config", config], log)  # step 4's commit waits 120 s
    half_written = run_dir / "checkpoints" / ".step-00000004.tmp"
    wait_for(lambda: (half_written / "train_state.json").is_file(), proc, log, "the step-4 checkpoint being written")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    assert [step for step, _ in committed_checkpoints(run_dir)] == [2]
    assert resolve_resume(run_dir, "auto") == run_dir / "checkpoints" / "step-00000002"
    assert half_written.is_dir()

    resumed = start([sys.executable, TRAIN_PY, "--config", config, "--resume", "auto"], log)
    assert finish(resumed, log) == 0, log.read_text()[-3000:]
    assert [step for step, _ in committed_checkpoints(run_dir)] == [2, 4]
    assert not half_written.exists(), "the stale temporary folder is cleaned up by the next commit"
    assert "resumed from" in log.read_text()


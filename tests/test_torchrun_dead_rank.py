"""A dead rank under elastic torchrun: SIGKILL one of two workers mid-run; the launcher (--max-restarts 1,
c10d rendezvous) restarts the group, which resumes from the newest committed checkpoint on its own
(`--resume auto`) and completes the run. Run with the Accelerate and DeepSpeed backends, the way a
multi-node job is launched (`--nnodes MIN:MAX --rdzv-backend c10d --rdzv-endpoint HOST:PORT`), and
with `python -m mars_dist.torchrun`, which restarts a crashed group as torchrun does (only a
preempted one it does not: tests/test_preemption_launchers.py)."""
from __future__ import annotations

import os
import signal

import pytest

from mars_dist.engine.checkpoint import committed_checkpoints, read_train_state
from tests.fixtures.processes import RESTART_SAFE_ENV, extensions_env, finish, launch_command, start, wait_for, worker_pids, write_config

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

MAX_STEPS = 120
BACKENDS = {
    "debug": ["engine.backend=debug"],
    "accelerate": ["engine.backend=accelerate", "engine.accelerate.strategy=ddp"],
    "deepspeed": ["engine.backend=deepspeed", "engine.deepspeed.zero_stage=1"],
}
CASES = [("torchrun", backend) for backend in sorted(BACKENDS)] + [("mars_dist.torchrun", "debug")]


@pytest.mark.parametrize("launcher,backend", CASES)
def test_killing_a_worker_restarts_the_group_which_resumes_and_finishes(tiny_shards, tmp_path, launcher, backend):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, tiny_shards, run_dir, f"train.max_steps={MAX_STEPS}", "checkpoint.every_steps=10",
                          "checkpoint.keep_last=2", "train.log_every=10", *BACKENDS[backend])
    log = tmp_path / "torchrun.log"
    proc = start(launch_command(launcher, 2, config, "--max-restarts", "1", train_args=["--resume", "auto"]), log,
                 **extensions_env(), **RESTART_SAFE_ENV)
    wait_for(lambda: committed_checkpoints(run_dir), proc, log, "the first checkpoint", timeout_s=180)
    workers = worker_pids(proc, 2, log)
    killed_at = committed_checkpoints(run_dir)[-1][0]
    os.kill(workers[1], signal.SIGKILL)
    assert finish(proc, log, timeout_s=300) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "resumed from" in text and "(saved with world size 2, now 2)" in text, text[-3000:]
    assert killed_at < MAX_STEPS, "the run ended before the worker was killed: nothing was tested"
    assert committed_checkpoints(run_dir)[-1][0] == MAX_STEPS
    assert read_train_state(run_dir / "checkpoints" / f"step-{MAX_STEPS:08d}")["samples_seen"] == MAX_STEPS * 4

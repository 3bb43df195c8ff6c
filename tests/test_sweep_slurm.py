"""`mars-sweep` (as `python launch/sweep.py`) on a real Slurm (tests/fixtures/slurm.py): one job array,
hash-named run folders, resubmission that starts nothing for finished runs, and preemption through
submitit's own checkpoint/requeue path ending in an exact resume."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from launch.sweep import run_state
from mars_dist.config import config_to_dict, load_config
from mars_dist.engine.checkpoint import committed_checkpoints, read_train_state
from tests.fixtures.processes import write_config
from tests.fixtures.slurm import REPO, Job, assert_trained_like_an_unbroken_run

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

KEY_LOG_TASK = "task=tests.fixtures.slurm:KeyLogToyTask"
SLURM_ARGS = ("--cluster", "slurm", "--partition", "debug", "--cpus-per-task", "1", "--time", "20")


def sweep(*args: str) -> str:
    """Runs `python launch/sweep.py ARGS` (mars-sweep's script form) as a user does; its output."""
    out = subprocess.run([sys.executable, "launch/sweep.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, f"sweep.py {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def expected_folder(sweep_dir: Path, config: str, grid_value: str) -> Path:
    """The documented name: grid values (last key part + value), then 8 hex digits of the resolved config's sha256."""
    resolved = {k: v for k, v in config_to_dict(load_config(config, [f"optim.lr={grid_value}"])).items() if k != "run_dir"}
    return sweep_dir / f"lr{grid_value}-{hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:8]}"


def job_of(folder: Path) -> Job:
    job_id = json.loads((folder / "job.json").read_text())["job_id"]
    return Job(job_id, folder.parent / "submitit" / f"{job_id}_0_log.out")


def test_a_two_point_sweep_runs_as_one_array_of_two_task_jobs_and_resubmitting_starts_nothing(slurm_cluster, tiny_shards, tmp_path):
    sweep_dir, steps = tmp_path / "sweep", 6
    config = write_config(tmp_path, tiny_shards, tmp_path / "unused", KEY_LOG_TASK, f"train.max_steps={steps}", "checkpoint.every_steps=3")
    grid = ("submit", "--config", config, "--grid", "optim.lr=0.01,0.02", "--sweep-dir", str(sweep_dir))
    out = sweep(*grid, *SLURM_ARGS, "--tasks-per-node", "2")
    folders = [expected_folder(sweep_dir, config, lr) for lr in ("0.01", "0.02")]
    assert "submitted 2, skipped 0" in out, out
    array_id = job_of(folders[0]).id.split("_")[0]
    assert [job_of(f).id for f in folders] == [f"{array_id}_0", f"{array_id}_1"], "one job array, a task per run"

    # "done" counts from the last checkpoint's commit; the job releases the folder's LOCK a moment later, as it exits
    slurm_cluster.wait(lambda: all(run_state(f, steps) == "done" and not (f / "LOCK").exists() for f in folders),
                       "both runs to finish and release their folders", timeout_s=400, diagnose=job_of(folders[-1]).output)
    for folder in folders:
        assert_trained_like_an_unbroken_run(folder, config, steps, world_size=2)
        assert read_train_state(committed_checkpoints(folder)[-1][1])["world_size"] == 2

    status = sweep("status", str(sweep_dir))
    for folder in folders:
        assert re.search(rf"^{folder.name}\s+done\s+{steps}\s+classification=\S+ regression=\S+\s+{folder}$", status, re.M), status
    assert status.strip().endswith("2 runs: 2 done")

    pickles = sorted((sweep_dir / "submitit").glob("*_submitted.pkl"))
    again = sweep(*grid, *SLURM_ARGS, "--tasks-per-node", "2")
    assert "submitted 0, skipped 2" in again and again.count(" done ") == 2, again
    assert sorted((sweep_dir / "submitit").glob("*_submitted.pkl")) == pickles, "resubmitting submitted a job"


def test_a_preempted_sweep_run_requeues_through_submitit_and_a_resubmission_resumes_only_it(slurm_cluster, tiny_shards, tmp_path):
    """lr=0.01 finishes; lr=0.02 is signalled (USR1, like --signal=USR1@90), commits, is requeued by submitit,
    resumes, is signalled again past --max-requeues 1 and stays preempted; submitting the sweep again resumes it alone."""
    sweep_dir, steps = tmp_path / "sweep", 300
    config = write_config(tmp_path, tiny_shards, tmp_path / "unused", KEY_LOG_TASK, f"train.max_steps={steps}",
                          "checkpoint.every_steps=10", "checkpoint.keep_last=20", "train.log_every=10")
    grid = ("submit", "--config", config, "--grid", "optim.lr=0.01,0.02", "--sweep-dir", str(sweep_dir),
            "--max-requeues", "1")
    sweep(*grid, *SLURM_ARGS)
    finished, preempted = (expected_folder(sweep_dir, config, lr) for lr in ("0.01", "0.02"))
    job = job_of(preempted)

    def committed_after(step):
        return lambda: any(s > step for s, _ in committed_checkpoints(preempted))

    slurm_cluster.wait(committed_after(0), "the first checkpoint", diagnose=job.output)
    slurm_cluster.signal(job)
    slurm_cluster.start_requeued_now(job, restarts=1)
    log = preempted / "train.log"
    first_stop = int(re.findall(r"step-(\d+) written, exiting for requeue", log.read_text())[-1])
    slurm_cluster.wait(committed_after(first_stop), "a checkpoint after the resume", diagnose=job.output)
    slurm_cluster.signal(job)
    record = slurm_cluster.wait_ended(job)
    assert int(record["Restarts"]) == 1, record
    slurm_cluster.wait(lambda: run_state(finished, steps) == "done", "the other run to finish", diagnose=job_of(finished).output)
    assert run_state(preempted, steps) == "preempted", job.text()[-3000:]
    assert "not requeued; submit the sweep again to resume" in job.text()
    before = {"records": (finished / "keys-rank0.jsonl").read_text(), "checkpoints": committed_checkpoints(finished)}

    plan = sweep(*grid, *SLURM_ARGS, "--dry-run")
    assert re.search(rf"^{finished.name}\s+done\s+skip\b", plan, re.M) and re.search(rf"^{preempted.name}\s+preempted\s+resume\b", plan, re.M), plan
    out = sweep(*grid, *SLURM_ARGS)
    assert "submitted 1, skipped 1" in out, out
    resumed_job = job_of(preempted)
    assert resumed_job.id != job.id
    slurm_cluster.wait(lambda: run_state(preempted, steps) == "done", "the resumed run to finish", diagnose=resumed_job.output)

    text = log.read_text()
    stops = [int(s) for s in re.findall(r"step-(\d+) written, exiting for requeue", text)]
    resumed = [int(s) for s in re.findall(r"resumed from \S+ at step (\d+)", text)]
    assert len(stops) == 2 and resumed == stops, (stops, resumed)
    segments = assert_trained_like_an_unbroken_run(preempted, config, steps, world_size=1)
    assert segments == [(0, stops[0] - 1), (stops[0], stops[1] - 1), (stops[1], steps - 1)]
    assert read_train_state(committed_checkpoints(preempted)[-1][1])["samples_seen"] == steps * 4
    after = {"records": (finished / "keys-rank0.jsonl").read_text(), "checkpoints": committed_checkpoints(finished)}
    assert after == before, "the finished run was not trained again"

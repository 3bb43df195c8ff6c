"""`sbatch slurm/*.sh` on a real Slurm (tests/fixtures/slurm.py) in CPU mode (gloo, --gpus-per-node=0):
completion with checkpoints and export, preemption -> commit -> requeue -> exact resume, the requeue
bound, no requeue after a crash or a user's mistake (the log ends with its error line), the run-folder
lock, clear errors, eval.sh, and two nodes."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mars_dist.engine.checkpoint import committed_checkpoints, read_train_state
from mars_dist.io.exports import read_export
from tests.ar_exports import AR_TINY, tokenizer_export
from tests.fixtures.processes import write_config
from tests.fixtures.slurm import REPO, assert_trained_like_an_unbroken_run, read_key_log, unbroken_stream

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

CPU_MODE = ("--gpus-per-node=0", "--cpus-per-task=1")
TWO_TASKS = (*CPU_MODE, "--ntasks-per-node=2")
KEY_LOG_TASK = "task=tests.fixtures.slurm:KeyLogToyTask"


def run_log(run_dir: Path, job) -> str:
    return (run_dir / "logs" / f"slurm-{job.id}.log").read_text()


def test_ar_sh_on_two_cpu_tasks_finishes_with_checkpoints_export_and_per_job_records(slurm_cluster, tiny_shards, tmp_path):
    tokenizer = tokenizer_export(tmp_path / "tokenizer")
    run_dir = tmp_path / "ar"
    job = slurm_cluster.sbatch(
        "slurm/ar.sh", f"next_scale.tokenizer_path={tokenizer}", f"data.train_shards={tiny_shards['train']}",
        f"data.valid_shards={tiny_shards['valid']}", "train.max_steps=2", "checkpoint.every_steps=1", "stages.media.every=0",
        "logging.wandb_mode=disabled",
        out_dir=tmp_path, env={"CONFIG": str(AR_TINY), "RUN_DIR": str(run_dir)}, options=TWO_TASKS)
    record = slurm_cluster.wait_ended(job, timeout_s=600)
    assert (record["JobState"], record["ExitCode"], record["Restarts"]) == ("COMPLETED", "0:0", "0"), job.text()[-3000:]

    assert [step for step, _ in committed_checkpoints(run_dir)] == [1, 2]
    state = read_train_state(committed_checkpoints(run_dir)[-1][1])
    assert (state["world_size"], state["backend"], state["samples_seen"]) == (2, "debug", 4)
    _, exported = read_export(run_dir / "export")
    assert (exported["model"], exported["step"]) == ("next_scale", 2)

    log = run_log(run_dir, job)
    assert "world size 2" in log and "[mars slurm" in log and "done" in log.splitlines()[-1]
    command = (run_dir / "logs" / f"slurm-{job.id}.command").read_text()
    assert "srun" in command and "slurm/_task.sh" in command and "mars_dist.train" in command and "engine.device=cpu" in command
    resolved = (run_dir / "logs" / f"slurm-{job.id}.config.yaml").read_text()
    assert f"tokenizer_path: {tokenizer}" in resolved and f"run_dir: {run_dir}" in resolved
    assert not (run_dir / "LOCK").exists(), "a finished job unlocks its run folder"


def test_a_signalled_job_commits_requeues_and_resumes_exactly_up_to_its_requeue_bound(slurm_cluster, tiny_shards, tmp_path):
    """USR1 to the tasks (what --signal=USR1@90 does before the time limit) -> checkpoint -> requeue -> resume;
    the second preemption exceeds MAX_REQUEUES=1, so the job ends; the same sbatch again finishes the run.
    Meanwhile a second job naming the same run folder is refused."""
    run_dir, steps = tmp_path / "run", 300
    config = write_config(tmp_path, tiny_shards, run_dir, KEY_LOG_TASK, f"train.max_steps={steps}",
                          "checkpoint.every_steps=10", "checkpoint.keep_last=20", "train.log_every=10")
    env = {"CONFIG": config, "MAX_REQUEUES": "1"}
    job = slurm_cluster.sbatch("slurm/train.sh", out_dir=tmp_path, env=env, options=TWO_TASKS)
    slurm_cluster.wait(lambda: (run_dir / "LOCK").exists(), "the job to lock its run folder", diagnose=job.output)

    intruder = slurm_cluster.sbatch("slurm/train.sh", out_dir=tmp_path, env=env, options=TWO_TASKS)
    record = slurm_cluster.wait_ended(intruder)
    assert (record["JobState"], record["ExitCode"]) == ("FAILED", "2:0"), intruder.text()
    assert f"error: run directory {run_dir} is in use by Slurm job {job.id} (RUNNING)" in intruder.text()

    def committed_after(step):
        return lambda: any(s > step for s, _ in committed_checkpoints(run_dir))

    slurm_cluster.wait(committed_after(0), "the first checkpoint", diagnose=job.output)
    slurm_cluster.signal(job)
    slurm_cluster.start_requeued_now(job, restarts=1)
    first_stop = int(re.findall(r"checkpoint \S+/step-(\d+) written, exiting for requeue", run_log(run_dir, job))[-1])
    slurm_cluster.wait(committed_after(first_stop), "a checkpoint after the resume", diagnose=job.output)
    slurm_cluster.signal(job)
    record = slurm_cluster.wait_ended(job)
    log = run_log(run_dir, job)
    assert (record["JobState"], record["ExitCode"], record["Restarts"]) == ("FAILED", "75:0", "1"), log[-3000:]
    assert "requeueing job" in log and "MAX_REQUEUES=1): not requeued; resubmit the same command to resume" in log
    assert not (run_dir / "LOCK").exists(), "a job that will not run again unlocks its run folder"

    again = slurm_cluster.sbatch("slurm/train.sh", out_dir=tmp_path, env=env, options=TWO_TASKS)
    record = slurm_cluster.wait_ended(again)
    assert (record["JobState"], record["ExitCode"]) == ("COMPLETED", "0:0"), again.text()[-3000:]

    stops = [int(s) for s in re.findall(r"checkpoint \S+/step-(\d+) written, exiting for requeue", log)]
    resumed = [int(s) for s in re.findall(r"resumed from \S+ at step (\d+)", log + run_log(run_dir, again))]
    assert len(stops) == 2 and resumed == stops, (stops, resumed)
    segments = assert_trained_like_an_unbroken_run(run_dir, config, steps, world_size=2)
    assert segments == [(0, stops[0] - 1), (stops[0], stops[1] - 1), (stops[1], steps - 1)]
    final = read_train_state(committed_checkpoints(run_dir)[-1][1])
    assert (final["step"], final["samples_seen"]) == (steps, steps * 4)
    assert final["cursor"] == unbroken_stream(config, steps)[1], "the data cursor continues as in an unbroken run"
    assert log.count("start 1 on") == 1 and log.count("start 2 on") == 1
    assert not (run_dir / "PREEMPTED").exists() and not (run_dir / "LOCK").exists()


def test_a_crashing_job_fails_without_requeue_and_its_log_names_the_error(slurm_cluster, tiny_shards, tmp_path):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, tiny_shards, run_dir, "train.max_steps=50", "engine.on_nonfinite=stop")
    job = slurm_cluster.sbatch("slurm/train.sh", out_dir=tmp_path, options=TWO_TASKS,
                               env={"CONFIG": config, "TOY_TASK_NONFINITE": "*:5"})
    record = slurm_cluster.wait_ended(job)
    # status 1, or 134 when a rank aborts in its teardown after the exception ("terminate called without an active exception")
    assert (record["JobState"], record["Restarts"]) == ("FAILED", "0"), job.text()[-3000:]
    assert record["ExitCode"] not in ("0:0", "75:0"), record["ExitCode"]
    summary, last = run_log(run_dir, job).strip().splitlines()[-2:]
    assert re.search(r"failed with status (1|134), not requeued", summary), summary
    assert re.search(r"NonFiniteLossError: non-finite loss at step 5", last), f"the log ends with the error, not {last!r}"
    assert job.text().strip().splitlines()[-2:] == [summary, last], "the Slurm output file ends the same way"
    assert not (run_dir / "PREEMPTED").exists() and not (run_dir / "LOCK").exists()


def test_a_users_mistake_fails_the_job_and_its_log_ends_with_the_command_lines_error(slurm_cluster, tiny_shards, tmp_path):
    """mars-train reports a bad override as one `mars-train: error: ...` line with status 2; that line ends the
    log, not srun's own `srun: error: NODE: tasks 0-1: Exited with exit code 2`, which comes after it."""
    missing = tmp_path / "no-such-export"
    run_dir = tmp_path / "ar"
    job = slurm_cluster.sbatch(
        "slurm/ar.sh", f"ar.tokenizer_path={missing}", f"data.train_shards={tiny_shards['train']}",
        f"data.valid_shards={tiny_shards['valid']}", "logging.wandb_mode=disabled",
        out_dir=tmp_path, env={"CONFIG": str(AR_TINY), "RUN_DIR": str(run_dir)}, options=TWO_TASKS)
    record = slurm_cluster.wait_ended(job)
    assert (record["JobState"], record["ExitCode"], record["Restarts"]) == ("FAILED", "2:0", "0"), job.text()[-3000:]
    lines = run_log(run_dir, job).strip().splitlines()
    assert any(line.startswith("srun: error:") for line in lines), "srun reports the status too (and is passed over)"
    summary, last = lines[-2:]
    assert re.search(r"failed with status 2, not requeued", summary), summary
    assert last.startswith("mars-train: error:") and str(missing) in last, f"the log ends with the error, not {last!r}"
    assert job.text().strip().splitlines()[-2:] == [summary, last], "the Slurm output file ends the same way"
    assert not (run_dir / "LOCK").exists(), "a failed job unlocks its run folder"


def test_a_missing_config_fails_the_job_with_one_line_naming_it(slurm_cluster, tmp_path):
    job = slurm_cluster.sbatch("slurm/train.sh", out_dir=tmp_path, options=(*CPU_MODE, "--ntasks-per-node=1"),
                               env={"CONFIG": "configs/nope.yaml"})
    record = slurm_cluster.wait_ended(job)
    assert (record["JobState"], record["ExitCode"]) == ("FAILED", "2:0")
    errors = [line for line in job.text().splitlines() if line.strip()]
    assert errors == [f"error: config file not found: {REPO / 'configs' / 'nope.yaml'}"], errors


def test_eval_sh_runs_the_module_it_is_given_under_srun(slurm_cluster, tiny_shards, tmp_path):
    """slurm/eval.sh is generic over MODULE (default mars_dist.evaluate); mars_dist.eval.report is one that exists."""
    tokenizer = tokenizer_export(tmp_path / "tokenizer")
    run_dir = tmp_path / "eval"
    job = slurm_cluster.sbatch("slurm/eval.sh", "--tokenizer", str(tokenizer), "--shards", tiny_shards["valid"],
                               "--out", str(run_dir / "report"), "--gl-iters", "2", "--limit", "2", "--device", "cpu",
                               out_dir=tmp_path, options=(*CPU_MODE, "--ntasks-per-node=1"),
                               env={"MODULE": "mars_dist.eval.report", "RUN_DIR": str(run_dir)})
    record = slurm_cluster.wait_ended(job)
    assert (record["JobState"], record["ExitCode"]) == ("COMPLETED", "0:0"), job.text()[-3000:]
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    assert metrics["tokenizer_export"] == str(tokenizer)
    assert "mars_dist.eval.report" in (run_dir / "logs" / f"slurm-{job.id}.command").read_text()
    assert f"metrics: {run_dir / 'report' / 'metrics.json'}" in run_log(run_dir, job)


def test_two_nodes_train_one_run_with_a_rank_on_each(slurm_cluster, tiny_shards, tmp_path):
    if slurm_cluster.two_node_skip:
        pytest.skip(slurm_cluster.two_node_skip)
    run_dir, steps = tmp_path / "run", 6
    config = write_config(tmp_path, tiny_shards, run_dir, KEY_LOG_TASK, f"train.max_steps={steps}", "checkpoint.every_steps=3")
    job = slurm_cluster.sbatch("slurm/train.sh", out_dir=tmp_path, env={"CONFIG": config},
                               options=(*CPU_MODE, "--partition=all", "--nodes=2", "--ntasks-per-node=1"))
    record = slurm_cluster.wait_ended(job)
    assert (record["JobState"], record["ExitCode"], record["NumNodes"]) == ("COMPLETED", "0:0", "2"), job.text()[-3000:]
    assert_trained_like_an_unbroken_run(run_dir, config, steps, world_size=2)
    hosts = {r["rank"]: r["host"] for r in read_key_log(run_dir)}
    assert hosts == dict(enumerate(slurm_cluster.nodes)), f"ranks ran on {hosts}, nodes are {slurm_cluster.nodes}"
    assert read_train_state(committed_checkpoints(run_dir)[-1][1])["world_size"] == 2

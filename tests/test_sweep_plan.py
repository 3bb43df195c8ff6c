"""mars-sweep (launch/sweep.py) without a Slurm: grid parsing, hash-named run folders, run states, the dry-run
plan, one-line errors, and a whole sweep on the in-process debug cluster with its status table."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from launch.run_folder import LOCK_FILE, Owner, acquire
from launch.sweep import PROG, SweepError, action, config_hash, main, parse_grid, plan_runs, run_state
from mars_dist.config import config_to_dict, load_config
from tests.ar_exports import AR_TINY
from tests.fixtures.cli import process_error, user_error
from tests.fixtures.processes import write_config
from tests.fixtures.slurm import REPO


def sweep(*args: str) -> subprocess.CompletedProcess:
    """Runs `python launch/sweep.py ARGS` as a user does (the documented script form of mars-sweep); exit 0."""
    out = subprocess.run([sys.executable, "launch/sweep.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, f"exit {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out


def test_the_grid_product_is_one_run_per_point_named_by_its_values_and_config_hash(tmp_path):
    grid = parse_grid(["optim.lr=1e-4,3e-4", "ar.depth=4,6"])
    runs = plan_runs(str(AR_TINY), grid, ["train.max_steps=7"], tmp_path, max_requeues=3)
    assert [r.overrides for r in runs] == [
        ("train.max_steps=7", "optim.lr=1e-4", "ar.depth=4"), ("train.max_steps=7", "optim.lr=1e-4", "ar.depth=6"),
        ("train.max_steps=7", "optim.lr=3e-4", "ar.depth=4"), ("train.max_steps=7", "optim.lr=3e-4", "ar.depth=6")]
    for run in runs:
        resolved = config_to_dict(load_config(AR_TINY, list(run.overrides)))
        assert run.name == re.sub(r"optim\.lr=(\S+) ar\.depth=(\S+)", r"lr\1_depth\2", " ".join(run.overrides[1:])) + "-" + config_hash(resolved)
        assert Path(run.folder) == tmp_path / run.name and run.max_steps == 7 and run.max_requeues == 3
    assert len({r.config_hash for r in runs}) == 4

    elsewhere = plan_runs(str(AR_TINY), grid, ["train.max_steps=7", "run_dir=/somewhere/else"], tmp_path, 3)
    assert [r.name for r in elsewhere] == [r.name for r in runs], "run_dir is not part of a run's identity"
    longer = plan_runs(str(AR_TINY), grid, ["train.max_steps=8"], tmp_path, 3)
    assert not {r.name for r in longer} & {r.name for r in runs}, "any other config value is"


@pytest.mark.parametrize("grid, message", [
    (["optim.lr"], "--grid 'optim.lr': expected key=value1,value2"),
    (["optim.lr=1e-4,"], "--grid 'optim.lr=1e-4,': expected key=value1,value2"),
    (["optim.lr=1", "optim.lr=2"], "--grid names optim.lr twice"),
])
def test_a_malformed_grid_is_refused_naming_it(grid, message):
    with pytest.raises(SweepError, match=re.escape(message)):
        parse_grid(grid)


def test_grid_values_that_resolve_to_one_config_are_refused(tmp_path):
    with pytest.raises(SweepError, match="resolve to the same config"):
        plan_runs(str(AR_TINY), parse_grid(["optim.lr=1e-4,0.0001"]), [], tmp_path, 1)


def test_the_script_and_the_module_print_one_line_and_exit_2(tmp_path):
    bad_key = process_error(["launch/sweep.py", "submit", "--config", str(AR_TINY), "--grid", "optim.lrr=1,2",
                             "--sweep-dir", str(tmp_path), "--dry-run"], PROG)
    assert bad_key.startswith("mars-sweep: error: command-line override 'optim.lrr=1': unknown config key"), bad_key
    missing = process_error(["-m", "launch.sweep", "status", str(tmp_path / "nothing")], PROG)
    assert missing.startswith(f"mars-sweep: error: {tmp_path / 'nothing'}: no runs of a sweep here"), missing
    assert not any(tmp_path.iterdir()), "a refused sweep writes nothing"


@pytest.mark.parametrize("argv, expected", [
    (["--grid", "optim.lr=1e-4,3e-4", "ar.depth=4,6"],
     "override 'ar.depth=4,6': a shared override takes one value (the same in every run); to sweep ar.depth over "
     "4,6, write --grid ar.depth=4,6"),
    (["--grid", "optim.lr=1e-4,3e-4", "optim.lr=1e-3"],
     "optim.lr: both swept (--grid) and shared (key=value); give each key one of the two"),
    (["--grid", "optim.lr"], "--grid 'optim.lr': expected key=value1,value2"),
    (["--grid", "optim.lr=1e-4,3e-4", "--config", "no/such/config.yaml"], "config file not found"),
    (["--grid", "optim.lr=1e-4,3e-4", "--sweep-dir", "{tmp}/a-file"],
     "--sweep-dir {tmp}/a-file: is a file (expected a folder for the run folders, or a new path)"),
], ids=["grid as a shared override", "swept and shared", "malformed grid", "missing config", "sweep dir is a file"])
def test_submit_mistakes_are_one_error_line(tmp_path, capsys, argv, expected):
    (tmp_path / "a-file").write_text("x")
    argv = ["submit", "--config", str(AR_TINY), "--sweep-dir", str(tmp_path / "sweep"), "--dry-run",
            *(arg.format(tmp=tmp_path) for arg in argv)]  # argparse: the last --config / --sweep-dir wins
    assert expected.format(tmp=tmp_path) in user_error(capsys, main, PROG, argv)
    assert not (tmp_path / "sweep").exists()


def test_the_shared_overrides_are_positional_and_each_grid_key_has_its_own_flag(tmp_path, capsys):
    argv = ["submit", "--config", str(AR_TINY), "--grid", "optim.lr=1e-4,3e-4", "train.max_steps=7",
            "--grid", "ar.depth=4,6", "--sweep-dir", str(tmp_path), "--dry-run"]
    assert main(argv) == 0
    plan = capsys.readouterr().out
    assert plan.count(" new ") == 4 and "would submit 4, skipped 0" in plan, plan
    expected = plan_runs(str(AR_TINY), parse_grid(["optim.lr=1e-4,3e-4", "ar.depth=4,6"]), ["train.max_steps=7"],
                         tmp_path, 20)
    assert all(run.name in plan for run in expected) and not any(tmp_path.iterdir()), plan


def _commit(folder: Path, step: int) -> None:
    checkpoint = folder / "checkpoints" / f"step-{step:08d}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "COMMITTED").write_text(f"{step}\n")


def test_run_states_follow_the_run_folder(tmp_path):
    folder = tmp_path / "run"
    assert (run_state(folder, 10), action("new", folder)) == ("new", "submit")
    _commit(folder, 4)
    (folder / "PREEMPTED").write_text("x\n")
    assert (run_state(folder, 10), action("preempted", folder)) == ("preempted", "resume")
    (folder / "FAILED").write_text("RuntimeError: boom\n")
    assert run_state(folder, 10) == "failed"
    acquire(folder, Owner.current())  # a live owner: this process
    assert run_state(folder, 10) == "running" and action("running", folder) == "skip"
    (folder / LOCK_FILE).unlink()
    (folder / "job.json").write_text(json.dumps({"cluster": "local", "job_id": "999999999", "host": Owner.current().id.split(":")[0]}))
    (folder / "FAILED").unlink()
    (folder / "PREEMPTED").unlink()
    assert run_state(folder, 10) == "failed", "a submitted job that ended without finishing or a preemption checkpoint"
    _commit(folder, 10)
    assert (run_state(folder, 10), action("done", folder)) == ("done", "skip")


def test_a_debug_sweep_trains_in_process_and_status_shows_each_run(tiny_shards, tmp_path):
    sweep_dir = tmp_path / "sweep"
    config = write_config(tmp_path, tiny_shards, tmp_path / "unused", "train.max_steps=3", "checkpoint.every_steps=3")
    grid = ("submit", "--config", config, "--grid", "optim.lr=0.01,0.02", "--sweep-dir", str(sweep_dir),
            "--cluster", "debug")
    plan = sweep(*grid, "--dry-run").stdout
    assert plan.count(" new ") == 2 and "would submit 2, skipped 0" in plan and not sweep_dir.exists(), plan
    assert "submitted 2, skipped 0" in sweep(*grid).stdout
    status = sweep("status", str(sweep_dir)).stdout
    rows = [line.split() for line in status.splitlines()[1:-1]]
    assert [(r[1], r[2], r[-1]) for r in rows] == [("done", "3", str(p)) for p in sorted(sweep_dir.glob("lr*"))], status
    assert all(r[3].startswith("classification=") and r[4].startswith("regression=") for r in rows), status

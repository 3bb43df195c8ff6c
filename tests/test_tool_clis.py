"""The commands beside mars_dist's own CLIs (data tools, sweeps, the torchrun wrapper, the data benchmark): each
names itself by its console script, `mars-<verb>`, however it is started, its `entry()` (what the console
script runs) answers a user's mistake with one `mars-<verb>: error:` line and exit status 2, and so do
mars-torchrun and mars-bench-data, whose mistakes no other test file covers."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from data_tools import inspect_shards, shard, synthetic
from launch import sweep
from mars_dist import torchrun
from mars_dist.bench import data as bench_data
from tests.fixtures.cli import REPO, error_lines, process_error, user_error

STARTS = [
    ("mars-synthetic", ["-m", "data_tools.synthetic"]),
    ("mars-shard", ["-m", "data_tools.shard"]),
    ("mars-inspect", ["-m", "data_tools.inspect_shards"]),
    ("mars-sweep", ["-m", "launch.sweep"]),
    ("mars-sweep", ["launch/sweep.py"]),
    ("mars-torchrun", ["-m", "mars_dist.torchrun"]),
    ("mars-bench-data", ["-m", "mars_dist.bench.data"]),
]


@pytest.mark.parametrize("prog, start", STARTS, ids=[" ".join(start) for _, start in STARTS])
def test_every_tool_names_itself_by_its_console_script(prog, start):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, *start, "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0 and result.stdout.startswith(f"usage: {prog} "), result.stdout[:300] + result.stderr


MISTAKES = [
    (synthetic, ["--out", "{tmp}/nsynth", "--split", "train:1", "--split", "train:1"],
     "mars-synthetic: error: split names must be distinct, got ['train', 'train']"),
    (shard, ["--nsynth-root", "{tmp}/nowhere", "--split", "train", "--out", "{tmp}/shards"],
     "mars-shard: error: {tmp}/nowhere/nsynth-train/examples.json: not found (expected NSynth layout "
     "ROOT/nsynth-train/examples.json)"),
    (inspect_shards, ["{tmp}/nowhere"],
     "mars-inspect: error: {tmp}/nowhere: no such folder or S3 prefix (expected a shard set's folder or "
     "s3://bucket/prefix, holding manifest.json)"),
    (sweep, ["status", "{tmp}/nowhere"],
     "mars-sweep: error: {tmp}/nowhere: no runs of a sweep here (no */sweep_run.json); is it the --sweep-dir of a "
     "submitted sweep?"),
    (torchrun, ["--nproc-per-node", "1"],
     "mars-torchrun: error: the following arguments are required: training_script, training_script_args"),
    (bench_data, ["--notes", "0"], "mars-bench-data: error: --notes 0: expected an integer >= 1"),
]


@pytest.mark.parametrize("module, argv, expected", MISTAKES, ids=[m.PROG for m, _, _ in MISTAKES])
def test_the_console_scripts_entry_prints_one_line_and_exits_2(module, argv, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [module.PROG, *(arg.format(tmp=tmp_path) for arg in argv)])
    with pytest.raises(SystemExit) as info:
        module.entry()
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err, err
    assert error_lines(err, module.PROG) == [expected.format(tmp=tmp_path)]
    assert not any(tmp_path.iterdir()), "a refused command writes nothing"


def test_torchrun_refuses_its_arguments_as_torchrun_does(capsys):
    """mars-torchrun is torchrun's parser under another name: its mistakes are argparse's (usage, one line, 2)."""
    for argv, message in ((["--nproc-per-node", "1"], "the following arguments are required: training_script"),
                          (["--start-method", "thread", "train.py"], "invalid choice: 'thread'")):
        with pytest.raises(SystemExit) as info:
            torchrun.main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and "Traceback" not in err, err
        (line,) = error_lines(err, "mars-torchrun")
        assert message in line, line
    line = process_error(["-m", "mars_dist.torchrun"], "mars-torchrun")
    assert line.startswith("mars-torchrun: error: the following arguments are required: training_script")


@pytest.mark.parametrize("argv, expected", [
    (["--batch-size", "0"], "--batch-size 0: expected an integer >= 1"),
    (["--workers", "0"], "--workers 0: expected an integer >= 1"),
    (["--s3", "--latency-ms", "-5"], "--latency-ms -5.0: expected a number >= 0"),
    (["--notes", "20", "--batch-size", "16"],
     "--notes 20: expected at least two batches of --batch-size 16 (>= 32): the first batch is not timed"),
    (["--nsynth-root", "{tmp}/nowhere"],
     "--nsynth-root {tmp}/nowhere: {tmp}/nowhere/nsynth-train/examples.json not found (expected NSynth layout "
     "ROOT/nsynth-train/examples.json)"),
    (["--work", "{tmp}/a-file"], "--work {tmp}/a-file: is a file (expected a folder or a new path)"),
    (["--json", "{tmp}/no-folder/results.json"], "--json {tmp}/no-folder/results.json: its folder does not exist"),
], ids=["batch", "workers", "latency", "too few notes", "missing root", "work is a file", "json folder"])
def test_bench_data_refuses_a_mistake_before_any_work(argv, expected, tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    line = user_error(capsys, bench_data.main, bench_data.PROG, [arg.format(tmp=tmp_path) for arg in argv])
    assert line == f"mars-bench-data: error: {expected.format(tmp=tmp_path)}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"], "nothing generated, sharded or written"


def test_bench_data_as_a_module_prints_one_line_and_exits_2(tmp_path):
    line = process_error(["-m", "mars_dist.bench.data", "--nsynth-root", str(tmp_path / "nowhere")], "mars-bench-data")
    assert line.startswith(f"mars-bench-data: error: --nsynth-root {tmp_path / 'nowhere'}: ")

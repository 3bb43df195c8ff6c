"""mars-shard (data_tools.shard) on user errors: one `mars-shard: error:` line naming the value and what was
expected, exit status 2, no traceback, nothing written or lost — for flags, inputs, file-system and S3 problems."""
from __future__ import annotations

import os
import uuid

import pytest

from data_tools.nsynth import examples_path
from data_tools.shard import PROG, ShardingError, main, shard_nsynth
from mars_dist.audio.config import AudioConfig
from mars_dist.cli import run_cli
from tests.fixtures.cli import process_error, user_error
from tests.fixtures.nsynth import SMALL_SPLIT, write_examples


def _error_line(argv, capsys):
    """The one stderr line of a CLI run that must stop with exit status 2 (and nothing else on stderr)."""
    line = user_error(capsys, main, PROG, argv)
    assert line.startswith("mars-shard: error: ")
    return line


def _args(root, out, *more):
    return ["--nsynth-root", root, "--split", SMALL_SPLIT, "--out", out, "--workers", "1", "--no-progress", *more]


def test_out_that_is_an_existing_file(small_nsynth, tmp_path, capsys):
    root, _, _ = small_nsynth
    out = tmp_path / "train.tar"
    out.write_text("someone's file")
    line = _error_line(_args(root, str(out)), capsys)
    assert line.endswith(f"{out}: exists and is not a folder (expected a folder or a new path)")
    assert out.read_text() == "someone's file"


def test_bucket_that_does_not_exist(small_nsynth, s3_server, capsys):
    root, _, _ = small_nsynth
    bucket = f"no-such-bucket-{uuid.uuid4().hex[:8]}"
    url = f"s3://{bucket}/nsynth/train"
    line = _error_line(_args(root, url), capsys)
    assert line.endswith(f"{url}: bucket '{bucket}' does not exist at S3 endpoint {s3_server['endpoint_url']}")


def test_unreachable_endpoint(small_nsynth, s3_url, capsys):
    root, _, _ = small_nsynth
    endpoint = "http://127.0.0.1:9"  # nothing listens on the discard port
    line = _error_line(_args(root, s3_url, f"data.storage_options.endpoint_url={endpoint}",
                             "data.storage_options.config_kwargs.retries.max_attempts=1"),  # else ~10 s of retries
                       capsys)
    assert line.startswith(f"mars-shard: error: {s3_url}: cannot reach the S3 endpoint {endpoint} (")


@pytest.mark.parametrize("flag,value,expected", [
    ("--seed", "-1", "expected an integer >= 0"),
    ("--workers", "-3", "expected an integer >= 1"),
    ("--workers", "0", "expected an integer >= 1"),
    ("--shard-size", "0", "expected an integer >= 1"),
    ("--seed", "x", "expected an integer >= 0"),
])
def test_bad_numbers_name_the_flag(small_nsynth, tmp_path, capsys, flag, value, expected):
    root, _, _ = small_nsynth
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_cli(main, PROG, _args(root, str(tmp_path / "out"), f"{flag}={value}"))
    assert info.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]  # argparse's usage line comes first
    assert last == f"mars-shard: error: argument {flag}: {value!r}: {expected}"
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("setting,message", [
    (dict(workers=-3), "workers=-3: expected an integer >= 1"),
    (dict(workers=0), "workers=0: expected an integer >= 1"),
    (dict(seed=-1), "seed=-1: expected an integer >= 0"),
])
def test_bad_numbers_are_refused_by_the_function_too(small_nsynth, tmp_path, setting, message):
    root, _, _ = small_nsynth
    with pytest.raises(ShardingError, match=message):
        shard_nsynth(root, SMALL_SPLIT, str(tmp_path / "out"), AudioConfig(), progress=False, **setting)


def test_malformed_entry_names_its_examples_json(small_nsynth, tmp_path, capsys):
    root, raw, keys = small_nsynth
    raw[keys[2]]["velocity"] = "loud"
    write_examples(root, SMALL_SPLIT, raw)
    line = _error_line(_args(root, str(tmp_path / "out")), capsys)
    assert line == (f"mars-shard: error: note '{keys[2]}': {examples_path(root, SMALL_SPLIT)} entry: "
                    "field 'velocity'='loud': expected an integer")


def test_a_file_system_error_met_by_a_worker_is_one_line_too(small_nsynth, tmp_path, capsys):
    root, _, _ = small_nsynth
    out = tmp_path / "out"
    (out / "shard-000001.index.json").mkdir(parents=True)  # where a worker must read a completion record
    line = _error_line(_args(root, str(out), "--workers=2", "--shard-size=7"), capsys)
    assert line == (f"mars-shard: error: {out}: Is a directory ({out / 'shard-000001.index.json'})")


@pytest.mark.parametrize("mistake,expected", [
    (lambda root, tmp: ["--nsynth-root", str(tmp / "no-nsynth")],
     "no-nsynth/nsynth-{split}/examples.json: not found (expected NSynth layout ROOT/nsynth-{split}/examples.json)"),
    (lambda root, tmp: ["--split", "tset"],
     "nsynth-tset/examples.json: not found (expected NSynth layout ROOT/nsynth-tset/examples.json)"),
    (lambda root, tmp: ["audio.stft.n_fftt=512"], "unknown config key 'audio.stft.n_fftt'"),
    (lambda root, tmp: ["optim.lr=0.1"],
     "override 'optim.lr=0.1': mars-shard only uses audio.* and data.storage_options.* settings"),
    (lambda root, tmp: ["--config", str(tmp / "missing.yaml")], "missing.yaml"),
    (lambda root, tmp: ["--out", "s3://some-bucket/train", "data.storage_options.endpoint=http://127.0.0.1:9"],
     "s3://some-bucket/train: storage option 'endpoint' is not one s3fs takes (expected one of anon, "),
    (lambda root, tmp: ["--out", "s3://some-bucket/train", "data.storage_options.config_kwargs=5"],
     "storage option config_kwargs=5: expected a mapping"),
], ids=["missing root", "unknown split", "unknown key", "key outside audio", "missing config", "unknown storage option",
        "storage option of another type"])
def test_input_mistakes_are_one_line_and_write_nothing(small_nsynth, tmp_path, capsys, mistake, expected):
    root, _, _ = small_nsynth
    out = tmp_path / "out"
    line = _error_line(_args(root, str(out)) + mistake(root, tmp_path), capsys)  # argparse: the last flag wins
    assert expected.format(split=SMALL_SPLIT) in line, line
    assert not out.exists(), "a refused run creates no output folder"


def test_the_module_itself_prints_one_line_and_exits_2(tmp_path):
    out = tmp_path / "out"
    line = process_error(["-m", "data_tools.shard", "--nsynth-root", str(tmp_path / "nowhere"), "--split", "train",
                          "--out", str(out), "--workers", "1"], PROG)
    assert line == (f"mars-shard: error: {tmp_path / 'nowhere'}/nsynth-train/examples.json: not found "
                    "(expected NSynth layout ROOT/nsynth-train/examples.json)")
    assert not out.exists()

"""mars-inspect (data_tools.inspect_shards): a clean set passes with a summary; each kind of damage is named with
its shard (exit 1); a location that is not there or cannot be read is one `mars-inspect: error:` line (exit 2)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile

import numpy as np
import pytest

from data_tools.inspect_shards import PROG, inspect_shards, main
from mars_dist.cli import run_cli
from tests.fixtures.cli import process_error, user_error


@pytest.fixture
def shard_copy(tiny_shards, tmp_path):
    folder = str(tmp_path / "train")
    shutil.copytree(tiny_shards["train"], folder)
    return folder


def _load(folder, name):
    return json.load(open(os.path.join(folder, name)))


def _dump(folder, name, obj):
    with open(os.path.join(folder, name), "w") as f:
        json.dump(obj, f)


def _rewrite_shard(folder, index, mutate):
    """Rebuild shard `index` with mutate([(member name, bytes)]) and make sidecar + manifest agree with it,
    so only decoding the samples can reveal what mutate broke."""
    name = f"shard-{index:06d}.tar"
    path = os.path.join(folder, name)
    with tarfile.open(path) as tar:
        members = mutate([(m.name, tar.extractfile(m).read()) for m in tar])
    keys, ranges = [], []
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member_name, data in members:
            key = member_name.partition(".")[0]
            if not keys or keys[-1] != key:
                keys.append(key)
                ranges.append([tar.offset, tar.offset])
            info = tarfile.TarInfo(member_name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            ranges[-1][1] = tar.offset
    blob = open(path, "rb").read()
    manifest = _load(folder, "manifest.json")
    shard = manifest["shards"][index]
    shard.update(bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest(), num_samples=len(keys))
    manifest["num_samples"] = sum(s["num_samples"] for s in manifest["shards"])
    _dump(folder, "manifest.json", manifest)
    sidecar = _load(folder, shard["index"])
    sidecar.update(keys=keys, ranges=ranges)
    _dump(folder, shard["index"], sidecar)


def _replace_first(suffix, make):
    def mutate(members):
        i = next(i for i, (name, _) in enumerate(members) if name.endswith(suffix))
        members[i] = (members[i][0], make(members[i][1]))
        return members
    return mutate


def _npy(x):
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def _without_pitch(data):
    labels = json.loads(data)
    del labels["pitch"]
    return json.dumps(labels).encode()


def test_clean_set_passes_with_a_summary(shard_copy, capsys):
    assert main([shard_copy, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "48 samples in 5 shards (8-10 per shard)" in out
    assert "bytes/note" in out and "instrument_family_str:" in out and "velocity:" in out and "pitch:" in out
    assert "channel mean:" in out and "OK: every sample of 48 decoded" in out


def _flip_byte(folder):
    path = os.path.join(folder, "shard-000002.tar")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 3] ^= 0x01
    open(path, "wb").write(bytes(data))


def _shift_range(folder):
    sidecar = _load(folder, "shard-000001.index.json")
    sidecar["ranges"][3][0] += 512
    _dump(folder, "shard-000001.index.json", sidecar)


def _drop_sidecar(folder):
    os.remove(os.path.join(folder, "shard-000000.index.json"))


def _drop_shard(folder):
    os.remove(os.path.join(folder, "shard-000004.tar"))


def _overstate_count(folder):
    manifest = _load(folder, "manifest.json")
    manifest["shards"][1]["num_samples"] += 1
    manifest["num_samples"] += 1
    _dump(folder, "manifest.json", manifest)


def _skew_stats(folder):
    manifest = _load(folder, "manifest.json")
    manifest["channel_std"][1] += 0.01
    _dump(folder, "manifest.json", manifest)


@pytest.mark.parametrize("damage,expected", [
    (_flip_byte, "shard-000002.tar: sha256"),
    (_shift_range, "shard-000001.tar: index sidecar gives sample"),
    (_drop_sidecar, "shard-000000.tar: index sidecar"),
    (_drop_shard, "shard-000004.tar: missing"),
    (_overstate_count, "shard-000001.tar: 10 samples in the tar, manifest says 11"),
    (_skew_stats, "manifest: channel_std="),
    (lambda f: _rewrite_shard(f, 3, _replace_first(".cmx.npy", lambda _: _npy(np.zeros((2, 256, 128), np.float16)))),
     "cmx.npy: float16 [2, 256, 128], expected float16 [2, 256, 256]"),
    (lambda f: _rewrite_shard(f, 3, _replace_first(".cmx.npy", lambda _: _npy(np.zeros((2, 256, 256), np.float32)))),
     "cmx.npy: float32 [2, 256, 256], expected float16"),
    (lambda f: _rewrite_shard(f, 3, _replace_first(".cmx.npy", lambda _: _npy(np.full((2, 256, 256), 3, np.float16)))),
     "outside the log scale's range"),
    (lambda f: _rewrite_shard(f, 3, _replace_first(".cmx.npy", lambda d: d[:200])), "not a readable .npy"),
    (lambda f: _rewrite_shard(f, 3, _replace_first(".json", _without_pitch)), "missing field(s) pitch"),
    (lambda f: _rewrite_shard(f, 3, lambda ms: [m for m in ms if not m[0].endswith(".json")][:1] + ms[2:]),
     "members ['cmx.npy'], expected ['cmx.npy', 'json']"),
], ids=["flipped byte", "wrong byte range", "missing sidecar", "missing shard", "count", "stats",
        "cmx shape", "cmx dtype", "cmx range", "truncated npy", "labels incomplete", "member missing"])
def test_damage_is_found_and_named(shard_copy, capsys, damage, expected):
    damage(shard_copy)
    assert main([shard_copy, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert expected in err, err


def test_every_damaged_shard_is_reported_not_just_the_first(shard_copy):
    _flip_byte(shard_copy)
    _drop_shard(shard_copy)
    report = inspect_shards(shard_copy)
    assert [p.split(":")[0] for p in report.problems] == ["shard-000002.tar", "shard-000004.tar", "manifest"]


def test_a_folder_without_a_manifest_is_a_problem_of_the_set(tmp_path, capsys):
    assert run_cli(main, PROG, [str(tmp_path), "--no-progress"]) == 1
    assert "no manifest" in capsys.readouterr().err


@pytest.mark.parametrize("url,storage_option,expected", [
    ("{tmp}/no-such-shards", None,
     "{tmp}/no-such-shards: no such folder or S3 prefix (expected a shard set's folder or s3://bucket/prefix, "
     "holding manifest.json)"),
    ("{tmp}/a-file", None,
     "{tmp}/a-file: is a file, not a folder (expected a shard set's folder holding manifest.json)"),
    ("s3://some-bucket/shards", "endpoint=http://127.0.0.1:9",
     "s3://some-bucket/shards: storage option 'endpoint' is not one s3fs takes (expected one of anon, "),
    ("s3://some-bucket/shards", "anon=maybe",
     "s3://some-bucket/shards: storage option anon='maybe': expected true or false"),
    ("s3://some-bucket/shards", "config_kwargs=5", "storage option config_kwargs=5: expected a mapping"),
], ids=["missing folder", "a file", "unknown storage option", "flag not true/false", "not a mapping"])
def test_a_location_that_is_not_there_is_one_error_line(tmp_path, capsys, url, storage_option, expected):
    (tmp_path / "a-file").write_text("not shards")
    options = ["--storage-option", storage_option] if storage_option else []
    argv = [url.format(tmp=tmp_path), "--no-progress", *options]
    assert expected.format(tmp=tmp_path) in user_error(capsys, main, PROG, argv)


def test_an_unreachable_endpoint_is_one_error_line(capsys, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    line = user_error(capsys, main, PROG, ["s3://some-bucket/shards", "--no-progress",
                                           "--storage-option", "endpoint_url=http://127.0.0.1:9",  # nothing listens
                                           "--storage-option", "config_kwargs={retries: {max_attempts: 1}}"])
    assert line.startswith("mars-inspect: error: s3://some-bucket/shards: cannot reach the S3 endpoint "
                           "http://127.0.0.1:9 ("), line


def test_a_malformed_storage_option_is_refused_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(main, PROG, [str(tmp_path), "--storage-option", "endpoint_url"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "mars-inspect: error: argument --storage-option: 'endpoint_url': expected KEY=VALUE (an fsspec/s3fs option)")


def test_the_module_itself_prints_one_line_and_exits_2(tmp_path):
    line = process_error(["-m", "data_tools.inspect_shards", str(tmp_path / "nowhere"), "--no-progress"], PROG)
    assert line.startswith(f"mars-inspect: error: {tmp_path / 'nowhere'}: no such folder or S3 prefix")

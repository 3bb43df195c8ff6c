"""data_tools.shard on bad input: every kind of bad note under --on-error fail and skip."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from data_tools.inspect_shards import inspect_shards
from data_tools.nsynth import NoteError, audio_path, examples_path, read_examples
from data_tools.shard import PROG, ShardingError, main, shard_nsynth
from data_tools.shard_writer import ShardJob, ShardTask, completed_record
from mars_dist.audio.config import AudioConfig
from mars_dist.cli import run_cli
from mars_dist.data import fs
from mars_dist.data.manifest import MANIFEST_NAME, read_manifest
from tests.fixtures.nsynth import SMALL_NUM_NOTES as NUM_NOTES
from tests.fixtures.nsynth import SMALL_SPLIT as SPLIT
from tests.fixtures.nsynth import write_examples


def _write_wav(path, wave, rate=16000, subtype="PCM_16"):
    sf.write(path, wave, rate, subtype=subtype, format="WAV")


def _tone(n=64000, channels=1):
    wave = 0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


# kind -> (how to break the note `key` of `raw` under `root`, a fragment of the expected problem)
def _missing(root, raw, key):
    os.remove(audio_path(root, SPLIT, key))


def _dangling_entry(root, raw, key):
    """An examples.json entry whose audio never existed (the note_str of another pitch)."""
    entry = dict(raw.pop(key))
    entry["pitch"] = (entry["pitch"] + 64) % 128
    entry["note_str"] = f"{entry['instrument_str']}-{entry['pitch']:03d}-{entry['velocity']:03d}"
    raw[entry["note_str"]] = entry
    os.remove(audio_path(root, SPLIT, key))
    return entry["note_str"]


def _corrupt(root, raw, key):
    with open(audio_path(root, SPLIT, key), "wb") as f:
        f.write(b"RIFF\x00\x01\x02\x03WAVEnot really a wave file" * 10)


def _truncated(root, raw, key):
    path = audio_path(root, SPLIT, key)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:5000])


def _stereo(root, raw, key):
    _write_wav(audio_path(root, SPLIT, key), _tone(channels=2))


def _wrong_rate(root, raw, key):
    _write_wav(audio_path(root, SPLIT, key), _tone(), rate=22050)


def _wrong_length(root, raw, key):
    _write_wav(audio_path(root, SPLIT, key), _tone(n=48000))


def _non_finite(root, raw, key):
    wave = _tone()
    wave[100] = np.nan
    _write_wav(audio_path(root, SPLIT, key), wave, subtype="FLOAT")


def _malformed_entry(root, raw, key):
    raw[key]["pitch"] = "sixty"


def _incomplete_entry(root, raw, key):
    del raw[key]["velocity"]


BAD_KINDS = {
    "missing wav": (_missing, "audio file does not exist"),
    "referenced file does not exist": (_dangling_entry, "audio file does not exist"),
    "corrupt wav": (_corrupt, "unreadable audio"),
    "truncated wav": (_truncated, "samples, expected 64000"),
    "stereo wav": (_stereo, "2 channels, expected 1"),
    "wrong-rate wav": (_wrong_rate, "sample rate 22050 Hz, expected 16000"),
    "wrong-length wav": (_wrong_length, "48000 samples, expected 64000"),
    "non-finite audio": (_non_finite, "NaN or infinite"),
    "malformed entry": (_malformed_entry, "field 'pitch'='sixty': expected an integer"),
    "incomplete entry": (_incomplete_entry, "missing field(s) velocity"),
}


@pytest.fixture
def small_root(small_nsynth):
    return small_nsynth


def _break(root, raw, key, kind):
    """Apply `kind` to note `key`; returns the note_str the sharder will report."""
    reported = BAD_KINDS[kind][0](root, raw, key)
    write_examples(root, SPLIT, raw)
    return reported or key


def _assert_no_manifest_and_records_vouch_for_their_tars(out):
    names = os.listdir(out) if os.path.isdir(out) else []
    assert MANIFEST_NAME not in names
    for name in names:
        if name.endswith(".index.json"):
            record = json.load(open(os.path.join(out, name)))
            tar = os.path.join(out, record["shard"])
            assert os.path.getsize(tar) == record["bytes"] and fs.sha256_of(tar) == record["sha256"]


@pytest.mark.parametrize("kind", list(BAD_KINDS))
def test_on_error_fail_stops_naming_note_and_problem(small_root, tmp_path, kind):
    root, raw, keys = small_root
    bad = _break(root, raw, keys[5], kind)
    out = str(tmp_path / "out")
    with pytest.raises(NoteError) as info:
        shard_nsynth(root, SPLIT, out, AudioConfig(), shard_size=2, workers=1, on_error="fail", progress=False)
    assert info.value.note_str == bad
    assert BAD_KINDS[kind][1] in str(info.value)
    _assert_no_manifest_and_records_vouch_for_their_tars(out)


def test_on_error_skip_lists_every_bad_note_and_goes_on(small_root, tmp_path):
    root, raw, keys = small_root
    expected = {}
    for key, kind in zip(keys, BAD_KINDS):
        expected[_break(root, raw, key, kind)] = BAD_KINDS[kind][1]
    out = str(tmp_path / "out")
    manifest = shard_nsynth(root, SPLIT, out, AudioConfig(), shard_size=3, workers=1, on_error="skip",
                            progress=False)
    assert manifest["num_samples"] == NUM_NOTES - len(BAD_KINDS)
    skipped = {item["note_str"]: item["problem"] for item in manifest["skipped"]}
    assert set(skipped) == set(expected)
    for note_str, fragment in expected.items():
        assert fragment in skipped[note_str], (note_str, skipped[note_str])
    report = inspect_shards(out)
    assert report.ok, report.problems
    assert report.samples == NUM_NOTES - len(BAD_KINDS)

    # The same input under "fail" stops at the first bad entry, before touching the finished set.
    with pytest.raises(NoteError):
        shard_nsynth(root, SPLIT, out, AudioConfig(), shard_size=3, workers=1, on_error="fail", progress=False)
    assert inspect_shards(out).ok


def test_under_fail_a_shard_that_skipped_notes_is_not_reused(small_root, tmp_path):
    root, raw, keys = small_root
    bad = _break(root, raw, keys[3], "stereo wav")
    out = str(tmp_path / "out")
    shard_nsynth(root, SPLIT, out, AudioConfig(), shard_size=4, workers=1, on_error="skip", progress=False)
    with pytest.raises(NoteError, match=bad):
        shard_nsynth(root, SPLIT, out, AudioConfig(), shard_size=4, workers=1, on_error="fail", progress=False)
    _assert_no_manifest_and_records_vouch_for_their_tars(out)


def test_cli_on_error_fail_exits_with_one_line_naming_the_note(small_root, tmp_path, capsys):
    root, raw, keys = small_root
    bad = _break(root, raw, keys[0], "stereo wav")
    assert run_cli(main, PROG, ["--nsynth-root", root, "--split", SPLIT, "--out", str(tmp_path / "out"),
                                "--workers", "1", "--no-progress"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"mars-shard: error: note '{bad}': {audio_path(root, SPLIT, bad)}: 2 channels, expected 1 (mono)"]


def test_a_fail_run_keeps_finished_shards_for_the_next_run(small_root, tmp_path):
    root, raw, keys = small_root
    out = str(tmp_path / "out")
    reference = shard_nsynth(root, SPLIT, str(tmp_path / "reference"), AudioConfig(), shard_size=2, workers=1,
                             progress=False)
    # Break the note that lands in the last shard: every earlier shard completes before the failure.
    last_key = json.load(open(os.path.join(tmp_path / "reference", reference["shards"][-1]["index"])))["keys"][0]
    original = open(audio_path(root, SPLIT, last_key), "rb").read()
    _break(root, raw, last_key, "wrong-length wav")
    with pytest.raises(NoteError):
        shard_nsynth(root, SPLIT, out, AudioConfig(), shard_size=2, workers=1, progress=False)
    _assert_no_manifest_and_records_vouch_for_their_tars(out)
    finished = sorted(n for n in os.listdir(out) if n.endswith(".index.json"))
    assert len(finished) == len(reference["shards"]) - 1

    with open(audio_path(root, SPLIT, last_key), "wb") as f:
        f.write(original)
    stamps = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in finished}
    manifest = shard_nsynth(root, SPLIT, out, AudioConfig(), shard_size=2, workers=1, progress=False)
    assert manifest["shards"] == reference["shards"]
    assert stamps == {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in finished}
    assert read_manifest(out)["num_samples"] == NUM_NOTES


def test_unreadable_examples_json_stops_even_under_skip(small_root, tmp_path):
    root, _, _ = small_root
    with open(examples_path(root, SPLIT), "w") as f:
        f.write("{not json")
    with pytest.raises(ShardingError, match="examples.json: not valid JSON"):
        shard_nsynth(root, SPLIT, str(tmp_path / "out"), AudioConfig(), on_error="skip", workers=1, progress=False)


def test_completion_record_of_another_plan_is_not_trusted(tiny_shards, tmp_path):
    out = str(tmp_path / "train")
    shutil.copytree(tiny_shards["train"], out)
    record = json.load(open(os.path.join(out, "shard-000000.index.json")))
    entries = {e.note_str: e for e in read_examples(tiny_shards["nsynth_root"], "train")}
    job = ShardJob(tiny_shards["nsynth_root"], "train", out, AudioConfig(), False, "fail", {})
    task = ShardTask(0, tuple(entries[k] for k in record["keys"]), record["plan"])
    assert completed_record(job, task) == record
    assert completed_record(job, ShardTask(0, task.entries, "0" * 64)) is None
    with open(os.path.join(out, "shard-000000.tar"), "r+b") as f:
        f.seek(2000)
        f.write(b"\xff")
    assert completed_record(job, task) is None, "same size but another sha256"

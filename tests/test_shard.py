"""data_tools.shard: the shard layout and content, the global shuffle, determinism, and the CLI."""
from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pytest
import soundfile as sf

from data_tools.nsynth import audio_path, load_note, read_examples
from data_tools.shard import PROG, ShardingError, main, plan_shards, shard_nsynth
from data_tools.shard_writer import ChannelStats
from mars_dist.audio.config import AudioConfig
from mars_dist.audio.frontend import AudioFrontend
from mars_dist.cli import run_cli
from mars_dist.data.manifest import FORMAT, read_manifest


def _members_in_range(shard_path, start, end):
    with open(shard_path, "rb") as f:
        f.seek(start)
        blob = f.read(end - start)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def test_tiny_shards_follow_the_contract(tiny_shards):
    folder = tiny_shards["train"]
    manifest = read_manifest(folder)
    assert manifest["format"] == FORMAT and manifest["split"] == "train" and manifest["seed"] == 0
    assert [s["num_samples"] for s in manifest["shards"]] == [10, 10, 10, 10, 8]
    assert manifest["num_samples"] == 48 and manifest["skipped"] == []
    frontend = AudioFrontend(AudioConfig())
    assert manifest["audio"] == json.loads(json.dumps(frontend.describe()))
    assert manifest["cmx_shape"] == [2, 256, 256]
    expected_files = {"manifest.json"} | {s["name"] for s in manifest["shards"]} | {s["index"] for s in manifest["shards"]}
    assert set(os.listdir(folder)) == expected_files

    entries = {e.note_str: e for e in read_examples(tiny_shards["nsynth_root"], "train")}
    keys_in_order = []
    x_all = []
    for shard in manifest["shards"]:
        path = os.path.join(folder, shard["name"])
        assert os.path.getsize(path) == shard["bytes"]
        sidecar = json.load(open(os.path.join(folder, shard["index"])))
        assert len(sidecar["keys"]) == len(sidecar["ranges"]) == shard["num_samples"]
        for key, (start, end) in zip(sidecar["keys"], sidecar["ranges"]):
            members = _members_in_range(path, start, end)  # random access through the sidecar alone
            assert set(members) == {f"{key}.cmx.npy", f"{key}.json"}
            x = np.load(io.BytesIO(members[f"{key}.cmx.npy"]))
            assert x.dtype == np.float16 and x.shape == (2, 256, 256)
            assert json.loads(members[f"{key}.json"]) == entries[key].to_json()
            x_all.append(x)
            keys_in_order.append(key)
    assert sorted(keys_in_order) == sorted(entries), "every note exactly once"
    assert keys_in_order != sorted(keys_in_order), "notes are shuffled across shards"
    planned = [e.note_str for shard in plan_shards(sorted(entries.values(), key=lambda e: e.note_str), 0, 10)
               for e in shard]
    assert keys_in_order == planned

    first = entries[keys_in_order[0]]
    wave = load_note(tiny_shards["nsynth_root"], "train", first)
    np.testing.assert_array_equal(x_all[0], frontend.wave_to_cmx(wave).numpy().astype(np.float16))

    x_NCHW = np.stack(x_all).astype(np.float64)
    np.testing.assert_allclose(manifest["channel_mean"], x_NCHW.mean(axis=(0, 2, 3)), atol=1e-9)
    np.testing.assert_allclose(manifest["channel_std"], x_NCHW.std(axis=(0, 2, 3)), atol=1e-9)


def test_plan_is_a_seeded_global_shuffle(synthetic_nsynth_root):
    entries = read_examples(synthetic_nsynth_root, "train")
    keys = lambda plan: [e.note_str for shard in plan for e in shard]  # noqa: E731
    assert keys(plan_shards(entries, 3, 7)) == keys(plan_shards(entries, 3, 7))
    assert keys(plan_shards(entries, 3, 7)) != keys(plan_shards(entries, 4, 7))
    assert [len(s) for s in plan_shards(entries, 3, 7)] == [7] * 6 + [6]
    assert keys(plan_shards(entries, 3, 7)) == keys(plan_shards(entries, 3, 100)), "shard size only cuts"


def test_channel_stats_merge_matches_numpy():
    rng = np.random.default_rng(0)
    xs = [rng.normal(loc=c, scale=1 + c, size=(3, 4, 5)) for c in range(6)]
    merged = ChannelStats.empty(3)
    for x in xs:
        merged = merged.merge(ChannelStats.of_sample(x))
    merged = ChannelStats.from_json(json.loads(json.dumps(merged.to_json())))
    stacked = np.stack(xs)
    np.testing.assert_allclose(merged.mean_C, stacked.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(merged.std_C(), stacked.std(axis=(0, 2, 3)), rtol=1e-12)


def test_with_audio_stores_the_original_samples_and_a_rerun_reuses_everything(synthetic_nsynth_root, tmp_path):
    out = str(tmp_path / "valid")
    manifest = shard_nsynth(synthetic_nsynth_root, "valid", out, AudioConfig(), shard_size=6, workers=1,
                            with_audio=True, progress=False)
    assert manifest["members"] == ["cmx.npy", "json", "flac"]
    entry = read_examples(synthetic_nsynth_root, "valid")[0]
    for shard in manifest["shards"]:
        sidecar = json.load(open(os.path.join(out, shard["index"])))
        if entry.note_str in sidecar["keys"]:
            start, end = sidecar["ranges"][sidecar["keys"].index(entry.note_str)]
            flac = _members_in_range(os.path.join(out, shard["name"]), start, end)[f"{entry.note_str}.flac"]
    decoded, rate = sf.read(io.BytesIO(flac), dtype="int16")
    original, _ = sf.read(audio_path(synthetic_nsynth_root, "valid", entry.note_str), dtype="int16")
    assert rate == 16000
    np.testing.assert_array_equal(decoded, original)

    stamps = {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in os.listdir(out) if name.endswith(".tar")}
    again = shard_nsynth(synthetic_nsynth_root, "valid", out, AudioConfig(), shard_size=6, workers=1,
                         with_audio=True, progress=False)
    assert again["shards"] == manifest["shards"]
    assert stamps == {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in stamps}, "complete shards are reused"


def test_changed_settings_rewrite_the_shards(synthetic_nsynth_root, tmp_path, tiny_shards):
    out = str(tmp_path / "valid")
    contiguous = AudioConfig()
    contiguous.cmx.layout = "contiguous"
    first = shard_nsynth(synthetic_nsynth_root, "valid", out, contiguous, shard_size=10, workers=1, progress=False)
    second = shard_nsynth(synthetic_nsynth_root, "valid", out, AudioConfig(), shard_size=10, workers=1,
                          progress=False)
    assert first["audio"]["cmx"]["layout"] == "contiguous" and second["audio"]["cmx"]["layout"] == "interleaved"
    assert [s["sha256"] for s in second["shards"]] == [s["sha256"] for s in tiny_shards["manifests"]["valid"]["shards"]]
    assert {s["sha256"] for s in first["shards"]}.isdisjoint(s["sha256"] for s in second["shards"])


def test_cli_applies_audio_overrides_and_rejects_others(synthetic_nsynth_root, tmp_path, capsys):
    out = str(tmp_path / "valid")
    code = main(["--nsynth-root", synthetic_nsynth_root, "--split", "valid", "--out", out, "--shard-size", "16",
                 "--workers", "1", "--seed", "5", "--no-progress", "audio.cmx.factors=[4,1]"])
    assert code == 0
    manifest = read_manifest(out)
    assert manifest["cmx_shape"] == [4, 128, 256] and manifest["seed"] == 5 and len(manifest["shards"]) == 1
    assert "16 samples in 1 shards" in capsys.readouterr().out

    for override, fragment in (("audio.cmx.layuot=contiguous", "audio.cmx.layout"),  # the closest valid key
                               ("train.steps=3", "only uses audio.*")):
        assert run_cli(main, PROG, ["--nsynth-root", synthetic_nsynth_root, "--split", "valid", "--out", out,
                                    override]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("mars-shard: error: ") and fragment in line


def test_bad_arguments_are_refused(synthetic_nsynth_root, tmp_path):
    with pytest.raises(ShardingError, match="shard_size=0"):
        shard_nsynth(synthetic_nsynth_root, "valid", str(tmp_path), AudioConfig(), shard_size=0, progress=False)
    with pytest.raises(ShardingError, match="on_error='ignore'"):
        shard_nsynth(synthetic_nsynth_root, "valid", str(tmp_path), AudioConfig(), on_error="ignore", progress=False)
    with pytest.raises(ShardingError, match="nsynth-test/examples.json: not found"):
        shard_nsynth(synthetic_nsynth_root, "test", str(tmp_path), AudioConfig(), progress=False)

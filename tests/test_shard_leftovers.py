"""data_tools.shard leaves exactly what its manifest lists: another plan's shards and every staging file
are removed (after the new manifest is committed), files the sharder did not write are left alone."""
from __future__ import annotations

import os
import tempfile

import pytest
import soundfile as sf

from data_tools.inspect_shards import inspect_shards
from data_tools.nsynth import NoteError, audio_path, read_examples
from data_tools.shard import plan_shards, shard_nsynth
from mars_dist.audio.config import AudioConfig
from mars_dist.data import fs
from tests.fixtures.nsynth import SMALL_NUM_NOTES, SMALL_SPLIT


def _listed(manifest):
    return {"manifest.json"} | {name for s in manifest["shards"] for name in (s["name"], s["index"])}


def _shard(root, out, **settings):
    return shard_nsynth(root, SMALL_SPLIT, out, AudioConfig(), progress=False, **settings)


def test_resharding_with_another_shard_size_removes_the_old_plans_files(small_nsynth, tmp_path):
    root, _, _ = small_nsynth
    out = str(tmp_path / "out")
    assert len(_shard(root, out, shard_size=3, workers=1)["shards"]) == 5
    with open(os.path.join(out, "README.txt"), "w") as f:
        f.write("not the sharder's")
    manifest = _shard(root, out, shard_size=7, workers=1)
    assert set(os.listdir(out)) == _listed(manifest) | {"README.txt"}
    assert inspect_shards(out).ok


def test_resharding_on_s3_removes_the_old_plans_objects(small_nsynth, s3_url):
    root, _, _ = small_nsynth
    _shard(root, s3_url, shard_size=3, workers=1)
    manifest = _shard(root, s3_url, shard_size=7, workers=1)
    assert set(fs.list_names(s3_url)) == _listed(manifest)


def test_a_failed_two_worker_run_leaves_no_staging_files(small_nsynth, tmp_path):
    root, _, _ = small_nsynth
    out = str(tmp_path / "out")
    shard_size = SMALL_NUM_NOTES - 1  # shard 0: 13 notes; shard 1: one note, which fails at once
    lone = plan_shards(read_examples(root, SMALL_SPLIT), 0, shard_size)[1][0].note_str
    path = audio_path(root, SMALL_SPLIT, lone)
    wave, rate = sf.read(path)
    sf.write(path, wave[:1000], rate)
    with pytest.raises(NoteError, match=lone):
        _shard(root, out, shard_size=shard_size, workers=2)  # the other worker is stopped mid-shard
    assert [name for name in os.listdir(out) if name.endswith(".tmp")] == []


def test_staging_files_of_a_killed_run_are_removed(small_nsynth, tmp_path):
    root, _, _ = small_nsynth
    out = str(tmp_path / "out")
    os.makedirs(out)
    for target in ("shard-000000.tar", "shard-000001.index.json", "manifest.json"):  # named as the writers name them
        os.close(tempfile.mkstemp(dir=out, prefix=f".{target}.", suffix=".tmp")[0])
    manifest = _shard(root, out, shard_size=7, workers=1)
    assert set(os.listdir(out)) == _listed(manifest)

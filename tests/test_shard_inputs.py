"""data_tools.shard re-runs: a shard is reused only while its inputs (audio files, labels) are unchanged,
and exactly the shards whose inputs changed are rewritten, ending where a fresh run would."""
from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import soundfile as sf

from data_tools.inspect_shards import inspect_shards
from data_tools.nsynth import audio_path, load_note, read_examples
from data_tools.shard import shard_nsynth
from mars_dist.audio.config import AudioConfig
from mars_dist.audio.frontend import AudioFrontend
from mars_dist.labels import QUALITIES
from tests.fixtures.nsynth import SMALL_NUM_NOTES, SMALL_SPLIT, write_examples

SHARD_SIZE = 4  # 14 notes -> 4 shards


def _shard(root, out, **settings):
    return shard_nsynth(root, SMALL_SPLIT, out, AudioConfig(), shard_size=SHARD_SIZE, workers=1, progress=False,
                        **settings)


def _tar_stamps(out):
    return {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in os.listdir(out) if name.endswith(".tar")}


def _rewritten(before, out):
    after = _tar_stamps(out)
    return sorted(name for name in before if after[name] != before[name])


def _sample(out, manifest, key):
    """(shard name, {member suffix: bytes}) of sample `key`, read through its sidecar's byte range."""
    for shard in manifest["shards"]:
        sidecar = json.load(open(os.path.join(out, shard["index"])))
        if key in sidecar["keys"]:
            start, end = sidecar["ranges"][sidecar["keys"].index(key)]
            with open(os.path.join(out, shard["name"]), "rb") as f:
                f.seek(start)
                with tarfile.open(fileobj=io.BytesIO(f.read(end - start))) as tar:
                    return shard["name"], {m.name[len(key) + 1:]: tar.extractfile(m).read() for m in tar}
    raise AssertionError(f"{key} is in no shard")


def _stored_cmx(out, manifest, key):
    return np.load(io.BytesIO(_sample(out, manifest, key)[1]["cmx.npy"]))


def _expected_cmx(root, key):
    entry = next(e for e in read_examples(root, SMALL_SPLIT) if e.note_str == key)
    return AudioFrontend(AudioConfig()).wave_to_cmx(load_note(root, SMALL_SPLIT, entry)).numpy().astype(np.float16)


def _scale_wav(path, gain_db):
    """Rewrite the wav (same format, same size) with its gain changed, as an audio editor would."""
    wave, rate = sf.read(path, dtype="float32")
    sf.write(path, wave * 10 ** (gain_db / 20), rate, subtype=sf.info(path).subtype, format="WAV")


def test_fixing_a_skipped_note_rewrites_its_shard_and_includes_it(small_nsynth, tmp_path):
    root, _, keys = small_nsynth
    key, out = keys[3], str(tmp_path / "out")
    path = audio_path(root, SMALL_SPLIT, key)
    mono = open(path, "rb").read()
    wave, rate = sf.read(path, dtype="float32")
    sf.write(path, np.stack([wave, wave], axis=1), rate, subtype="PCM_16")  # the held-out set's stereo note
    first = _shard(root, out, on_error="skip")
    assert [item["note_str"] for item in first["skipped"]] == [key]
    before = _tar_stamps(out)

    with open(path, "wb") as f:  # fixed: made mono
        f.write(mono)
    second = _shard(root, out, on_error="skip")
    assert second["skipped"] == [] and second["num_samples"] == SMALL_NUM_NOTES
    assert _rewritten(before, out) == [_sample(out, second, key)[0]], "exactly the shard holding the fixed note"
    np.testing.assert_array_equal(_stored_cmx(out, second, key), _expected_cmx(root, key))
    assert second["shards"] == _shard(root, str(tmp_path / "fresh"), on_error="skip")["shards"]
    assert inspect_shards(out).ok


def test_a_gain_change_rewrites_the_shard_with_the_new_audio(small_nsynth, tmp_path):
    root, _, keys = small_nsynth
    key, out = keys[6], str(tmp_path / "out")
    first = _shard(root, out)
    old = _stored_cmx(out, first, key)
    before = _tar_stamps(out)

    _scale_wav(audio_path(root, SMALL_SPLIT, key), -12.0)
    second = _shard(root, out)
    new = _stored_cmx(out, second, key)
    np.testing.assert_array_equal(new, _expected_cmx(root, key))
    assert np.abs(new.astype(np.float32) - old).max() > 0.1, "-12 dB is 0.16 on the [-1, 1] log scale"
    assert _rewritten(before, out) == [_sample(out, second, key)[0]]
    assert second["shards"] == _shard(root, str(tmp_path / "fresh"))["shards"]


def test_changed_labels_in_examples_json_rewrite_the_shard(small_nsynth, tmp_path):
    root, raw, keys = small_nsynth
    key, out = keys[9], str(tmp_path / "out")
    first = _shard(root, out)
    before = _tar_stamps(out)

    entry = raw[key]
    entry["qualities"][QUALITIES.index("reverb")] ^= 1
    entry["qualities_str"] = [name for name, q in zip(QUALITIES, entry["qualities"]) if q]
    write_examples(root, SMALL_SPLIT, raw)
    second = _shard(root, out)
    assert json.loads(_sample(out, second, key)[1]["json"]) == entry
    assert _rewritten(before, out) == [_sample(out, first, key)[0]]


def test_verify_content_compares_hashes_instead_of_mtimes(small_nsynth, tmp_path):
    root, _, keys = small_nsynth
    key, out = keys[1], str(tmp_path / "out")
    path = audio_path(root, SMALL_SPLIT, key)
    first = _shard(root, out)
    shard_of_key = _sample(out, first, key)[0]

    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))  # touched (or copied): same content
    before = _tar_stamps(out)
    _shard(root, out, verify_content=True)
    assert _rewritten(before, out) == [], "same content: every shard reused"

    stat = os.stat(path)
    _scale_wav(path, -6.0)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # other content, same size and mtime
    _shard(root, out)
    assert _rewritten(before, out) == [], "the default compares size + mtime only"
    second = _shard(root, out, verify_content=True)
    assert _rewritten(before, out) == [shard_of_key]
    np.testing.assert_array_equal(_stored_cmx(out, second, key), _expected_cmx(root, key))

"""data_tools.nsynth: reading the NSynth layout and rejecting every kind of bad note by name."""
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import soundfile as sf

from data_tools.nsynth import (
    FAMILIES, QUALITIES, LayoutError, NoteError, NSynthEntry, audio_path, examples_path, load_note, read_examples,
)
from mars_dist.audio.config import STFTConfig


def test_reads_both_fixture_splits_with_every_field(synthetic_nsynth_root):
    train = read_examples(synthetic_nsynth_root, "train")
    valid = read_examples(synthetic_nsynth_root, "valid")
    assert len(train) == 48 and len(valid) == 16
    assert not {e.note_str for e in train} & {e.note_str for e in valid}
    assert [e.note_str for e in train] == sorted(e.note_str for e in train)
    raw = json.load(open(examples_path(synthetic_nsynth_root, "train")))
    for entry in train:
        assert entry.to_json() == raw[entry.note_str]
        assert entry.instrument_family_str == FAMILIES[entry.instrument_family]
        assert len(entry.qualities) == len(QUALITIES)
    wave = load_note(synthetic_nsynth_root, "valid", valid[0])
    assert wave.shape == (64000,) and wave.dtype == np.float32 and 0 < np.abs(wave).max() <= 1.0


def test_entries_and_errors_pickle(synthetic_nsynth_root):
    entry = read_examples(synthetic_nsynth_root, "valid")[0]
    assert pickle.loads(pickle.dumps(entry)) == entry
    err = pickle.loads(pickle.dumps(NoteError("x_y_001-060-100", "broken")))
    assert (err.note_str, err.problem, str(err)) == ("x_y_001-060-100", "broken", "note 'x_y_001-060-100': broken")


@pytest.fixture
def nsynth_copy(synthetic_nsynth_root, tmp_path):
    """A private copy of the valid split to corrupt; returns (root, one entry's JSON dict)."""
    shutil.copytree(os.path.join(synthetic_nsynth_root, "nsynth-valid"), tmp_path / "nsynth-valid")
    raw = json.load(open(examples_path(str(tmp_path), "valid")))
    return str(tmp_path), raw


def _rewrite(root, raw):
    with open(examples_path(root, "valid"), "w") as f:
        json.dump(raw, f)


@pytest.mark.parametrize("mutate,message", [
    (lambda e: e.pop("pitch"), "missing field\\(s\\) pitch"),
    (lambda e: e.update(velocity="100"), "field 'velocity'='100': expected an integer"),
    (lambda e: e.update(pitch=True), "field 'pitch'=True: expected an integer"),
    (lambda e: e.update(sample_rate=44100), "sample_rate=44100: expected 16000"),
    (lambda e: e.update(note_str="other"), "note_str='other' differs from its key"),
    (lambda e: e.update(pitch=(e["pitch"] + 1) % 128), "does not match instrument_str/pitch/velocity"),
    (lambda e: e.update(qualities=[0] * 9), "expected a list of 10 ints"),
    (lambda e: e.update(qualities_str=["multiphonic"]), "field 'qualities_str'=\\['multiphonic'\\]: expected"),
    (lambda e: e.update(instrument_family_str="banjo"), "instrument_family_str='banjo': expected"),
    (lambda e: e.update(instrument_source=7), "instrument_source=7: expected 0..2"),
    (lambda e: e.update(instrument_str="bass_electronic_1"), "instrument_str='bass_electronic_1': expected"),
])
def test_malformed_entry_names_note_and_field(nsynth_copy, mutate, message):
    root, raw = nsynth_copy
    key = sorted(raw)[3]
    mutate(raw[key])
    _rewrite(root, raw)
    with pytest.raises(NoteError, match=message) as info:
        read_examples(root, "valid")
    assert info.value.note_str == key
    assert info.value.problem.startswith(f"{examples_path(root, 'valid')} entry: "), "names which examples.json"
    errors = []
    entries = read_examples(root, "valid", errors=errors)
    assert len(entries) == 15 and [e.note_str for e in errors] == [key]


def test_entry_that_is_not_an_object(nsynth_copy):
    root, raw = nsynth_copy
    raw["bass_electronic_000-040-100"] = [1, 2]
    _rewrite(root, raw)
    with pytest.raises(NoteError, match="bass_electronic_000-040-100.*expected a JSON object, got list"):
        read_examples(root, "valid")


def test_layout_errors_name_the_file(tmp_path):
    with pytest.raises(LayoutError, match=r"nsynth-test.examples\.json: not found"):
        read_examples(str(tmp_path), "test")
    os.makedirs(tmp_path / "nsynth-test")
    (tmp_path / "nsynth-test" / "examples.json").write_text("{not json")
    with pytest.raises(LayoutError, match="not valid JSON"):
        read_examples(str(tmp_path), "test")
    (tmp_path / "nsynth-test" / "examples.json").write_text("[]")
    with pytest.raises(LayoutError, match="expected a JSON object keyed by note_str, got list"):
        read_examples(str(tmp_path), "test")


def _write_bad_wav(path, kind):
    if kind == "missing":
        os.remove(path)
    elif kind == "corrupt":
        with open(path, "wb") as f:
            f.write(b"RIFF\x00\x00garbage" * 10)
    elif kind == "stereo":
        sf.write(path, np.zeros((64000, 2), np.float32), 16000, subtype="PCM_16")
    elif kind == "rate":
        sf.write(path, np.zeros(64000, np.float32), 44100, subtype="PCM_16")
    elif kind == "length":
        sf.write(path, np.zeros(63000, np.float32), 16000, subtype="PCM_16")


@pytest.mark.parametrize("kind,message", [
    ("missing", "audio file does not exist"),
    ("corrupt", "unreadable audio"),
    ("stereo", "2 channels, expected 1 \\(mono\\)"),
    ("rate", "sample rate 44100 Hz, expected 16000"),
    ("length", "63000 samples, expected 64000"),
])
def test_bad_wav_names_note_file_and_expectation(nsynth_copy, kind, message):
    root, _ = nsynth_copy
    entry = read_examples(root, "valid")[5]
    path = audio_path(root, "valid", entry.note_str)
    _write_bad_wav(path, kind)
    with pytest.raises(NoteError, match=message) as info:
        load_note(root, "valid", entry)
    assert info.value.note_str == entry.note_str and path in str(info.value)


def test_length_and_rate_come_from_the_stft_config(nsynth_copy):
    root, _ = nsynth_copy
    entry = read_examples(root, "valid")[2]
    path = audio_path(root, "valid", entry.note_str)
    four_seconds = load_note(root, "valid", entry)
    eight = STFTConfig(num_samples=128000, num_frames=512)
    with pytest.raises(NoteError, match=r"64000 samples, expected 128000 \(audio.stft.num_samples\)"):
        load_note(root, "valid", entry, eight)
    sf.write(path, np.tile(four_seconds, 2), 16000, subtype="PCM_16")
    np.testing.assert_array_equal(load_note(root, "valid", entry, eight), np.tile(four_seconds, 2))
    at_32k = STFTConfig(sample_rate=32000, num_samples=256000, num_frames=1024)
    with pytest.raises(NoteError, match=r"sample rate 16000 Hz, expected 32000 \(audio.stft.sample_rate"):
        load_note(root, "valid", entry, at_32k)
    assert load_note(root, "valid", entry, at_32k, resample=True).shape == (256000,)
    with pytest.raises(NoteError, match="128000 samples at 16000 Hz = 256000 at 32000 Hz, expected 128000"):
        load_note(root, "valid", entry, STFTConfig(sample_rate=32000, num_samples=128000), resample=True)


def test_from_json_round_trip(synthetic_nsynth_root):
    entry = read_examples(synthetic_nsynth_root, "train")[0]
    assert NSynthEntry.from_json(entry.note_str, entry.to_json()) == entry

"""mars-synthetic (data_tools.synthetic): NSynth's layout and fields, determinism, notes that carry pitch and
timbre, and one `mars-synthetic: error:` line (exit 2, nothing written) for a user's mistake."""
import hashlib
import os
import re

import numpy as np
import pytest

from data_tools import synthetic
from data_tools.nsynth import load_note, read_examples
from data_tools.synthetic import (
    PITCH_RANGE, PROG, instrument_pool, make_instrument, plan_splits, render_note, write_synthetic_nsynth,
)
from mars_dist.cli import run_cli
from mars_dist.errors import UserValueError
from mars_dist.labels import FAMILIES, SOURCES, VELOCITY_LEVELS
from tests.fixtures.cli import process_error, user_error

NOTE_STR = re.compile(r"^(%s)_(%s)_(\d{3})-(\d{3})-(\d{3})$" % ("|".join(FAMILIES), "|".join(SOURCES)))


def _digests(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def test_fixture_set_is_valid_nsynth_with_consistent_labels(synthetic_nsynth_root):
    for split, n in (("train", 48), ("valid", 16)):
        entries = read_examples(synthetic_nsynth_root, split)  # validates every field
        assert len(entries) == n
        for e in entries:
            m = NOTE_STR.match(e.note_str)
            assert m, e.note_str
            assert (m.group(1), m.group(2)) == (e.instrument_family_str, e.instrument_source_str)
            assert (int(m.group(4)), int(m.group(5))) == (e.pitch, e.velocity)
            assert e.velocity in VELOCITY_LEVELS
            lo, hi = PITCH_RANGE[e.instrument_family_str]
            assert lo <= e.pitch <= hi
            assert load_note(synthetic_nsynth_root, split, e).shape == (64000,)
    instruments = {}
    for e in read_examples(synthetic_nsynth_root, "train") + read_examples(synthetic_nsynth_root, "valid"):
        assert instruments.setdefault(e.instrument, e.instrument_str) == e.instrument_str


def test_same_seed_gives_bit_identical_files_and_another_seed_does_not(tmp_path):
    splits = [("train", 5), ("valid", 2)]
    write_synthetic_nsynth(str(tmp_path / "a"), splits, seed=3)
    write_synthetic_nsynth(str(tmp_path / "b"), splits, seed=3)
    write_synthetic_nsynth(str(tmp_path / "c"), splits, seed=4)
    a, b, c = (_digests(tmp_path / x) for x in "abc")
    assert a == b and len(a) == 7 + 2
    assert a != c


def test_a_split_does_not_depend_on_the_sizes_of_later_splits():
    small = plan_splits([("train", 10), ("valid", 2)], seed=0, per_group=4)
    large = plan_splits([("train", 10), ("valid", 50)], seed=0, per_group=4)
    assert [n.entry() for n in small["train"]] == [n.entry() for n in large["train"]]
    assert [n.entry() for n in small["valid"]] == [n.entry() for n in large["valid"][:2]]


def test_asking_for_more_notes_than_exist_names_the_option():
    with pytest.raises(UserValueError, match="raise --instruments-per-group"):
        plan_splits([("train", 10**6)], seed=0, per_group=1)
    with pytest.raises(UserValueError, match="split names must be distinct"):
        plan_splits([("train", 1), ("train", 1)], seed=0, per_group=1)


def _spectrum(wave):
    """Magnitude spectrum of the sustained part (0.25-2.25 s) with 0.5 Hz bins."""
    seg = wave[4000:36000].astype(np.float64) * np.hanning(32000)
    return np.abs(np.fft.rfft(seg)), np.fft.rfftfreq(32000, 1 / 16000)


@pytest.mark.parametrize("family", ["organ", "reed", "keyboard", "mallet", "flute"])
def test_pitch_sets_the_fundamental_exactly(family):
    inst = make_instrument(0, family, synthetic.FAMILY_SOURCES[family][0], 0, 0)
    pitch = 69 if family != "flute" else 81  # A4 = 440 Hz, A5 = 880 Hz
    spec, freqs = _spectrum(render_note(inst, pitch, 100, seed=0))
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    band = (freqs > 0.75 * f0) & (freqs < 1.25 * f0)
    assert abs(freqs[band][np.argmax(spec[band])] - f0) <= 0.5


def test_mallets_are_inharmonic_and_organs_harmonic():
    def energy_near(wave, hz):
        spec, freqs = _spectrum(wave)
        return spec[np.abs(freqs - hz) < 5].max() / spec.max()

    f0 = 440.0
    mallet = render_note(make_instrument(0, "mallet", "acoustic", 0, 0), 69, 100, seed=0)
    organ = render_note(make_instrument(0, "organ", "electronic", 0, 1), 69, 100, seed=0)
    assert energy_near(mallet, 2.756 * f0) > 0.01 and energy_near(mallet, 2 * f0) < 0.003
    assert energy_near(organ, 2 * f0) > 0.01 and energy_near(organ, 2.756 * f0) < 0.003


def test_velocity_sets_loudness_and_envelopes_follow_the_family():
    inst = make_instrument(0, "guitar", "acoustic", 0, 0)
    rms = [np.sqrt(np.mean(render_note(inst, 60, v, seed=0) ** 2)) for v in VELOCITY_LEVELS]
    assert all(b > 1.5 * a for a, b in zip(rms, rms[1:])), rms
    plucked = render_note(inst, 60, 100, seed=0)
    bowed = render_note(make_instrument(0, "string", "acoustic", 0, 1), 60, 100, seed=0)

    def level(w, s):
        return np.sqrt(np.mean(w[int(s * 16000):int(s * 16000) + 1600] ** 2))

    assert level(plucked, 2.5) < 0.5 * level(plucked, 0.1)  # decays while held
    assert level(bowed, 2.5) > 0.7 * level(bowed, 0.5)  # sustains while held
    assert level(bowed, 3.9) < 0.5 * level(bowed, 2.5)  # released after note-off at 3 s (release <= 0.8 s)


def test_instruments_of_a_family_differ_but_each_is_fixed():
    a, b = make_instrument(0, "brass", "acoustic", 0, 0), make_instrument(0, "brass", "acoustic", 1, 1)
    assert a != b and a == make_instrument(0, "brass", "acoustic", 0, 0)
    assert len({inst.instrument_str for inst in instrument_pool(0, 2)}) == len(instrument_pool(0, 2))


def test_cli_writes_the_requested_splits(tmp_path, capsys):
    assert synthetic.main(["--out", str(tmp_path), "--split", "train:3", "--split", "test:2", "--seed", "1"]) == 0
    assert len(read_examples(str(tmp_path), "train")) == 3 and len(read_examples(str(tmp_path), "test")) == 2
    assert "wrote 5 notes" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        run_cli(synthetic.main, PROG, ["--out", str(tmp_path), "--split", "train"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "mars-synthetic: error: argument --split: 'train': expected NAME:COUNT, e.g. train:200")


@pytest.mark.parametrize("flags,expected", [
    (["--split", "train:2", "--split", "train:3"], "split names must be distinct, got ['train', 'train']"),
    (["--split", "train:30000"], "30000 notes requested but 4 instruments per (family, source) give only "),
    (["--split", "train:2", "--instruments-per-group", "0"],
     "instruments per group=0: expected an integer >= 1 (--instruments-per-group)"),
    (["--split", "train:2", "--seed", "-1"], "seed=-1: expected an integer >= 0"),
], ids=["split twice", "too many notes", "no instruments", "negative seed"])
def test_a_bad_request_is_one_error_line_and_writes_nothing(tmp_path, capsys, flags, expected):
    out = tmp_path / "nsynth"
    assert expected in user_error(capsys, synthetic.main, PROG, ["--out", str(out), *flags])
    assert not out.exists()


def test_an_out_that_cannot_be_a_folder_is_one_error_line(tmp_path, capsys):
    (tmp_path / "taken").write_text("someone's file")
    line = user_error(capsys, synthetic.main, PROG, ["--out", str(tmp_path / "taken"), "--split", "train:1"])
    assert line == f"mars-synthetic: error: {tmp_path / 'taken'}: part of the path is a file, not a folder"
    (tmp_path / "root" / "nsynth-train").mkdir(parents=True)
    (tmp_path / "root" / "nsynth-train" / "audio").write_text("not a folder")
    line = user_error(capsys, synthetic.main, PROG, ["--out", str(tmp_path / "root"), "--split", "train:1"])
    assert line == (f"mars-synthetic: error: {tmp_path / 'root'}: {tmp_path / 'root' / 'nsynth-train' / 'audio'}: "
                    "exists and is not a folder (expected a folder or a new path)")


def test_the_module_itself_prints_one_line_and_exits_2(tmp_path):
    line = process_error(["-m", "data_tools.synthetic", "--out", str(tmp_path / "nsynth"), "--split", "train:1",
                          "--split", "train:1"], PROG)
    assert line == "mars-synthetic: error: split names must be distinct, got ['train', 'train']"
    assert not (tmp_path / "nsynth").exists()

"""data_tools.shard at other lengths and sample rates than NSynth's 4 s at 16 kHz: the audio config says what
a note must be, a note that is not follows the on-error policy, and --resample converts other rates."""
from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch
from torchaudio.functional import resample

from data_tools.inspect_shards import inspect_shards
from data_tools.nsynth import NoteError, audio_path
from data_tools.shard import PROG, ShardingError, main, shard_nsynth
from mars_dist.audio.config import AudioConfig
from mars_dist.audio.frontend import AudioFrontend
from mars_dist.cli import run_cli
from mars_dist.data.manifest import check_compatible, read_manifest
from tests.fixtures.nsynth import SMALL_SPLIT, write_examples

NUM_NOTES = 5


def _audio_cfg(sample_rate=16000, num_samples=128000, num_frames=512):
    cfg = AudioConfig()
    cfg.stft.sample_rate, cfg.stft.num_samples, cfg.stft.num_frames = sample_rate, num_samples, num_frames
    return cfg


@pytest.fixture
def notes(small_nsynth):
    """The first NUM_NOTES notes of the small set: (root, examples dict, keys, {key: 4 s wave at 16 kHz})."""
    root, raw, keys = small_nsynth
    keys = keys[:NUM_NOTES]
    for key in set(raw) - set(keys):
        del raw[key]
    write_examples(root, SMALL_SPLIT, raw)
    waves = {key: sf.read(audio_path(root, SMALL_SPLIT, key), dtype="float32")[0] for key in keys}
    return root, raw, keys, waves


def _write(root, key, wave, rate):
    sf.write(audio_path(root, SMALL_SPLIT, key), wave, rate, subtype="PCM_16", format="WAV")
    return sf.read(audio_path(root, SMALL_SPLIT, key), dtype="float32")[0]  # as stored: 16-bit


def _samples(out):
    """{key: {member suffix: bytes}} over every shard listed in the manifest."""
    samples = {}
    for shard in read_manifest(out)["shards"]:
        with tarfile.open(os.path.join(out, shard["name"])) as tar:
            for member in tar:
                key, _, suffix = member.name.partition(".")
                samples.setdefault(key, {})[suffix] = tar.extractfile(member).read()
    return samples


def test_8_second_notes_shard_and_a_4_second_note_follows_on_error(notes, tmp_path, capsys):
    root, _, keys, waves = notes
    short = keys[2]
    eight = {key: _write(root, key, np.tile(waves[key], 2), 16000) for key in keys if key != short}
    out = str(tmp_path / "out")
    args = ["--nsynth-root", root, "--split", SMALL_SPLIT, "--out", out, "--workers", "1", "--shard-size", "2",
            "--no-progress", "--with-audio", "audio.stft.num_samples=128000", "audio.stft.num_frames=512"]

    assert main(args + ["--on-error", "skip"]) == 0
    manifest = read_manifest(out)
    frontend = AudioFrontend(_audio_cfg())
    assert manifest["audio"] == json.loads(json.dumps(frontend.describe())) and manifest["cmx_shape"] == [4, 256, 256]
    check_compatible(manifest, _audio_cfg())
    assert manifest["skipped"] == [{"note_str": short, "problem": f"{audio_path(root, SMALL_SPLIT, short)}: "
                                    "64000 samples, expected 128000 (audio.stft.num_samples)"}]
    samples = _samples(out)
    assert set(samples) == set(eight)
    for key, wave in eight.items():
        np.testing.assert_array_equal(np.load(io.BytesIO(samples[key]["cmx.npy"])),
                                      frontend.wave_to_cmx(wave).numpy().astype(np.float16))
    report = inspect_shards(out)
    assert report.ok and report.samples == len(eight), report.problems

    capsys.readouterr()
    assert run_cli(main, PROG, args + ["--on-error", "fail"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"mars-shard: error: note '{short}': ") and "expected 128000" in line


def test_other_rates_are_bad_notes_unless_resampled(notes, tmp_path):
    root, raw, keys, waves = notes
    odd = keys[1]  # one note of the set at 22.05 kHz, the others at 16 kHz; the run stores 32 kHz
    waves[odd] = _write(root, odd, resample(torch.from_numpy(waves[odd]), 16000, 22050).numpy(), 22050)
    raw[odd]["sample_rate"] = 22050
    write_examples(root, SMALL_SPLIT, raw)
    cfg = _audio_cfg(sample_rate=32000)

    with pytest.raises(NoteError, match=r"sample_rate=16000: expected 32000 \(audio.stft.sample_rate\)"):
        shard_nsynth(root, SMALL_SPLIT, str(tmp_path / "off"), cfg, workers=1, progress=False)
    with pytest.raises(ShardingError, match="no usable notes"):
        shard_nsynth(root, SMALL_SPLIT, str(tmp_path / "off"), cfg, workers=1, on_error="skip", progress=False)

    out = str(tmp_path / "out")
    manifest = shard_nsynth(root, SMALL_SPLIT, out, cfg, shard_size=2, workers=1, resample=True, with_audio=True,
                            progress=False)
    assert manifest["num_samples"] == NUM_NOTES and manifest["audio"]["stft"]["sample_rate"] == 32000
    frontend = AudioFrontend(cfg)
    samples = _samples(out)
    for key in keys:
        rate = raw[key]["sample_rate"]
        expected = frontend.wave_to_cmx(resample(torch.from_numpy(waves[key]), rate, 32000))
        stored = np.load(io.BytesIO(samples[key]["cmx.npy"]))
        np.testing.assert_array_equal(stored, expected.numpy().astype(np.float16))
        log_FT = frontend.cmx_to_log(torch.from_numpy(stored)).numpy()
        peak_hz = np.argmax(log_FT.mean(axis=1)) * 32000 / cfg.stft.n_fft
        source_hz = np.argmax(np.abs(np.fft.rfft(waves[key]))) * rate / len(waves[key])
        assert abs(peak_hz - source_hz) <= 32000 / cfg.stft.n_fft, "the strongest partial stays where it was"
        assert log_FT[270:].mean() < log_FT[:250].mean(), "a 16 / 22.05 kHz source adds little above 8 kHz"
        assert json.loads(samples[key]["json"])["sample_rate"] == 32000, "labels state the stored rate"
        flac, flac_rate = sf.read(io.BytesIO(samples[key]["flac"]))
        assert flac.shape == (128000,) and flac_rate == 32000
    report = inspect_shards(out)
    assert report.ok, report.problems

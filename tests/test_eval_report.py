"""mars-report (python -m mars_dist.eval.report): the quick report's protocol (reference audio, floors) and its CLI."""
from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch

from data_tools.nsynth import audio_path
from data_tools.shard import shard_nsynth
from mars_dist.audio.config import AudioConfig
from mars_dist.audio.frontend import AudioFrontend
from mars_dist.errors import UserError
from mars_dist.eval.report import (
    REFERENCE_FLAC,
    REFERENCE_GRIFFIN_LIM,
    Reconstruction,
    main,
    read_validation_notes,
    reconstruction_metrics,
)
from tests.ar_exports import ar_export, tokenizer_export


@pytest.fixture(scope="module")
def valid_shards_with_audio(synthetic_nsynth_root, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("valid_with_audio") / "valid"
    shard_nsynth(synthetic_nsynth_root, "valid", str(out), AudioConfig(), shard_size=10, workers=1, seed=0,
                 with_audio=True, progress=False)
    return str(out)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_exports")
    tok = tokenizer_export(root / "tokenizer")
    return tok, ar_export(root / "next_scale", tok)


def _frontend(gl_iters: int = 4) -> AudioFrontend:
    cfg = AudioConfig()
    cfg.griffin_lim.n_iter = gl_iters
    return AudioFrontend(cfg)


def test_reference_audio_is_the_stored_flac_sample_exact(valid_shards_with_audio, synthetic_nsynth_root):
    notes = read_validation_notes(valid_shards_with_audio, _frontend(), limit=5)
    assert notes.reference == REFERENCE_FLAC
    assert notes.cmx_NCHW.shape == (5, 2, 256, 256) and notes.wave_NT.shape == (5, 64000)
    for key, wave in zip(notes.keys, notes.wave_NT):
        original, rate = sf.read(audio_path(synthetic_nsynth_root, "valid", key), dtype="float32")
        assert rate == 16000
        assert torch.equal(wave, torch.from_numpy(original)), f"{key}: the .flac is not the original note"


def test_without_stored_audio_the_reference_is_griffin_lim_of_the_cmx(tiny_shards):
    frontend = _frontend()
    notes = read_validation_notes(tiny_shards["valid"], frontend, limit=3)
    assert notes.reference == REFERENCE_GRIFFIN_LIM
    assert torch.allclose(notes.wave_NT, frontend.cmx_to_wave(notes.cmx_NCHW), atol=1e-5)
    assert len(read_validation_notes(tiny_shards["valid"], frontend).keys) == tiny_shards["manifests"]["valid"]["num_samples"]


def test_a_perfect_reconstruction_scores_zero_against_griffin_lim_and_the_floor_against_flac(valid_shards_with_audio):
    """The protocol's wiring: identical CMX -> identical audio; vs the real note only phase recovery is lost."""
    frontend = _frontend()
    flac_notes = read_validation_notes(valid_shards_with_audio, frontend, limit=4)
    gl_wave = frontend.cmx_to_wave(flac_notes.cmx_NCHW)
    perfect = Reconstruction(flac_notes.cmx_NCHW, gl_wave, [torch.tensor([3.0, 0.0, 1.0, 0.0])])
    against_gl = reconstruction_metrics(frontend, flac_notes.cmx_NCHW, gl_wave, perfect)
    assert against_gl["mel_mse"] < 1e-10 and against_gl["cmx_mse"] == 0.0
    assert against_gl["magnitude_spectral_convergence"] == 0.0 and against_gl["codebook_usage_per_scale"] == [0.5]
    against_flac = reconstruction_metrics(frontend, flac_notes.cmx_NCHW, flac_notes.wave_NT, perfect)
    assert against_flac["mel_mse"] > 1e-4, "Griffin-Lim with 4 iterations cannot reproduce the original"
    noisy = Reconstruction((flac_notes.cmx_NCHW + 0.3 * torch.randn_like(flac_notes.cmx_NCHW)).clamp(-1, 1), gl_wave,
                           perfect.code_hits)
    assert reconstruction_metrics(frontend, flac_notes.cmx_NCHW, gl_wave, noisy)["cmx_mse"] > 0.05


def test_cli_writes_metrics_json_with_both_parts(exports, valid_shards_with_audio, tmp_path, capsys):
    tok, model = exports
    assert main(["--tokenizer", str(tok), "--model", str(model), "--shards", valid_shards_with_audio, "--out", str(tmp_path),
                 "--pitches", "48", "72", "--per-pitch", "2", "--gl-iters", "4", "--limit", "8"]) == 0
    report = json.loads((tmp_path / "metrics.json").read_text(),
                        parse_constant=lambda token: pytest.fail(f"metrics.json holds {token}"))
    assert report["format"] == "mars_dist.quick_report/1" and "not the paper's evaluation suite" in report["what"]
    assert report["validation_notes"] == 8 and report["reference_audio"] == REFERENCE_FLAC
    assert report["generator_export"] == str(model)
    assert report["training_steps"] == {"tokenizer": 0, "next_scale": 0}
    tok_metrics, pitch = report["tokenizer"], report["pitch"]
    assert len(tok_metrics["codebook_usage_per_scale"]) == 3  # configs/tokenizer/tiny.yaml: 3 scales
    assert tok_metrics["mel_mse"] > tok_metrics["gl_floor_mel_mse"] > 0  # random weights are worse than the floor
    assert set(pitch["conditional_match_per_pitch"]) == {"48", "72"}
    assert pitch["real_note_match"] >= 0.75, "the f0 estimator misses most real synthetic notes"
    assert all(0.0 <= pitch[k] <= 1.0 for k in ("conditional_match", "unconditional_match", "reconstruction_match"))
    table = capsys.readouterr().out
    assert "mel-MSE" in table and "generated, conditional" in table and str(tmp_path / "metrics.json") in table


def test_cli_without_a_model_reports_the_tokenizer_only(exports, tiny_shards, tmp_path):
    tok, _ = exports
    assert main(["--tokenizer", str(tok), "--shards", tiny_shards["valid"], "--out", str(tmp_path),
                 "--gl-iters", "2", "--limit", "2"]) == 0
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert "pitch" not in report and report["generator_export"] is None
    assert report["reference_audio"] == REFERENCE_GRIFFIN_LIM and "gl_floor_mel_mse" not in report["tokenizer"]


def test_shards_of_another_audio_config_are_refused_naming_the_manifest(exports, tiny_shards, tmp_path):
    cfg = AudioConfig()
    cfg.stft.hop_length = 128
    with pytest.raises(ValueError, match=r"(?s)manifest\.json.*hop_length: manifest 256, run 128"):
        read_validation_notes(tiny_shards["valid"], AudioFrontend(cfg))


def test_bad_arguments_are_refused(exports, tiny_shards, tmp_path):
    tok, _ = exports
    with pytest.raises(SystemExit):
        main(["--tokenizer", str(tok), "--shards", tiny_shards["valid"], "--out", str(tmp_path), "--pitches", "200"])
    with pytest.raises(UserError, match="not a finished mars_dist export"):
        main(["--tokenizer", str(tmp_path), "--shards", tiny_shards["valid"], "--out", str(tmp_path)])

"""mars-sample --edit inpaint|bwe: real notes in, the generator's edit next to the
baselines out (wav per method, PNG per note, edit_metrics.json); mistakes are one error line."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf

from mars_dist.cli import run_cli
from mars_dist.sample import main as sample_main
from tests.ar_exports import tokenizer_export
from tests.fixtures.cli import user_error
from tests.generator_exports import generator_export


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample_edit")
    tok = tokenizer_export(root / "tok")
    t = np.arange(64000) / 16000
    notes = []
    for i, f0 in enumerate((220.0, 330.0)):
        path = root / f"note{i}.wav"
        sf.write(path, (0.3 * np.sin(2 * np.pi * f0 * t) * np.exp(-t)).astype("float32"), 16000)
        notes.append(str(path))
    short = root / "short.wav"
    sf.write(short, np.zeros(16000, dtype="float32"), 16000)
    return {"tok": str(tok), "next_scale": str(generator_export(root / "next_scale", tok, "next_scale")), "notes": notes,
            "short": str(short)}


def test_inpaint_writes_every_method_and_the_metrics_of_the_removed_span(setup, tmp_path, capsys):
    out = tmp_path / "edits"
    argv = ["--tokenizer", setup["tok"], "--model", setup["next_scale"], "--out", str(out), "--edit", "inpaint",
            "--input", *setup["notes"], "--start", "1.5", "--end", "2.5", "--pitch", "57", "--device", "cpu",
            "--gl-iters", "2", "--batch-size", "1"]
    assert sample_main(argv) == 0
    assert "| next_scale (edited) |" in capsys.readouterr().out
    for i in range(2):
        for method in ("input", "edited", "empty", "naive_fill", "tokenizer", "griffin_lim"):
            data, rate = sf.read(out / f"000{i}_note{i}_{method}.wav")
            assert data.shape == (64000,) and rate == 16000
        assert (out / f"000{i}_note{i}.png").stat().st_size > 0
    report = json.loads((out / "edit_metrics.json").read_text())
    assert (report["edit"], report["start_s"], report["end_s"], report["generator"]) == ("inpaint", 1.5, 2.5, "next_scale")
    assert report["kept_token_fraction_per_scale"][0] == 0.0, "the 1 x 1 token covers the span"
    assert len(report["per_note"]["edited"]["mel_mse"]) == 2
    assert report["mean"]["griffin_lim"]["log_spec_mse"] == 0.0


@pytest.mark.parametrize("extra,message", [
    (["--edit", "bwe", "--input", "{short}"], r"short.wav: 1 channel\(s\), 16000 samples at 16000 Hz; expected mono, 64000"),
    (["--edit", "bwe", "--input", "{missing}"], r"--input .*nothing.wav: no such file"),
    (["--edit", "bwe", "--input", "{note}", "--pitch", "60", "72"], r"2 label sets for 1 input notes"),
    (["--edit", "bwe", "--input", "{note}", "--cutoff-hz", "9000"], r"--cutoff-hz 9000: removes nothing"),
    (["--edit", "inpaint", "--input", "{note}", "--start", "2", "--end", "1"],
     r"inpainting --start 2 --end 1: expected 0 <= start < end \(seconds\)$"),
    # a span partly past the end of the note is refused (it used to be clipped to the note silently)
    (["--edit", "inpaint", "--input", "{note}", "--start", "3.5", "--end", "4.5"],
     r"error: inpainting --start 3.5 --end 4.5: the span runs past the end of the note, which is 4 s long "
     r"\(64000 samples at 16000 Hz\); choose an end <= 4 s$"),
    # between the top bin's centre (7984.375 Hz) and Nyquist (8000 Hz): no bin lies above the cutoff
    (["--edit", "bwe", "--input", "{note}", "--cutoff-hz", "7990"],
     r"error: bandwidth extension --cutoff-hz 7990: removes nothing: the spectrogram's highest bin is centred at "
     r"7984.375 Hz \(1024-point STFT at 16000 Hz, the Nyquist bin dropped\); choose a cutoff <= 7984.375 Hz$"),
])
def test_edit_mistakes_are_one_error_line(setup, tmp_path, capsys, extra, message):
    subs = {"short": setup["short"], "missing": str(tmp_path / "nothing.wav"), "note": setup["notes"][0]}
    extra = [a.format(**subs) for a in extra]
    out = tmp_path / "o"
    line = user_error(capsys, sample_main, "mars-sample", ["--tokenizer", setup["tok"], "--model", setup["next_scale"],
                                                           "--out", str(out), "--device", "cpu", *extra])
    assert re.search(message, line), line
    assert not out.exists(), "a refused edit wrote output"


@pytest.mark.parametrize("extra", [["--edit", "bwe"], ["--input", "x.wav"], ["--iterations", "0"]])
def test_inconsistent_edit_flags_are_argparse_errors(setup, tmp_path, capsys, extra):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(sample_main, "mars-sample", ["--tokenizer", setup["tok"], "--model", setup["next_scale"], "--out",
                                             str(tmp_path), *extra])
    assert exit_info.value.code == 2 and "error:" in capsys.readouterr().err

"""python -m mars_dist.sample --edit inpaint|bwe: real notes in, the generator's edit next to the
baselines out (wav per method, PNG per note, edit_metrics.json); mistakes are one error line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from mars_dist.cli import run_cli
from mars_dist.sample import main as sample_main
from tests.ar_exports import tokenizer_export
from tests.generator_exports import generator_export
from tests.test_cli_errors import user_error


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
    return {"tok": str(tok), "ar": str(generator_export(root / "ar", tok, "ar")), "notes": notes, "short": str(short)}


def test_inpaint_writes_every_method_and_the_metrics_of_the_removed_span(setup, tmp_path, capsys):
    out = tmp_path / "edits"
    argv = ["--tokenizer", setup["tok"], "--model", setup["ar"], "--out", str(out), "--edit", "inpaint",
            "--input", *setup["notes"], "--start", "1.5", "--end", "2.5", "--pitch", "57", "--device", "cpu",
            "--gl-iters", "2", "--batch-size", "1"]
    assert sample_main(argv) == 0
    assert "| ar (edited) |" in capsys.readouterr().out
    for i in range(2):
        for method in ("input", "edited", "empty", "naive_fill", "tokenizer", "griffin_lim"):
            data, rate = sf.read(out / f"000{i}_note{i}_{method}.wav")
            assert data.shape == (64000,) and rate == 16000
        assert (out / f"000{i}_note{i}.png").stat().st_size > 0
    report = json.loads((out / "edit_metrics.json").read_text())
    assert (report["edit"], report["start_s"], report["end_s"], report["generator"]) == ("inpaint", 1.5, 2.5, "ar")
    assert report["kept_token_fraction_per_scale"][0] == 0.0, "the 1 x 1 token covers the span"
    assert len(report["per_note"]["edited"]["mel_mse"]) == 2
    assert report["mean"]["griffin_lim"]["log_spec_mse"] == 0.0


@pytest.mark.parametrize("extra,message", [
    (["--edit", "bwe", "--input", "{short}"], r"short.wav: 1 channel\(s\), 16000 samples at 16000 Hz; expected mono, 64000"),
    (["--edit", "bwe", "--input", "{missing}"], r"--input .*nothing.wav: no such file"),
    (["--edit", "bwe", "--input", "{note}", "--pitch", "60", "72"], r"2 label sets for 1 input notes"),
    (["--edit", "bwe", "--input", "{note}", "--cutoff-hz", "9000"], r"the edit removes nothing"),
])
def test_edit_mistakes_are_one_error_line(setup, tmp_path, capsys, extra, message):
    subs = {"short": setup["short"], "missing": str(tmp_path / "nothing.wav"), "note": setup["notes"][0]}
    extra = [a.format(**subs) for a in extra]
    line = user_error(capsys, sample_main, "mars-sample", ["--tokenizer", setup["tok"], "--model", setup["ar"],
                                                           "--out", str(tmp_path / "o"), "--device", "cpu", *extra])
    assert __import__("re").search(message, line), line


@pytest.mark.parametrize("extra", [["--edit", "bwe"], ["--input", "x.wav"], ["--edit", "inpaint", "--input", "x.wav",
                                                                              "--start", "2", "--end", "1"],
                                   ["--iterations", "0"]])
def test_inconsistent_edit_flags_are_argparse_errors(setup, tmp_path, capsys, extra):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(sample_main, "mars-sample", ["--tokenizer", setup["tok"], "--model", setup["ar"], "--out", str(tmp_path), *extra])
    assert exit_info.value.code == 2 and "error:" in capsys.readouterr().err

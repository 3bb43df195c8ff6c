"""Adding a generator family touches no library file: the toy family (tests/toy_generator/: a spec, a
model, one YAML) trains through the real entry point and exports itself, samples and edits through
the generation package and `mars-sample` (whose --help lists its own flag), and appears in the
benchmarks' family comparison. Its training on every distributed backend is in
tests/test_tasks_on_backends.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mars_dist.bench.generate import main as bench_generate_main
from mars_dist.generation.loaders import load_generator, load_tokenizer
from mars_dist.io.exports import read_export_config
from mars_dist.sample import main as sample_main
from mars_dist.train import main as train_main
from tests.ar_exports import tokenizer_export

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "tests" / "toy_generator" / "toy.yaml"
TOY = "tests.toy_generator.spec:toy"


@pytest.fixture(scope="module")
def trained(tiny_shards, tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    tok = tokenizer_export(root / "tok")
    run_dir = root / "run"
    status = train_main(["--config", str(CONFIG), "--resume", "none", f"toy.tokenizer_path={tok}", f"run_dir={run_dir}",
                         f"data.train_shards={tiny_shards['train']}", f"data.valid_shards={tiny_shards['valid']}"])
    assert status == 0
    return tok, run_dir


def test_the_toy_family_trains_logs_media_and_exports_itself(trained):
    tok, run_dir = trained
    config = read_export_config(run_dir / "export")  # the export stage at the end of training
    assert (config["builder"], config["task"], config["model"], config["step"]) == (TOY, TOY, "toy", 2)
    assert config["architecture"] == {"width": 8}
    assert sorted(p.suffix for p in (run_dir / "media" / "step-00000002" / "toy-step00000002").iterdir()) == \
        [".png", ".png", ".wav", ".wav"], "the media stage generated notes with the family's own sampler"


def test_the_toy_family_samples_and_edits_through_the_generation_package(trained, tmp_path):
    tok, run_dir = trained
    tokenizer = load_tokenizer(tok)
    gen = load_generator(run_dir / "export", tokenizer, torch.device("cpu"))
    assert gen.name == TOY and type(gen.options()).__name__ == "ToyOptions"
    batch = next(gen.generate([{"pitch": 60}, {}], gen.options(spread=0.5), gen.rng(0), batch_size=2))
    assert [tuple(t.shape) for t in batch.idx_list] == [(2, h, w) for h, w in tokenizer.module.quantizer.scales]
    assert batch.wave_BN.shape == (2, 64000) and torch.isfinite(batch.wave_BN).all()

    notes = tmp_path / "notes"
    assert sample_main(["--tokenizer", str(tok), "--model", str(run_dir / "export"), "--out", str(notes),
                        "--pitch", "60", "--device", "cpu", "--gl-iters", "2", "--toy-spread", "2.0"]) == 0
    wav = notes / "0000_pitch060_any-family_any-source_any-velocity.wav"
    assert sorted(p.name for p in notes.iterdir()) == [wav.with_suffix(".png").name, wav.name]
    edits = tmp_path / "edits"
    assert sample_main(["--tokenizer", str(tok), "--model", str(run_dir / "export"), "--out", str(edits), "--device",
                        "cpu", "--gl-iters", "2", "--edit", "inpaint", "--input", str(wav), "--start", "1", "--end", "2"]) == 0
    assert (edits / "edit_metrics.json").is_file() and (edits / f"0000_{wav.stem}_edited.wav").is_file()


def test_the_toy_familys_own_flag_is_on_mars_sample_help(trained):
    _, run_dir = trained
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def help_text(*argv: str, **extra: str) -> str:
        out = subprocess.run([sys.executable, "-m", "mars_dist.sample", *argv, "--help"], cwd=REPO, capture_output=True,
                             text=True, timeout=300, env={**env, **extra})
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    assert "--toy-spread" not in help_text()
    assert "--toy-spread" in help_text("--model", str(run_dir / "export")), "the export's family, found from its builder"
    assert "--toy-spread" in help_text(MARS_DIST_FAMILIES=TOY), "families named in MARS_DIST_FAMILIES"
    assert "--iterations" in help_text(), "the built-in families' own flags are always listed"


def test_a_flag_of_another_family_is_one_error_line(trained, capsys, tmp_path):
    from mars_dist.cli import run_cli

    tok, run_dir = trained
    status = run_cli(sample_main, "mars-sample", ["--tokenizer", str(tok), "--model", str(run_dir / "export"), "--out",
                                                  str(tmp_path / "o"), "--device", "cpu", "--iterations", "4"])
    err = capsys.readouterr().err
    assert status == 2 and "--iterations: not an option of the tests.toy_generator.spec:toy family" in err, err
    assert "--toy-spread" in err and not (tmp_path / "o").exists()


def test_the_toy_family_appears_in_the_benchmarks_family_comparison(capsys, tmp_path):
    out = tmp_path / "compare.json"
    assert bench_generate_main(["--compare", "--families", "next_scale", TOY, "--presets", "tiny", "--batches", "1",
                                "--map-sizes", "--gl-iters", "2", "--device", "cpu", "--json", str(out)]) == 0
    import json

    rows = json.loads(out.read_text())["families"]
    assert [r["family"] for r in rows] == ["next_scale", TOY]
    assert rows[1]["sequential_passes"] == 1 and rows[1]["total_s_per_note"] > 0

"""Adding a generator family touches no library file: a toy one (tests/toy_generator.py, its config
tests/toy_generator.yaml) trains through the real entry point, exports, and samples through the
generation package and `python -m mars_dist.sample`."""
from __future__ import annotations

from pathlib import Path

import torch

from mars_dist.export import export_checkpoint, newest_if_run_dir
from mars_dist.generation.generator import SamplingSettings
from mars_dist.generation.loaders import load_generator, load_tokenizer
from mars_dist.sample import main as sample_main
from mars_dist.train import main as train_main
from tests.ar_exports import tokenizer_export
from tests.toy_generator import ToyGenerator

CONFIG = Path(__file__).with_name("toy_generator.yaml")


def test_a_generator_registered_outside_the_library_trains_exports_and_samples(tiny_shards, tmp_path):
    tok = tokenizer_export(tmp_path / "tok")
    run_dir = tmp_path / "run"
    status = train_main(["--config", str(CONFIG), "--resume", "none", f"toy_gen.tokenizer_path={tok}",
                         f"run_dir={run_dir}", f"data.train_shards={tiny_shards['train']}"])
    assert status == 0
    export = export_checkpoint(newest_if_run_dir(run_dir), None, tmp_path / "export")

    tokenizer = load_tokenizer(tok)
    gen = load_generator(export, tokenizer, torch.device("cpu"))
    assert isinstance(gen, ToyGenerator) and gen.task == "tests.toy_generator:toy_gen"
    batch = next(gen.generate([{"pitch": 60}, {}], SamplingSettings(), gen.rng(0), batch_size=2))
    assert [tuple(t.shape) for t in batch.idx_list] == [(2, h, w) for h, w in tokenizer.module.quantizer.scales]
    assert batch.wave_BN.shape == (2, 64000) and torch.isfinite(batch.wave_BN).all()

    assert sample_main(["--tokenizer", str(tok), "--model", str(export), "--out", str(tmp_path / "notes"),
                        "--pitch", "60", "--device", "cpu", "--gl-iters", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == [
        "0000_pitch060_any-family_any-source_any-velocity.png", "0000_pitch060_any-family_any-source_any-velocity.wav"]

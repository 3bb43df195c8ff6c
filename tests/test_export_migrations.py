"""Exports and checkpoints written by earlier versions keep working (mars_dist/io/export_migrations.py).

tests/fixtures/format2_exports/ holds exports written by the code before the family redesign
(format 2: the whole run config, the next-scale AR as task `ar`): a tiny tokenizer (seed 3, widths
16), a next-scale AR and a MaskGIT over it (depth 1, width 32, seed 5) and a classifier (seed 7);
notes.sha256.json the sha256 of the wav files that code generated from them
(`mars-sample --pitch 60 72 --family keyboard --device cpu --gl-iters 4 --seed 11 --batch 2`, MaskGIT
with --iterations 4, and an inpainting of 1.0-2.0 s of the first AR note). Today's code must read
them and generate the same bytes.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from mars_dist.io.exports import CONFIG_JSON, ExportError, read_export_config
from mars_dist.models.builders import load_model
from mars_dist.sample import main as sample_main

FIXTURES = Path(__file__).parent / "fixtures" / "format2_exports"
EXPECTED = json.loads((FIXTURES / "notes.sha256.json").read_text())
SAMPLE = ["--pitch", "60", "72", "--family", "keyboard", "--device", "cpu", "--gl-iters", "4", "--seed", "11",
          "--batch-size", "2"]


def sha256_of_wavs(folder: Path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.wav"))}


def test_format2_exports_read_as_builder_architecture_and_inputs():
    tokenizer = read_export_config(FIXTURES / "tokenizer")
    assert (tokenizer["format"], tokenizer["builder"], tokenizer["inputs"]) == \
        ("mars_dist.export/3", "tokenizer", {"cmx_shape": [2, 256, 256]})
    assert tokenizer["architecture"]["enc_width"] == 16 and "lambda_recon" not in tokenizer["architecture"]
    ar = read_export_config(FIXTURES / "ar")
    assert (ar["builder"], ar["task"], ar["model"]) == ("next_scale", "next_scale", "next_scale"), "the task ar was renamed"
    assert ar["architecture"]["width"] == 32 and "tokenizer_path" not in ar["architecture"]
    classifier = read_export_config(FIXTURES / "classifier")
    assert (classifier["builder"], classifier["inputs"]) == ("classifier", {"spec_shape": [512, 256]})
    module, _ = load_model(FIXTURES / "classifier", expected=("classifier",))
    assert module.validation()["valid_notes"] == -1


@pytest.mark.parametrize("family", ["ar", "maskgit"])
def test_a_format2_export_generates_the_same_wav_bytes_as_the_code_that_wrote_it(family, tmp_path):
    extra = ["--iterations", "4"] if family == "maskgit" else []
    assert sample_main(["--tokenizer", str(FIXTURES / "tokenizer"), "--model", str(FIXTURES / family), "--out",
                        str(tmp_path), *SAMPLE, *extra]) == 0
    assert sha256_of_wavs(tmp_path) == EXPECTED[family]


def test_a_format2_export_edits_to_the_same_wav_bytes(tmp_path):
    notes = tmp_path / "notes"
    assert sample_main(["--tokenizer", str(FIXTURES / "tokenizer"), "--model", str(FIXTURES / "ar"), "--out", str(notes),
                        *SAMPLE]) == 0
    source = sorted(notes.glob("*.wav"))[0]
    edits = tmp_path / "edits"
    assert sample_main(["--tokenizer", str(FIXTURES / "tokenizer"), "--model", str(FIXTURES / "ar"), "--out", str(edits),
                        "--edit", "inpaint", "--input", str(source), "--start", "1.0", "--end", "2.0", "--device", "cpu",
                        "--gl-iters", "4", "--seed", "11"]) == 0
    assert sha256_of_wavs(edits) == EXPECTED["ar_inpaint"]


def _copy_with_config(name: str, target: Path, change) -> Path:
    shutil.copytree(FIXTURES / name, target)
    config = json.loads((target / CONFIG_JSON).read_text())
    change(config)
    (target / CONFIG_JSON).write_text(json.dumps(config))
    return target


def test_a_format1_export_is_upgraded_through_format2(tmp_path):
    """Format 1: every section in the run config, the discriminator's lr in optim.disc_lr."""
    def to_format1(config):
        lr = config["run_config"]["tokenizer"]["disc"].pop("lr")
        config.update(format="mars_dist.export/1")
        config["run_config"]["optim"]["disc_lr"] = lr
        config["run_config"]["ar"] = {"depth": 2}

    old = _copy_with_config("tokenizer", tmp_path / "tok1", to_format1)
    upgraded = read_export_config(old)
    assert upgraded["format"] == "mars_dist.export/3" and upgraded["builder"] == "tokenizer"
    module, _ = load_model(old, expected=("tokenizer",))
    reference, _ = load_model(FIXTURES / "tokenizer")
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), reference.state_dict().values()))


def test_an_unknown_or_damaged_export_is_one_clear_error(tmp_path):
    future = _copy_with_config("tokenizer", tmp_path / "future", lambda c: c.update(format="mars_dist.export/9"))
    with pytest.raises(ExportError, match=r"export format 'mars_dist.export/9'; this mars_dist reads mars_dist.export/1, "
                                          r"mars_dist.export/2, mars_dist.export/3"):
        read_export_config(future)
    damaged = _copy_with_config("tokenizer", tmp_path / "damaged", lambda c: c.pop("data_info"))
    with pytest.raises(ExportError, match=r"damaged/config.json: a mars_dist.export/2 export without 'cmx_shape' \(damaged\? re-export"):
        read_export_config(damaged)


def test_a_checkpoint_of_the_task_ar_exports_and_resumes_as_next_scale(tiny_shards, tmp_path):
    """A run started before the rename: its files name the generator `ar` (debug-ar.pt, lr_steps.ar, task ar)."""
    from mars_dist.engine.checkpoint import committed_checkpoints, read_train_state
    from mars_dist.export import export_checkpoint
    from mars_dist.train import main as train_main
    from tests.ar_exports import AR_TINY, tokenizer_export

    tok = tokenizer_export(tmp_path / "tok")
    run_dir = tmp_path / "run"
    common = [f"run_dir={run_dir}", f"data.train_shards={tiny_shards['train']}", "stages.media.every=0",
              "stages.export.on_finish=false", "logging.wandb_mode=disabled", "engine.device=cpu"]
    assert train_main(["--config", str(AR_TINY), f"next_scale.tokenizer_path={tok}", "train.max_steps=2", *common]) == 0
    step = committed_checkpoints(run_dir)[-1][1]
    (step / "debug-next_scale.pt").rename(step / "debug-ar.pt")
    for name, change in (("backend_state.json", lambda s: s.update(lr_steps={"ar": s["lr_steps"]["next_scale"]})),
                         ("train_state.json", lambda s: s.update(task="ar", config={
                             **{k: v for k, v in s["config"].items() if k != "next_scale"}, "task": "ar",
                             "ar": s["config"]["next_scale"]}))):
        state = json.loads((step / name).read_text())
        change(state)
        (step / name).write_text(json.dumps(state))

    exported = export_checkpoint(step, None, tmp_path / "export")
    config = read_export_config(exported)
    assert (config["builder"], config["model"], config["step"]) == ("next_scale", "next_scale", 2)
    old_yaml = tmp_path / "old.yaml"
    old_yaml.write_text(AR_TINY.read_text().replace("task: next_scale", "task: ar").replace("next_scale:", "ar:"))
    assert train_main(["--config", str(old_yaml), f"ar.tokenizer_path={tok}", "train.max_steps=3", *common]) == 0
    newest = read_train_state(committed_checkpoints(run_dir)[-1][1])
    assert (newest["step"], newest["task"]) == (3, "next_scale"), "resumed from the old checkpoint, saved under the new name"

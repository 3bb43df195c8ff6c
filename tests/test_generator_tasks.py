"""The next-token and MaskGIT tasks through the Task API and the real entry points: models, losses,
learning a fixed batch, media, exact resume, train -> export -> sample and edit."""
from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from mars_dist.engine.task import Models
from mars_dist.export import export_checkpoint, newest_if_run_dir
from mars_dist.generation.loaders import load_generator, load_tokenizer
from mars_dist.models.generators.trunk import code_vectors
from mars_dist.sample import main as sample_main
from mars_dist.tasks.registry import task_class
from mars_dist.train import main as train_main
from tests.ar_exports import CMX_SHAPE, REPO, tokenizer_export
from tests.generator_exports import tiny_config
from tests.test_next_scale_task import fixed_batch
from tests.toy_task import assert_bit_identical, run_training

TASKS = ("next_token", "maskgit")
MODEL_CLASS = {"next_token": "NextTokenAR", "maskgit": "MaskGIT"}
FAMILY_FLAGS = {"next_token": [], "maskgit": ["--iterations", "3"]}  # MaskGIT: fewer decoding passes


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return tokenizer_export(tmp_path_factory.mktemp("tok") / "export")


def build(task: str, tokenizer_dir, overrides=()):
    torch.manual_seed(0)
    t = task_class(task)(tiny_config(task, tokenizer_dir, overrides), {"cmx_shape": list(CMX_SHAPE)})
    specs = t.build_models()
    modules = {name: spec.module for name, spec in specs.items()}
    return t, specs, Models(modules, modules)


@pytest.mark.parametrize("task", TASKS)
def test_the_model_trains_on_the_frozen_tokenizers_pyramid_and_learns_a_fixed_batch(tokenizer_dir, task):
    t, specs, models = build(task, tokenizer_dir, [f"{task}.cond_drop_prob=0.0", f"{task}.label_drop_prob=0.0",
                                                   "optim.lr=3e-3"])
    assert set(specs) == {task, "tokenizer"} and specs["tokenizer"].optimizer is None
    q = specs["tokenizer"].module.quantizer
    assert t.tokens_per_sample() == sum(h * w for h, w in q.scales)
    assert t.flops_per_sample() > 0
    optimizer = specs[task].optimizer(specs[task].module.parameters())
    frozen = {k: v.clone() for k, v in specs["tokenizer"].module.state_dict().items()}
    batch, calls, losses = fixed_batch(), [], []

    def backward(name, loss):
        calls.append(name)
        loss.backward()

    torch.manual_seed(1)
    for step in range(30):
        logs = t.micro_step(batch, models, step, backward)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(logs["loss/ce"]))
    assert calls == [task] * 30
    assert losses[-1] < 0.5 * losses[0], f"loss did not halve on a fixed batch: {losses[0]:.3f} -> {losses[-1]:.3f}"
    assert all(torch.equal(v, frozen[k]) for k, v in specs["tokenizer"].module.state_dict().items())


def test_maskgit_loss_is_the_cross_entropy_of_the_masked_tokens_only(tokenizer_dir):
    t, specs, models = build("maskgit", tokenizer_dir, ["maskgit.cond_drop_prob=0.0", "maskgit.label_drop_prob=0.0"])
    model, tokenizer = specs["maskgit"].module, specs["tokenizer"].module
    batch = fixed_batch()
    idx_BL = model.layout.flatten(tokenizer.encode(batch["cmx"]))
    masked_BL = torch.zeros_like(idx_BL, dtype=torch.bool)
    masked_BL[:, 1::4] = True
    model.training_mask = lambda b, device: masked_BL
    logs = t.micro_step(batch, models, 0, lambda name, loss: None)
    with torch.no_grad():
        labels = {k: batch[k] for k in ("pitch", "instrument_family", "instrument_source", "velocity")}
        logits = model(labels, code_vectors(tokenizer.quantizer.codebook, idx_BL), masked_BL)
    expected = F.cross_entropy(logits[masked_BL], idx_BL[masked_BL])
    torch.testing.assert_close(logs["loss/ce"], expected)
    assert float(logs["loss/mask_ratio"]) == pytest.approx(0.25, abs=0.02)


@pytest.mark.parametrize("task", TASKS)
def test_log_media_writes_generated_notes(tokenizer_dir, tmp_path, task):
    t, _, models = build(task, tokenizer_dir)
    t.log_media(3, models, fixed_batch(), str(tmp_path))
    wavs = sorted((tmp_path / f"{task}-step00000003").glob("*.wav"))
    assert len(wavs) == 2 and all(w.with_suffix(".png").is_file() for w in wavs)
    assert sf.read(wavs[0])[0].shape == (64000,)


def _train(task, tokenizer_dir, shards, run_dir, max_steps, resume="none"):
    overrides = [f"{task}.tokenizer_path={tokenizer_dir}", f"run_dir={run_dir}", f"data.train_shards={shards['train']}",
                 f"data.valid_shards={shards['valid']}", "engine.device=cpu", "engine.deterministic=true",
                 "logging.wandb_mode=disabled", "stages.media.every=2", "audio.griffin_lim.n_iter=2",
                 "checkpoint.every_steps=2", f"train.max_steps={max_steps}", f"{task}.dropout=0.1"]
    return run_training(overrides, resume, config_path=REPO / "configs" / task / "tiny.yaml")


@pytest.mark.parametrize("task", TASKS)
def test_a_resumed_run_equals_an_unbroken_one(tokenizer_dir, tiny_shards, tmp_path, task):
    """With dropout and the media stage on (it builds a model copy and samples after the step-2 checkpoint):
    the stages draw from a fork of the training RNG, so neither changes what the resumed run draws."""
    straight, straight_weights, straight_losses = _train(task, tokenizer_dir, tiny_shards, tmp_path / "straight", 4)
    _train(task, tokenizer_dir, tiny_shards, tmp_path / "broken", 2)
    resumed, resumed_weights, resumed_losses = _train(task, tokenizer_dir, tiny_shards, tmp_path / "broken", 4, "auto")
    assert straight.step == resumed.step == 4 and len(resumed_losses) == 2
    assert resumed_losses == straight_losses[2:], "the next losses after resume equal the uninterrupted run's"
    assert_bit_identical(straight_weights, resumed_weights)


@pytest.mark.parametrize("task", TASKS)
def test_train_export_sample_and_edit_through_the_entry_points(tokenizer_dir, tiny_shards, tmp_path, task):
    run_dir = tmp_path / "run"
    assert train_main(["--config", str(REPO / "configs" / task / "tiny.yaml"), "--resume", "none", f"run_dir={run_dir}",
                       f"{task}.tokenizer_path={tokenizer_dir}", f"data.train_shards={tiny_shards['train']}",
                       f"data.valid_shards={tiny_shards['valid']}", "logging.wandb_mode=disabled", "train.max_steps=2",
                       "stages.media.every=2", "audio.griffin_lim.n_iter=2"]) == 0
    assert sorted((run_dir).rglob(f"{task}-step*/*.wav")), "log_media wrote no notes during training"
    export = export_checkpoint(newest_if_run_dir(run_dir), None, tmp_path / "export")
    assert json.loads((export / "config.json").read_text())["model"] == task
    gen = load_generator(export, load_tokenizer(tokenizer_dir), torch.device("cpu"))
    assert gen.name == gen.family.key == task and type(gen.model).__name__ == MODEL_CLASS[task]

    common = ["--tokenizer", str(tokenizer_dir), "--model", str(export), "--device", "cpu", "--gl-iters", "2"]
    assert sample_main([*common, "--out", str(tmp_path / "notes"), "--pitch", "60", *FAMILY_FLAGS[task]]) == 0
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == [
        "0000_pitch060_any-family_any-source_any-velocity.png", "0000_pitch060_any-family_any-source_any-velocity.wav"]
    note = tmp_path / "notes" / "0000_pitch060_any-family_any-source_any-velocity.wav"
    assert sample_main([*common, "--out", str(tmp_path / "edit"), "--edit", "bwe", "--input", str(note),
                        "--cutoff-hz", "3000"]) == 0
    metrics = json.loads((tmp_path / "edit" / "edit_metrics.json").read_text())
    assert metrics["edit"] == "bwe" and metrics["generator"] == task and set(metrics["mean"]) == {
        "edited", "empty", "naive_fill", "tokenizer", "griffin_lim"}
    stem = "0000_0000_pitch060_any-family_any-source_any-velocity"
    assert (tmp_path / "edit" / f"{stem}.png").is_file() and (tmp_path / "edit" / f"{stem}_edited.wav").is_file()

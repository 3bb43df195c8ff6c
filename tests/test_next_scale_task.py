"""The next-scale AR's generator task through the Task API: models, losses per scale, learning on a
fixed batch, media."""
from __future__ import annotations

import soundfile as sf
import pytest
import torch

from mars_dist.engine.task import Models
from mars_dist.models.generators.next_scale.model import NextScaleAR
from mars_dist.tasks.registry import task_class
from tests.ar_exports import CMX_SHAPE, ar_config, tokenizer_export


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return tokenizer_export(tmp_path_factory.mktemp("tok") / "export")


def fixed_batch(n: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, CMX_SHAPE[0], 8, 8, generator=g)
    cmx = torch.tanh(torch.nn.functional.interpolate(coarse, size=CMX_SHAPE[1:], mode="bilinear"))
    return {
        "cmx": cmx,
        "pitch": torch.randint(0, 128, (n,), generator=g),
        "velocity": torch.tensor([25, 50, 75, 127])[:n],
        "instrument_family": torch.randint(0, 11, (n,), generator=g),
        "instrument_source": torch.randint(0, 3, (n,), generator=g),
        "instrument": torch.zeros(n, dtype=torch.long),
        "key": [f"note_{i}" for i in range(n)],
    }


def build(tokenizer_dir, overrides=()):
    torch.manual_seed(0)
    task = task_class("next_scale")(ar_config(tokenizer_dir, overrides), {"cmx_shape": list(CMX_SHAPE)})
    specs = task.build_models()
    modules = {name: spec.module for name, spec in specs.items()}
    return task, specs, Models(modules, modules)


def test_models_next_scale_trained_and_tokenizer_frozen(tokenizer_dir):
    task, specs, _ = build(tokenizer_dir)
    assert set(specs) == {"next_scale", "tokenizer"}
    assert specs["tokenizer"].optimizer is None and specs["next_scale"].optimizer is not None
    ar, q = specs["next_scale"].module, specs["tokenizer"].module.quantizer
    assert isinstance(ar, NextScaleAR)
    assert ar.scales == q.scales and ar.codebook_size == q.codebook_size and ar.codebook_dim == q.codebook_dim
    assert task.tokens_per_sample() == sum(h * w for h, w in q.scales)
    assert task.flops_per_sample() > 6 * sum(p.numel() for p in ar.blocks.parameters()) * task.tokens_per_sample() * 0.5


def test_micro_step_learns_a_fixed_batch_and_logs_every_scale(tokenizer_dir):
    task, specs, models = build(tokenizer_dir, ["next_scale.cond_drop_prob=0.0", "next_scale.label_drop_prob=0.0", "optim.lr=3e-3"])
    optimizer = specs["next_scale"].optimizer(specs["next_scale"].module.parameters())
    tokenizer_before = {k: v.clone() for k, v in specs["tokenizer"].module.state_dict().items()}
    batch, calls, losses = fixed_batch(), [], []

    def backward(name, loss):
        assert loss.dim() == 0 and torch.isfinite(loss)
        calls.append(name)
        loss.backward()

    for step in range(25):
        logs = task.micro_step(batch, models, step, backward)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(logs["loss/ce"]))
    assert calls == ["next_scale"] * 25
    K = len(specs["next_scale"].module.scales)
    assert {f"scale/ce_s{k}" for k in range(K)} | {f"scale/acc_s{k}" for k in range(K)} <= set(logs)
    assert losses[-1] < 0.5 * losses[0], f"loss did not halve on a fixed batch: {losses[0]:.3f} -> {losses[-1]:.3f}"
    assert float(logs["loss/acc"]) > 0.5
    for k, v in specs["tokenizer"].module.state_dict().items():
        assert torch.equal(v, tokenizer_before[k]), f"frozen tokenizer changed: {k}"


def test_log_media_writes_generated_notes(tokenizer_dir, tmp_path):
    task, _, models = build(tokenizer_dir)
    items = task.log_media(3, models, fixed_batch(), str(tmp_path))
    wavs = sorted((tmp_path / "next_scale-step00000003").glob("*.wav"))
    assert len(wavs) == task.cfg.next_scale.media_notes == 2
    for wav in wavs:
        data, rate = sf.read(wav)
        assert data.shape == (64000,) and rate == 16000
        assert wav.with_suffix(".png").stat().st_size > 0
    assert len(items) == 4
    assert task.log_media(3, models, fixed_batch(), None) == {}


def test_bad_tokenizer_path_and_shape_are_named(tokenizer_dir, tmp_path):
    with pytest.raises(ValueError, match="next_scale.tokenizer_path is empty"):
        task_class("next_scale")(ar_config(tokenizer_dir, ["next_scale.tokenizer_path=''"]), {"cmx_shape": list(CMX_SHAPE)}).build_models()
    with pytest.raises(FileNotFoundError, match="no such folder"):
        task_class("next_scale")(ar_config(tmp_path / "nothing"), {"cmx_shape": list(CMX_SHAPE)}).build_models()
    with pytest.raises(ValueError, match=r"trained on CMX \(2, 256, 256\), the shards hold \(4, 128, 256\)"):
        task_class("next_scale")(ar_config(tokenizer_dir), {"cmx_shape": [4, 128, 256]}).build_models()

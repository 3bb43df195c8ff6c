"""A small real Task for engine tests: learns pitch and instrument family from CMX tensors.

It has what the engine must handle for the real tasks, at a size that trains in milliseconds:
two trained models with their own optimizers (like the tokenizer's generator and discriminator),
a frozen EMA copy updated in `after_step`, dropout (so RNG state matters for exact resume), task
state, FLOPs for MFU, media, and exports of its regressors (the builder it registers rebuilds them
through mars_dist.models.builders.load_model). Runs under every launch path as
`task=tests.toy_task:ToyTask`.

Fault injection for tests: TOY_TASK_NONFINITE="RANK:STEP[,RANK:STEP...]" makes the regression loss
NaN on that rank ("*" for every rank) at that 0-based step. TOY_TASK_SLOW_EXIT="RANK:SECONDS" makes
that rank take SECONDS to exit after the run (an atexit sleep), like a worker that is still shutting
down when a launcher, seeing another worker exit first, signals it.
"""
from __future__ import annotations

import atexit
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

import torch
from torch import nn
from torch.nn import functional as F

from mars_dist.config import load_config
from mars_dist.engine import schedule as lr_schedule
from mars_dist.engine.backends import build_backend
from mars_dist.engine.checkpoint import read_train_state, resolve_resume
from mars_dist.engine.task import ModelSpec, Models, Task
from mars_dist.io.exports import ExportSpec
from mars_dist.models.builders import register_builder
from mars_dist.tasks.registry import register_task, task_class
from mars_dist.engine.trainer import Trainer
from mars_dist.train import build_stream, fixed_validation_batch

NUM_FAMILIES = 11
FEATURES = 8
EMA_RATE = 0.1


class PitchRegressor(nn.Module):
    """conv -> pooled features -> pitch / 127."""

    def __init__(self, channels: int, features: int = FEATURES):
        super().__init__()
        self.conv = nn.Conv2d(channels, features, kernel_size=3, stride=2, padding=1)
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(features, 1)

    def forward(self, cmx_BCHW: torch.Tensor):
        feats_BF = F.gelu(self.conv(cmx_BCHW)).mean(dim=(2, 3))
        return feats_BF, self.head(self.dropout(feats_BF)).squeeze(-1)


@dataclass
class RegressorConfig:
    """The architecture an export of the regressor (or its EMA) stores."""

    features: int = FEATURES


REGRESSOR_BUILDER = "tests.toy_task:PitchRegressor"
register_builder(REGRESSOR_BUILDER, RegressorConfig,
                 lambda arch, inputs: PitchRegressor(int(inputs["cmx_shape"][0]), arch.features))


def _nonfinite_injections() -> List[tuple]:
    spec = os.environ.get("TOY_TASK_NONFINITE", "")
    return [tuple(item.split(":")) for item in spec.split(",") if item]


def _slow_exit_injection() -> None:
    rank, _, seconds = os.environ.get("TOY_TASK_SLOW_EXIT", "").partition(":")
    if rank and rank == os.environ.get("RANK", "0"):
        atexit.register(time.sleep, float(seconds))


@register_task("ToyTask")  # run configs name it task=tests.toy_task:ToyTask
class ToyTask(Task):
    def build_models(self) -> Dict[str, ModelSpec]:
        _slow_exit_injection()
        channels = self.data_info["cmx_shape"][0]
        optim = self.cfg.optim

        def adamw(params):
            return torch.optim.AdamW(params, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay)

        regressor = PitchRegressor(channels)
        ema = PitchRegressor(channels)
        ema.load_state_dict(regressor.state_dict())
        self.ema_updates = 0
        return {
            "regressor": ModelSpec(regressor, optimizer=adamw, lr_multiplier=lr_schedule.from_config(self.cfg)),
            "classifier": ModelSpec(nn.Linear(FEATURES, NUM_FAMILIES), optimizer=adamw),
            "ema": ModelSpec(ema),
        }

    def micro_step(self, batch: Dict[str, Any], models: Models, step: int, backward) -> Dict[str, torch.Tensor]:
        feats_BF, pitch_B = models["regressor"](batch["cmx"])
        regression = F.mse_loss(pitch_B.float(), batch["pitch"].float() / 127.0)
        rank = os.environ.get("RANK", "0")
        if any(r in ("*", rank) and int(s) == step for r, s in _nonfinite_injections()):
            regression = regression * float("nan")
        backward("regressor", regression)
        logits_BV = models["classifier"](feats_BF.detach())
        classification = F.cross_entropy(logits_BV.float(), batch["instrument_family"])
        backward("classifier", classification)
        return {"regression": regression.detach(), "classification": classification.detach()}

    @torch.no_grad()
    def after_step(self, step: int, models: Models) -> None:
        for ema_p, live_p in zip(models.unwrap("ema").parameters(), models.unwrap("regressor").parameters()):
            ema_p.lerp_(live_p, EMA_RATE)
        self.ema_updates += 1

    def export_spec(self, name: str) -> ExportSpec:
        """The regressor and its EMA rebuild through REGRESSOR_BUILDER; the classifier head is not exportable."""
        if name not in ("regressor", "ema"):
            return super().export_spec(name)
        return ExportSpec(REGRESSOR_BUILDER, {"features": FEATURES}, {"cmx_shape": list(self.data_info["cmx_shape"])})

    def state_dict(self) -> Dict[str, Any]:
        return {"ema_updates": self.ema_updates}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.ema_updates = int(state["ema_updates"])

    def flops_per_sample(self) -> float:
        c, h, w = self.data_info["cmx_shape"]
        conv_macs = (h // 2) * (w // 2) * FEATURES * c * 9
        return 6.0 * (conv_macs + FEATURES + FEATURES * NUM_FAMILIES)  # forward 2 x MACs, backward twice that

    def tokens_per_sample(self) -> int:
        return 1

    def log_media(self, step: int, models: Models, batch: Dict[str, Any], out_dir) -> Dict[str, Any]:
        _, pitch_B = models["ema"](batch["cmx"])
        error = (pitch_B.float() * 127.0 - batch["pitch"].float()).abs().mean().item()
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / "ema_pitch_error.txt").write_text(f"{error}\n")
        return {"media/ema_pitch_abs_error": error}


def toy_overrides(shards: Dict[str, Any], run_dir, *extra: str) -> List[str]:
    """Run-config overrides that train ToyTask on the `tiny_shards` fixture in `run_dir` (tiny, quiet, CPU)."""
    return [
        "task=tests.toy_task:ToyTask",
        f"run_dir={run_dir}",
        f"data.train_shards={shards['train']}",
        f"data.valid_shards={shards['valid']}",
        "data.batch_size=4",
        "engine.device=cpu",
        "logging.wandb_mode=disabled",
        "optim.lr=0.01",
        "train.log_every=1",
        "stages.media.every=0",
        "checkpoint.every_steps=2",
        *extra,
    ]


def build_trainer(overrides: List[str], resume: str = "none", config_path=None) -> Trainer:
    """The Trainer of the task that `config_path` (optional) + `overrides` name, built in this process
    the way mars_dist.train builds it (`resume`: auto | none | a checkpoint folder)."""
    cfg = load_config(config_path, overrides)
    backend = build_backend(cfg)
    resume_from = resolve_resume(Path(cfg.run_dir), resume)
    stream = build_stream(cfg, backend, read_train_state(resume_from)["cursor"] if resume_from else None)
    task = task_class(cfg.task)(cfg, stream.manifest)
    valid = fixed_validation_batch(cfg, stream.geometry.micro_batch) if cfg.stages.media.every > 0 else None
    return Trainer(cfg, backend, task, stream, resume_from=resume_from, valid_batch=valid)


def record_losses(trainer: Trainer) -> List[Dict[str, float]]:
    """The list that `trainer` will append each step's losses (mean over micro-batches and ranks) to."""
    losses: List[Dict[str, float]] = []
    step_fn = trainer.train_step

    def recording_step(micro_batches):
        result = step_fn(micro_batches)
        losses.append(result.losses)
        return result

    trainer.train_step = recording_step
    return losses


def run_training(overrides: List[str], resume: str = "none", config_path=None):
    """Trains the task that `config_path` (optional) + `overrides` name, in this process, through the real Trainer.

    Returns (TrainResult, {model: full state dict} for every model of the task, per-step losses).
    """
    trainer = build_trainer(overrides, resume, config_path)
    losses = record_losses(trainer)
    result = trainer.train()
    weights = {name: trainer.backend.full_state_dict(name) for name in trainer.models}
    trainer.backend.shutdown()
    return result, weights, losses


def run_toy(shards, run_dir, *overrides, resume="none"):
    """Trains ToyTask on `shards` in this process (see run_training)."""
    return run_training(toy_overrides(shards, run_dir, *overrides), resume)


def assert_bit_identical(a, b) -> None:
    """Every tensor of every model equal bit for bit (a, b: run_training's weights)."""
    assert a.keys() == b.keys()
    for model in a:
        for key in a[model]:
            assert torch.equal(a[model][key], b[model][key]), f"{model}.{key} differs"

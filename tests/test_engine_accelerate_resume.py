"""Accelerate (DDP and FSDP2) resumes the tokenizer GAN although some parameters never stepped.

The tiny tokenizer has 3 scales over 4 shared phi convs, so `quantizer.phi.phis.1` never gets a
gradient and its optimizer never holds state for it; with `tokenizer.disc.start_step=3` the
discriminator has not stepped at all when the step-2 checkpoint is written. A run of 2 steps on
2 gloo processes, saved and resumed for 2 more steps, must then equal 4 steps straight (one
checkpoint, at the end) bit for bit (deterministic mode, same world size, so the same RNG streams):
weights of all three models (the EMA included), optimizer state and losses. Parameters without
optimizer state must have none after the resume either, and a checkpoint of another model is
refused with an error naming what differs. Resuming the tokenizer on other world sizes (2 -> 1 ->
3) on every backend: test_elastic_train.py.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch

from mars_dist.engine.checkpoint import CheckpointError
from tests.fixtures.dist import run_distributed
from tests.test_tokenizer_resume import TINY
from tests.toy_task import build_trainer, record_losses

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

STRATEGIES = ("ddp", "fsdp")
UNUSED_PHI = "quantizer.phi.phis.1.weight"
COMMON = ["engine.backend=accelerate", "engine.device=cpu", "engine.deterministic=true", "logging.wandb_mode=disabled",
          "stages.media.every=0", "train.log_every=1", "data.batch_size=6", "data.micro_batch_size=1", "checkpoint.every_steps=0",
          "tokenizer.disc.start_step=3", "tokenizer.dead_code_steps=0", "tokenizer.quant_dropout=0", "tokenizer.pos_init=random"]


def _train(shards: str, run_dir: Path, strategy: str, max_steps: int, resume: str = "none", *extra: str) -> Dict[str, Any]:
    overrides = [*COMMON, f"engine.accelerate.strategy={strategy}", f"data.train_shards={shards}", f"run_dir={run_dir}",
                 f"train.max_steps={max_steps}", *extra]
    trainer = build_trainer(overrides, resume, config_path=TINY)
    losses = record_losses(trainer)
    result = trainer.train()
    backend = trainer.backend  # no shutdown: the next run of the plan reuses the process group
    return {"step": result.step, "losses": losses, "weights": {name: backend.full_state_dict(name) for name in trainer.models},
            "optim": {name: backend.full_optimizer_state(name) for name in ("tokenizer", "discriminator")}}


def _refused(shards: str, run_dir: Path, checkpoint: Path) -> str:
    """Resuming `checkpoint` into a tokenizer with a fifth phi conv: the error's message."""
    try:
        _train(shards, run_dir, "ddp", 4, str(checkpoint), "tokenizer.phi_shared=5")
    except CheckpointError as err:
        return str(err)
    return "no error"


def run_plan(shards: str, root: str) -> bytes:
    """One rank's runs: every strategy straight, interrupted at step 2, resumed; then the refused resume."""
    root = Path(root)
    results: Dict[str, Any] = {}
    for strategy in STRATEGIES:
        half = root / f"{strategy}-half"
        results[f"{strategy}/straight"] = _train(shards, root / f"{strategy}-straight", strategy, 4)
        results[f"{strategy}/half"] = _train(shards, half, strategy, 2)
        results[f"{strategy}/resumed"] = _train(shards, half, strategy, 4, "auto")
    results["refused"] = _refused(shards, root / "refused", root / "ddp-half" / "checkpoints" / "step-00000002")
    buffer = io.BytesIO()
    torch.save(results, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def runs(tiny_shards, tmp_path_factory) -> Dict[str, Any]:
    root = tmp_path_factory.mktemp("accelerate_resume")
    rank0 = run_distributed(run_plan, 2, tiny_shards["train"], str(root), timeout_s=600, init_process_group=False)[0]
    return torch.load(io.BytesIO(rank0), weights_only=False)


def _stateful(optim: Dict[str, Dict[str, Any]]) -> Dict[str, List[str]]:
    return {model: sorted(state) for model, state in optim.items()}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_checkpoint_before_any_discriminator_step_holds_no_state_for_unstepped_parameters(runs, strategy):
    half = runs[f"{strategy}/half"]
    assert half["step"] == 2
    assert half["optim"]["discriminator"] == {}, "saving must not give a never-stepped optimizer state"
    assert UNUSED_PHI not in half["optim"]["tokenizer"] and "quantizer.phi.phis.0.weight" in half["optim"]["tokenizer"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_resume_on_the_same_world_size_equals_the_unbroken_run_bit_for_bit(runs, strategy):
    straight, resumed = runs[f"{strategy}/straight"], runs[f"{strategy}/resumed"]
    assert resumed["step"] == 4 and len(resumed["losses"]) == 2, "the resumed run trains only the remaining steps"
    assert resumed["losses"] == straight["losses"][2:]
    assert resumed["losses"][1]["loss/disc"] > 0, "the discriminator trained after the resume"
    for model, weights in straight["weights"].items():
        for key, value in weights.items():
            assert torch.equal(resumed["weights"][model][key], value), f"{strategy}: {model}.{key} differs from the unbroken run"
    assert _stateful(resumed["optim"]) == _stateful(straight["optim"])
    assert UNUSED_PHI not in resumed["optim"]["tokenizer"], "a parameter that never stepped has no optimizer state after resume"
    for model, state in straight["optim"].items():
        for name, entries in state.items():
            for key, value in entries.items():
                assert torch.equal(torch.as_tensor(resumed["optim"][model][name][key]), torch.as_tensor(value)), \
                    f"{strategy}: optimizer {key} of {model}.{name} differs from the unbroken run"


def test_a_checkpoint_of_another_model_is_refused_naming_the_difference(runs):
    message = runs["refused"]
    assert "ddp-half/checkpoints/step-00000002/tokenizer: written for another model" in message, message
    assert "quantizer.phi.phis.4.weight" in message, message

"""Export: consolidated safetensors + config.json from a checkpoint, loadable on CPU without shards
through the builder its task names (mars_dist.models.builders.load_model)."""
from __future__ import annotations

import pytest
import torch

from mars_dist.engine.checkpoint import CheckpointError, COMMITTED
from mars_dist.export import export_checkpoint, main
from mars_dist.io.exports import read_export
from mars_dist.models.builders import load_model
from tests.toy_task import REGRESSOR_BUILDER, PitchRegressor, run_toy


def test_export_round_trip_of_the_ema_model(tiny_shards, tmp_path):
    result, weights, _ = run_toy(tiny_shards, tmp_path / "run", "train.max_steps=2")
    out = tmp_path / "export"
    assert main(["--checkpoint", str(result.last_checkpoint), "--model", "ema", "--out", str(out)]) == 0

    state, config = read_export(out)
    assert config["model"] == "ema" and config["step"] == 2 and config["backend"] == "debug"
    assert (config["builder"], config["architecture"]) == (REGRESSOR_BUILDER, {"features": 8})
    assert config["shapes"] == {k: list(v.shape) for k, v in weights["ema"].items()}
    for key, value in weights["ema"].items():
        assert torch.equal(state[key], value), key

    module, config = load_model(out, expected=(REGRESSOR_BUILDER,))
    assert isinstance(module, PitchRegressor) and not module.training
    cmx_BCHW = torch.randn(3, *config["inputs"]["cmx_shape"])
    _, pitch_B = module(cmx_BCHW)
    assert pitch_B.shape == (3,) and torch.isfinite(pitch_B).all()


def test_export_names_what_is_wrong(tiny_shards, tmp_path):
    result, _, _ = run_toy(tiny_shards, tmp_path / "run", "train.max_steps=2")
    with pytest.raises(ValueError, match="choose one with --model"):
        export_checkpoint(result.last_checkpoint, None, tmp_path / "a")
    with pytest.raises(ValueError, match="--model 'critic': the .* task has models regressor, classifier, ema"):
        export_checkpoint(result.last_checkpoint, "critic", tmp_path / "b")
    with pytest.raises(ValueError, match="does not say how to rebuild its model 'classifier'"):
        export_checkpoint(result.last_checkpoint, "classifier", tmp_path / "d")
    assert not (tmp_path / "d").exists(), "a model the task cannot rebuild is refused before anything is written"
    (result.last_checkpoint / COMMITTED).unlink()
    with pytest.raises(CheckpointError, match="not a committed checkpoint"):
        export_checkpoint(result.last_checkpoint, "ema", tmp_path / "c")
    assert not (tmp_path / "c" / "config.json").exists()

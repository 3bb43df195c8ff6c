"""The DeepSpeed JSON config the backend builds: from the run config, or from configs/deepspeed/*.json
with the run's batch numbers filled in; bad files are errors that name the file and the key."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mars_dist.config import load_config
from mars_dist.engine.backends.deepspeed_backend import deepspeed_config

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "configs" / "deepspeed").glob("*.json"))


def _cfg(*overrides: str):
    return load_config(None, ["data.batch_size=12", "optim.grad_clip=0.7", *overrides])


def test_generated_config_follows_the_run():
    config = deepspeed_config(_cfg("engine.deepspeed.zero_stage=3", "engine.deepspeed.offload_optimizer=true"), 3, 2, 2, on_gpu=False)
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"], config["train_batch_size"]) == (3, 2, 12)
    assert config["gradient_clipping"] == 0.7
    assert config["zero_optimization"]["stage"] == 3
    assert config["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": False}
    assert config["bf16"]["enabled"] is False and config["zero_allow_untested_optimizer"] is True
    assert deepspeed_config(_cfg(), 3, 2, 2, on_gpu=True)["bf16"]["enabled"] is True


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_file_loads_with_the_run_numbers_filled_in(path):
    config = deepspeed_config(_cfg(f"engine.deepspeed.config_file={path}"), 4, 1, 3, on_gpu=False)
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"], config["train_batch_size"]) == (4, 1, 12)
    assert config["gradient_clipping"] == 0.7
    assert config["zero_optimization"]["stage"] in (1, 2, 3)
    assert config["bf16"]["enabled"] is False  # "auto" on the CPU


@pytest.mark.parametrize(
    "content, message",
    [
        ({"zero_optimization": {"stage": 2}, "train_batch_size": 64}, "train_batch_size=64 contradicts"),
        ({"zero_optimization": {"stage": 2}, "gradient_clipping": 5.0}, "gradient_clipping=5.0 contradicts"),
        ({"zero_optimization": {"stage": 2}, "optimizer": {"type": "Adam"}}, "key 'optimizer' is not allowed"),
        ({"zero_optimization": {"stage": 4}}, "zero_optimization.stage=4"),
        ({"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}}, "bf16.enabled is true but the run is on the CPU"),
    ],
)
def test_a_bad_config_file_is_an_error_naming_file_and_key(tmp_path, content, message):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message) as err:
        deepspeed_config(_cfg(f"engine.deepspeed.config_file={path}"), 3, 2, 2, on_gpu=False)
    assert str(path) in str(err.value) or "bf16" in message


def test_missing_file_and_bad_stage_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        deepspeed_config(_cfg(f"engine.deepspeed.config_file={tmp_path / 'nope.json'}"), 3, 2, 2, on_gpu=False)
    with pytest.raises(ValueError, match="engine.deepspeed.zero_stage=0"):
        deepspeed_config(_cfg("engine.deepspeed.zero_stage=0"), 3, 2, 2, on_gpu=False)


def test_a_model_that_is_not_trained_is_named_with_the_trained_ones():
    from mars_dist.engine.backends._common import trained_entry

    table = {"tokenizer": "opt-t", "discriminator": "opt-d"}
    assert trained_entry(table, "tokenizer") == "opt-t"
    with pytest.raises(KeyError, match=r"'tokenizer_ema'.*\['discriminator', 'tokenizer'\]"):
        trained_entry(table, "tokenizer_ema")

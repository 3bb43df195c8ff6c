"""The DeepSpeed JSON config the backend builds: from the run config, or from configs/deepspeed/*.json
with the run's batch numbers filled in; bad files are errors that name the file and the key (what
the file alone gets wrong when the run config loads, what contradicts the run's batch geometry when
the backend builds the config)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mars_dist.config import load_config
from mars_dist.data.geometry import BatchGeometry
from mars_dist.device import resolve_autocast_dtype
from mars_dist.engine.backends.deepspeed_config import deepspeed_config
from mars_dist.io.structured import ConfigError

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "configs" / "deepspeed").glob("*.json"))


TWO_X_3_X_2 = BatchGeometry(12, 2, 3, 2)  # global batch 12 = 2 processes x micro-batch 3 x accumulation 2


def _cfg(*overrides: str):
    return load_config(None, ["data.batch_size=12", "optim.grad_clip=0.7", *overrides])


def _wants_bf16(cfg, on_gpu: bool) -> bool:
    """What the backend asks for: engine.mixed_precision resolved on the run's device."""
    return resolve_autocast_dtype(cfg.engine.mixed_precision, torch.device("cuda" if on_gpu else "cpu")) is not None


def test_generated_config_follows_the_run():
    cfg = _cfg("engine.deepspeed.zero_stage=3", "engine.deepspeed.offload_optimizer=true")
    config = deepspeed_config(cfg, TWO_X_3_X_2, on_gpu=False, wants_bf16=_wants_bf16(cfg, on_gpu=False))
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"], config["train_batch_size"]) == (3, 2, 12)
    assert config["gradient_clipping"] == 0.7
    assert config["zero_optimization"]["stage"] == 3
    assert config["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": False}
    assert config["bf16"]["enabled"] is False and config["zero_allow_untested_optimizer"] is True
    assert deepspeed_config(_cfg(), TWO_X_3_X_2, on_gpu=True, wants_bf16=_wants_bf16(_cfg(), on_gpu=True))["bf16"]["enabled"] is True


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_file_loads_with_the_run_numbers_filled_in(path):
    config = deepspeed_config(_cfg(f"engine.deepspeed.config_file={path}"), BatchGeometry(12, 3, 4, 1), on_gpu=False,
                              wants_bf16=False)
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"], config["train_batch_size"]) == (4, 1, 12)
    assert config["gradient_clipping"] == 0.7
    assert config["zero_optimization"]["stage"] in (1, 2, 3)
    assert config["bf16"]["enabled"] is False  # "auto" on the CPU


@pytest.mark.parametrize(
    "content, message",
    [  # the file alone is wrong: refused when the run config loads, before any process group or model
        ({"zero_optimization": {"stage": 2}, "optimizer": {"type": "Adam"}}, "key 'optimizer' is not allowed"),
        ({"zero_optimization": {"stage": 4}}, "zero_optimization.stage=4"),
    ],
)
def test_a_bad_config_file_is_refused_when_the_run_config_loads(tmp_path, content, message):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=message) as err:
        _cfg(f"engine.deepspeed.config_file={path}")
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "content, message",
    [  # what contradicts the run's numbers or device: refused when the backend builds the config
        ({"zero_optimization": {"stage": 2}, "train_batch_size": 64}, "train_batch_size=64 contradicts"),
        ({"zero_optimization": {"stage": 2}, "gradient_clipping": 5.0}, "gradient_clipping=5.0 contradicts"),
        ({"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}}, "bf16.enabled is true but the run is on the CPU"),
    ],
)
def test_a_config_file_contradicting_the_run_is_an_error_naming_file_and_key(tmp_path, content, message):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message) as err:
        deepspeed_config(_cfg(f"engine.deepspeed.config_file={path}"), TWO_X_3_X_2, on_gpu=False, wants_bf16=False)
    assert str(path) in str(err.value)


def test_missing_file_and_bad_stage_are_errors_when_the_run_config_loads(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        _cfg(f"engine.deepspeed.config_file={tmp_path / 'nope.json'}")
    with pytest.raises(ConfigError, match="engine.deepspeed.zero_stage=0"):
        _cfg("engine.deepspeed.zero_stage=0")


def test_a_model_that_is_not_trained_is_named_with_the_trained_ones():
    from mars_dist.engine.backend import trained_entry

    table = {"tokenizer": "opt-t", "discriminator": "opt-d"}
    assert trained_entry(table, "tokenizer") == "opt-t"
    with pytest.raises(KeyError, match=r"'tokenizer_ema'.*\['discriminator', 'tokenizer'\]"):
        trained_entry(table, "tokenizer_ema")

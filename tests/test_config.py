"""The config system: YAML onto typed dataclasses, `key=value` overrides, errors that say where and what."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mars_dist.config import ConfigError, RunConfig, load_config, save_config

REPO = Path(__file__).resolve().parents[1]


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_yaml_base_chain_and_overrides_layer_in_order(tmp_path):
    base = write(tmp_path / "base.yaml", {"seed": 1, "tokenizer": {"enc_depth": 3, "enc_width": 64}})
    child = write(tmp_path / "child.yaml", {"base": "base.yaml", "tokenizer": {"enc_depth": 5}})
    cfg = load_config(child, ["tokenizer.enc_width=96", "data.batch_size=12"])
    assert isinstance(cfg, RunConfig)
    assert (cfg.seed, cfg.tokenizer.enc_depth, cfg.tokenizer.enc_width, cfg.data.batch_size) == (1, 5, 96, 12)
    assert base.exists()


def test_unknown_key_in_a_file_names_the_file_the_key_and_the_closest_valid_key(tmp_path):
    path = write(tmp_path / "run.yaml", {"tokenizer": {"enc_dept": 3}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "tokenizer.enc_dept" in message and "closest valid key: tokenizer.enc_depth" in message


def test_wrong_type_on_the_command_line_names_the_override_and_the_key():
    with pytest.raises(ConfigError, match=r"command-line override 'data.batch_size=many'.*data\.batch_size"):
        load_config(None, ["data.batch_size=many"])


def test_malformed_override_and_bad_value_and_missing_file_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(None, ["train.max_steps"])
    with pytest.raises(ConfigError, match="engine.backend='horovod'"):
        load_config(None, ["engine.backend=horovod"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    loop = write(tmp_path / "loop.yaml", {"base": "loop.yaml"})
    with pytest.raises(ConfigError, match="loops back"):
        load_config(loop)


def test_saved_config_loads_back_to_the_same_values(tmp_path):
    cfg = load_config(None, ["tokenizer.scales=[[1,2],[2,4]]", "optim.lr=0.003", "audio.cmx.layout=contiguous"])
    save_config(cfg, tmp_path / "saved.yaml")
    again = load_config(tmp_path / "saved.yaml")
    assert again == cfg
    assert again.tokenizer.scales == [[1, 2], [2, 4]]


SHIPPED = sorted(p.relative_to(REPO / "configs").with_suffix("").as_posix()
                 for p in (REPO / "configs").glob("*/*.yaml") if p.parent.name not in ("accelerate", "deepspeed"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_run_config_loads(name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert cfg.task == name.split("/")[0]


def test_the_old_name_of_the_next_scale_task_and_its_section_still_load(tmp_path):
    old = write(tmp_path / "old.yaml", {"task": "ar", "ar": {"depth": 3, "width": 96, "heads": 3}})
    cfg = load_config(old, ["ar.heads=4", "next_scale.width=128"])
    assert cfg.task == "next_scale" and (cfg.next_scale.depth, cfg.next_scale.width, cfg.next_scale.heads) == (3, 128, 4)
    both = write(tmp_path / "both.yaml", {"task": "next_scale", "ar": {"depth": 3}, "next_scale": {"depth": 4}})
    with pytest.raises(ConfigError, match="sets both 'ar' and 'next_scale'"):
        load_config(both)


@pytest.mark.parametrize("override, message", [
    ("train.eval_every=5", r"'train.eval_every' was replaced by stages.media.every \(media\) and stages.validate.every"),
    ("optim.decay=linear", r"optim.decay='linear': expected one of none, cosine"),
    ("engine.accelerate.strategy=zero", r"engine.accelerate.strategy='zero': expected one of ddp, fsdp"),
    ("engine.deepspeed.zero_stage=7", r"engine.deepspeed.zero_stage=7: expected 1, 2 or 3"),
    ("engine.deepspeed.config_file=/no/such.json", r"engine.deepspeed.config_file='/no/such.json': no such file"),
    ("stages.media.every=-1", r"stages.media.every=-1: expected >= 0"),
    ("engine.mixed_precision=fp16", r"engine.mixed_precision='fp16': expected auto, no, bf16"),
])
def test_settings_are_checked_when_the_config_loads(override, message):
    """Refused before any process group, extension build or model exists (a ZeRO stage used to be
    refused only after DeepSpeed had built a CPU op)."""
    with pytest.raises(ConfigError, match=message):
        load_config(REPO / "configs" / "tokenizer" / "tiny.yaml", [override])


def test_a_cosine_decay_needs_more_steps_than_the_warm_up():
    with pytest.raises(ConfigError, match=r"optim.decay=cosine needs train.max_steps \(40\) > optim.warmup_steps \(100\)"):
        load_config(REPO / "configs" / "tokenizer" / "small.yaml", ["train.max_steps=40"])

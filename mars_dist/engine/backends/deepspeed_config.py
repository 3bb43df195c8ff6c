"""Settings of the DeepSpeed backend (engine.deepspeed.*) and the DeepSpeed JSON config they make.

Checked when the run config loads (a ZeRO stage or a config file DeepSpeed would refuse is an error
before any process group, extension build or model exists). The run config owns the batch size and
the clipping threshold, so that a run means the same thing on any number of processes and on every
backend: a config file writes "auto" for them or leaves them out, and a number that contradicts the
run is an error naming both values (checked once the world size is known).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

from mars_dist.data.geometry import BatchGeometry
from mars_dist.errors import UserValueError

ZERO_STAGES = (1, 2, 3)
RUN_OWNED = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size", "gradient_clipping")


@dataclass
class DeepSpeedConfig:
    zero_stage: int = 2
    offload_optimizer: bool = False
    config_file: str = ""  # a JSON in configs/deepspeed/; empty = generated from this run config

    def validate(self) -> None:
        if self.config_file:
            read_config_file(Path(self.config_file))
        elif self.zero_stage not in ZERO_STAGES:
            raise ValueError(f"engine.deepspeed.zero_stage={self.zero_stage!r}: expected 1, 2 or 3")


def read_config_file(path: Path) -> Dict[str, Any]:
    """engine.deepspeed.config_file, checked for what the run must own and for a ZeRO stage."""
    key = f"engine.deepspeed.config_file={str(path)!r}"
    if not path.is_file():
        raise UserValueError(f"{key}: no such file (expected a DeepSpeed JSON config, e.g. configs/deepspeed/zero3.json)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserValueError(f"{key}: not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise UserValueError(f"{key}: expected a JSON object at the top level")
    for owned in ("optimizer", "scheduler"):
        if owned in config:
            raise UserValueError(f"{key}: key {owned!r} is not allowed: the task builds the optimizer and the lr "
                                 "schedule (optim.* in the run config); remove it")
    stage = config.get("zero_optimization", {}).get("stage")
    if stage not in ZERO_STAGES:
        raise UserValueError(f"{key}: zero_optimization.stage={stage!r}: expected 1, 2 or 3")
    return config


def deepspeed_config(cfg: Any, geometry: BatchGeometry, on_gpu: bool, wants_bf16: bool) -> Dict[str, Any]:
    """The DeepSpeed JSON config of this run: generated from the run config, or read from
    `engine.deepspeed.config_file` with the run's numbers filled in. `bf16.enabled: "auto"` means "on GPU"."""
    ds_cfg = cfg.engine.deepspeed
    owned_by_run = dict(zip(RUN_OWNED, (geometry.micro_batch, geometry.grad_accum, geometry.global_batch,
                                        cfg.optim.grad_clip)))
    if ds_cfg.config_file:
        config = read_config_file(Path(ds_cfg.config_file))
        for key, value in owned_by_run.items():
            given = config.get(key, "auto")
            if given != "auto" and given != value:
                raise UserValueError(
                    f"engine.deepspeed.config_file={ds_cfg.config_file!r}: {key}={given!r} contradicts the run config, "
                    f"which gives {key}={value} on {geometry.world_size} process(es) (data.batch_size, optim.grad_clip); "
                    "write \"auto\" or leave it out")
    else:
        zero: Dict[str, Any] = {"stage": ds_cfg.zero_stage}
        if ds_cfg.offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
        config = {"zero_optimization": zero, "bf16": {"enabled": on_gpu and wants_bf16}}
    config.update(owned_by_run)
    bf16 = config.setdefault("bf16", {"enabled": False})
    if bf16.get("enabled") == "auto":
        bf16["enabled"] = on_gpu
    if bf16.get("enabled") and not on_gpu:
        raise UserValueError(f"{ds_cfg.config_file or 'DeepSpeed config'}: bf16.enabled is true but the run is on the CPU "
                             "(fp32 only); use \"auto\"")
    offload = config["zero_optimization"].get("offload_optimizer")
    if offload and not on_gpu:
        offload["pin_memory"] = False  # there is no pinned host memory without a GPU
    # The task hands DeepSpeed a plain torch optimizer (same hyper-parameters on every backend).
    config["zero_allow_untested_optimizer"] = True
    config["zero_force_ds_cpu_optimizer"] = False
    config.setdefault("steps_per_print", 2**31 - 1)
    config.setdefault("wall_clock_breakdown", False)
    return config

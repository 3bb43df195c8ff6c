"""Engine settings: backend, optimiser, schedule, checkpoints, logging."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class AccelerateConfig:
    strategy: str = "ddp"  # ddp | fsdp


@dataclass
class DeepSpeedConfig:
    zero_stage: int = 2
    offload_optimizer: bool = False
    config_file: str = ""  # a JSON in configs/deepspeed/; empty = generated from this run config


@dataclass
class EngineConfig:
    backend: str = "debug"  # debug | accelerate | deepspeed
    accelerate: AccelerateConfig = field(default_factory=AccelerateConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    deterministic: bool = False
    on_nonfinite: str = "skip"  # skip | stop
    device: str = "auto"  # auto | cpu | cuda
    mixed_precision: str = "auto"  # every backend: auto (bf16 on GPU, fp32 on CPU) | no | bf16 (autocast, also on CPU)
    dist_timeout_s: float = 1800.0  # collective timeout; a checkpoint write must fit in it

    def validate(self) -> None:
        from mars_dist.engine.backends import check_backend_name

        check_backend_name(self.backend)
        if self.on_nonfinite not in ("skip", "stop"):
            raise ValueError(f"engine.on_nonfinite={self.on_nonfinite!r}: expected skip or stop")


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: tuple = (0.9, 0.95)
    weight_decay: float = 0.05
    warmup_steps: int = 0
    decay: str = "none"  # after warm-up: none (constant) | cosine (to min_lr_ratio * lr at train.max_steps)
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    max_steps: int = 1000
    log_every: int = 10
    eval_every: int = 500
    profile_steps: Optional[str] = None  # "START-END" (0-based, END excluded): torch profiler window


@dataclass
class CheckpointConfig:
    every_steps: int = 500
    keep_last: int = 3
    resume: str = "auto"  # auto | none | path to a step-XXXXXXXX folder


@dataclass
class LoggingConfig:
    wandb_mode: str = "offline"  # offline | online | disabled
    project: str = "mars_dist"
    peak_tflops: float = 0.0  # 0 = look the device up in the table

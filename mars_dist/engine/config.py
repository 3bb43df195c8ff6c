"""Engine settings: backend, optimiser, loop, stages, checkpoints, logging (each backend's own
settings sit beside it in mars_dist/engine/backends/ and are checked when the config loads)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from mars_dist.engine.backends.accelerate_config import AccelerateConfig
from mars_dist.engine.backends.deepspeed_config import DeepSpeedConfig
from mars_dist.engine.schedule import DECAYS

ON_NONFINITE = ("skip", "stop")


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
        from mars_dist.device import DEVICE_CHOICES, MIXED_PRECISION_CHOICES

        check_backend_name(self.backend)
        if self.on_nonfinite not in ON_NONFINITE:
            raise ValueError(f"engine.on_nonfinite={self.on_nonfinite!r}: expected skip or stop")
        if self.device not in DEVICE_CHOICES:
            raise ValueError(f"engine.device={self.device!r}: expected {', '.join(DEVICE_CHOICES)}")
        if self.mixed_precision not in MIXED_PRECISION_CHOICES:
            raise ValueError(f"engine.mixed_precision={self.mixed_precision!r}: expected {', '.join(MIXED_PRECISION_CHOICES)}")
        self.accelerate.validate()
        self.deepspeed.validate()


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: tuple = (0.9, 0.95)
    weight_decay: float = 0.05
    warmup_steps: int = 0
    decay: str = "none"  # after warm-up: none (constant) | cosine (to min_lr_ratio * lr at train.max_steps)
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0

    def validate(self) -> None:
        if self.decay not in DECAYS:
            raise ValueError(f"optim.decay={self.decay!r}: expected one of {', '.join(DECAYS)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio={self.min_lr_ratio}: expected a value in [0, 1]")
        if self.lr <= 0 or self.warmup_steps < 0 or self.grad_clip < 0 or len(self.betas) != 2:
            raise ValueError(f"optim.lr={self.lr}, warmup_steps={self.warmup_steps}, grad_clip={self.grad_clip}, "
                             f"betas={list(self.betas)}: need lr > 0, warmup_steps >= 0, grad_clip >= 0 (0 = off), "
                             "two betas")


@dataclass
class TrainConfig:
    max_steps: int = 1000
    log_every: int = 10
    profile_steps: Optional[str] = None  # "START-END" (0-based, END excluded): torch profiler window

    def validate(self) -> None:
        if self.max_steps < 0 or self.log_every < 1:
            raise ValueError(f"train.max_steps={self.max_steps}, train.log_every={self.log_every}: need "
                             "max_steps >= 0 and log_every >= 1")


@dataclass
class StageConfig:
    every: int = 0  # run after every this many optimizer steps (0 = never)


@dataclass
class ExportStageConfig(StageConfig):
    on_finish: bool = True  # also when training finishes (not when preempted): run_dir/export/
    model: str = ""  # which of the task's models ("" = the task's default: tokenizer_ema, the generator, ...)


@dataclass
class StagesConfig:
    """What the trainer runs besides training steps, each with its own cadence (docs/engine.md, "Stages"):
    validate (before that step's checkpoint, so the checkpoint holds what it measured), media (spectrograms
    and audio of a fixed validation batch), export (consolidated weights, run_dir/exports/step-XXXXXXXX/
    periodically and run_dir/export/ at the end)."""

    validate: StageConfig = field(default_factory=lambda: StageConfig(every=500))
    media: StageConfig = field(default_factory=lambda: StageConfig(every=500))
    export: ExportStageConfig = field(default_factory=ExportStageConfig)

    def validate_cadences(self) -> None:
        for name in ("validate", "media", "export"):
            if getattr(self, name).every < 0:
                raise ValueError(f"stages.{name}.every={getattr(self, name).every}: expected >= 0 (0 = never)")


@dataclass
class CheckpointConfig:
    every_steps: int = 500
    keep_last: int = 3
    resume: str = "auto"  # auto | none | path to a step-XXXXXXXX folder

    def validate(self) -> None:
        if self.keep_last < 1 or self.every_steps < 0:
            raise ValueError(f"checkpoint.keep_last={self.keep_last}, checkpoint.every_steps={self.every_steps}: "
                             "need keep_last >= 1 and every_steps >= 0 (0 = only at the end)")


@dataclass
class LoggingConfig:
    wandb_mode: str = "offline"  # offline | online | disabled
    project: str = "mars_dist"
    peak_tflops: float = 0.0  # 0 = look the device up in the table

    def validate(self) -> None:
        if self.wandb_mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logging.wandb_mode={self.wandb_mode!r}: expected offline, online or disabled")

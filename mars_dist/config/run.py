"""The whole run config: one dataclass per component, composed here."""
from __future__ import annotations

from dataclasses import dataclass, field

from mars_dist.audio.config import AudioConfig
from mars_dist.data.config import DataConfig
from mars_dist.engine.config import CheckpointConfig, EngineConfig, LoggingConfig, OptimConfig, TrainConfig
from mars_dist.models.generators.next_scale.config import ARConfig
from mars_dist.models.tokenizer.config import TokenizerConfig

TASKS = ("tokenizer", "ar")


@dataclass
class RunConfig:
    task: str = "tokenizer"  # tokenizer | ar
    run_dir: str = "runs/debug"
    seed: int = 0
    audio: AudioConfig = field(default_factory=AudioConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    ar: ARConfig = field(default_factory=ARConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def validate(self) -> None:
        if self.task not in TASKS and ":" not in self.task:
            raise ValueError(f"task={self.task!r}: expected one of {', '.join(TASKS)} or 'package.module:Class'")
        if self.engine.backend not in ("debug", "accelerate", "deepspeed"):
            raise ValueError(f"engine.backend={self.engine.backend!r}: expected debug, accelerate or deepspeed")
        if self.engine.on_nonfinite not in ("skip", "stop"):
            raise ValueError(f"engine.on_nonfinite={self.engine.on_nonfinite!r}: expected skip or stop")
        if self.audio.cmx.layout not in ("interleaved", "contiguous"):
            raise ValueError(f"audio.cmx.layout={self.audio.cmx.layout!r}: expected interleaved or contiguous")
        if self.data.batch_size < 1:
            raise ValueError(f"data.batch_size={self.data.batch_size}: must be >= 1")

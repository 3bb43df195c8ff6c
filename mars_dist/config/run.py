"""The whole run config: the sections every run has, plus the one section its task registers.

`RunConfig` holds what any run needs (audio, data, engine, optimizer, loop, checkpoints, logging).
The task named by `task:` contributes its own section (mars_dist.tasks.registry; a generator family's
task, the section of the family's name), so the schema a
YAML file is checked against is `run_config_class(task)`: RunConfig plus that one field. A task's
settings therefore live with the task, and a YAML that sets another task's section is an error
naming the key.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Dict

from omegaconf import OmegaConf

from mars_dist.audio.config import AudioConfig
from mars_dist.data.config import DataConfig
from mars_dist.engine.config import CheckpointConfig, EngineConfig, LoggingConfig, OptimConfig, StagesConfig, TrainConfig
from mars_dist.tasks.registry import resolve


@dataclass
class RunConfig:
    task: str = "tokenizer"  # tokenizer | classifier | a generator family (next_scale, ...) | 'package.module:NAME'
    run_dir: str = "runs/debug"
    seed: int = 0
    audio: AudioConfig = field(default_factory=AudioConfig)
    data: DataConfig = field(default_factory=DataConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def validate(self) -> None:
        """Every section with a `validate()` checks itself (the error names the key)."""
        for f in dataclasses.fields(self):
            check = getattr(getattr(self, f.name), "validate", None)
            if callable(check):
                check()
        self.stages.validate_cadences()
        if self.data.batch_size < 1 or self.data.micro_batch_size < 0 or self.data.num_workers < 0:
            raise ValueError(f"data.batch_size={self.data.batch_size}, data.micro_batch_size={self.data.micro_batch_size}, "
                             f"data.num_workers={self.data.num_workers}: need batch_size >= 1, micro_batch_size >= 0 "
                             "(0 = batch_size / processes), num_workers >= 0")
        if self.optim.decay == "cosine" and self.train.max_steps <= self.optim.warmup_steps:
            raise ValueError(f"optim.decay=cosine needs train.max_steps ({self.train.max_steps}) > optim.warmup_steps "
                             f"({self.optim.warmup_steps}): shorten the warm-up or train longer")

    def __reduce__(self):
        # The class is built per task at run time: the receiving process rebuilds it from the task name.
        return (_rebuild, (self.task, OmegaConf.to_container(OmegaConf.structured(self), resolve=True)))


@functools.lru_cache(maxsize=None)
def run_config_class(task: str) -> type:
    """RunConfig plus the section `task` registers (RunConfig itself for a task without settings)."""
    entry = resolve(task)
    if entry.section is None:
        return RunConfig
    if entry.section in {f.name for f in dataclasses.fields(RunConfig)}:
        raise ValueError(f"task {task!r} registers section {entry.section!r}, which is a RunConfig section already")
    return dataclasses.make_dataclass(
        f"RunConfig_{entry.name}",
        [(entry.section, entry.config_class, field(default_factory=entry.config_class))],
        bases=(RunConfig,),
        namespace={"__module__": __name__},
    )


def _rebuild(task: str, values: Dict[str, Any]) -> RunConfig:
    """A pickled RunConfig, unpickled (its values were checked when it was first loaded)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(run_config_class(task)), values))

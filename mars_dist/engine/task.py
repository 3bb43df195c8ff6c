"""What a training task tells the engine: which models it trains and how a micro-batch's losses are made.

The trainer loop (mars_dist/engine/trainer.py) is the same for every task; a task never wraps,
shards, checkpoints or steps anything itself, and what it does outside the optimizer (an EMA, a
codebook restart, a validation pass) goes through the backend's ParallelContext (`models.parallel`).
That is what lets one task run unchanged on the debug, Accelerate and DeepSpeed backends. Besides
its losses, a task offers the trainer's stages (validate, media: each with its own cadence) and says
how each of its models is rebuilt from an export (`export_spec`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import torch
from torch import nn

from mars_dist.errors import UserValueError
from mars_dist.io.exports import ExportSpec
from mars_dist.parallel.context import LOCAL, ParallelContext

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
BackwardFn = Callable[[str, torch.Tensor], None]


@dataclass
class ModelSpec:
    """One model of a task. `optimizer=None` means frozen (moved to device, never stepped or sharded)."""

    module: nn.Module
    optimizer: Optional[OptimizerFactory] = None
    lr_multiplier: Optional[Callable[[int], float]] = None  # step -> factor on the optimizer's base lr

    @property
    def trained(self) -> bool:
        return self.optimizer is not None


def trained_names(specs: Dict[str, ModelSpec]) -> List[str]:
    """The models of `specs` that have an optimizer, in the task's order (the others are frozen)."""
    return [name for name, spec in specs.items() if spec.trained]


class Models(Mapping[str, nn.Module]):
    """Name -> wrapped module (call these in forward); `unwrap(name)` gives the plain nn.Module;
    `parallel` is the backend's ParallelContext (rank, collectives, full views of sharded weights)."""

    def __init__(self, wrapped: Dict[str, nn.Module], unwrapped: Dict[str, nn.Module], parallel: ParallelContext = LOCAL):
        self._wrapped = wrapped
        self._unwrapped = unwrapped
        self.parallel = parallel

    def __getitem__(self, name: str) -> nn.Module:
        return self._wrapped[name]

    def __iter__(self):
        return iter(self._wrapped)

    def __len__(self) -> int:
        return len(self._wrapped)

    def unwrap(self, name: str) -> nn.Module:
        return self._unwrapped[name]


class Task(ABC):
    """A training task: builds its models and turns one micro-batch into losses.

    A task module registers its class with mars_dist.tasks.registry.register_task, which sets
    `task_name` and `section` (the run config key of its settings, `self.settings`).

    Data contract: `batch` is the loader's dict (see mars_dist/data): "cmx" float32 [B, C, H, W]
    on the backend's device, label LongTensors "pitch", "velocity", "instrument_family",
    "instrument_source", "instrument" [B], and "key" (list of note_str).
    """

    task_name: str = ""
    section: Optional[str] = None

    def __init__(self, cfg: Any, data_info: Dict[str, Any]):
        self.cfg = cfg
        self.data_info = data_info  # from the shard manifest: "cmx_shape" (C, H, W), "audio" config, ...

    @property
    def settings(self) -> Any:
        """This task's section of the run config (None for a task without one)."""
        return getattr(self.cfg, self.section) if self.section else None

    @abstractmethod
    def build_models(self) -> Dict[str, ModelSpec]:
        """All models, trained and frozen, keyed by name."""

    @abstractmethod
    def micro_step(self, batch: Dict[str, Any], models: Models, step: int, backward: BackwardFn) -> Dict[str, torch.Tensor]:
        """Computes this micro-batch's losses and calls `backward(model_name, loss)` once per trained model.

        The loss passed to `backward` is the micro-batch MEAN; the backend divides by the number of
        accumulation steps itself. Returns detached scalars to log (averaged over micro-batches
        and ranks by the trainer).
        """

    def export_spec(self, name: str) -> ExportSpec:
        """How model `name` is rebuilt from an export (mars_dist/models/builders.py): its builder key,
        architecture and inputs. A task whose models cannot be rebuilt outside it says so."""
        raise UserValueError(f"the {self.task_name or type(self).__name__} task does not say how to rebuild its "
                             f"model {name!r} from an export (Task.export_spec)")

    def default_export_model(self) -> Optional[str]:
        """The model the export stage writes when `stages.export.model` names none (None: the stage
        exports nothing unless told which model)."""
        return None

    def after_step(self, step: int, models: Models) -> None:
        """Called after every optimizer step (e.g. EMA update, dead-code restart)."""

    def validate(self, step: int, models: Models) -> Dict[str, Any]:
        """The validation stage (every `stages.validate.every` steps, before that step's checkpoint, so
        the checkpoint holds what it measured): returns figures to log. Called on EVERY rank (a
        sharded model needs all of them; `models.parallel` sums over ranks)."""
        return {}

    def state_dict(self) -> Dict[str, Any]:
        """Task-owned state that is not a model or optimizer (saved on rank 0, loaded everywhere)."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass

    def flops_per_sample(self) -> float:
        """Training FLOPs (forward + backward) per sample, for MFU; 0 when unknown."""
        return 0.0

    def tokens_per_sample(self) -> int:
        return 0

    def log_media(self, step: int, models: Models, batch: Dict[str, Any], out_dir: Optional[str]) -> Dict[str, Any]:
        """The media stage (every `stages.media.every` steps): writes task media (spectrogram PNGs, wavs)
        for a fixed validation batch; returns wandb-loggable items.

        Called on EVERY rank (a sharded model needs all ranks in its forward), under torch.no_grad;
        `out_dir` is None on ranks other than 0, which must then only run the forward and write nothing.
        """
        return {}

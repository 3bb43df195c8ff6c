"""The one training loop: every task on every backend runs through `Trainer.train()`.

Per optimizer step: the stream hands this rank `grad_accum` micro-batches; each goes through
`task.micro_step` inside the backend's micro-step and autocast contexts; one all-reduce then gives
every rank the same mean losses, the same "some rank saw a non-finite loss" flag and the same
"some rank was asked to stop" flag, so all ranks skip, stop or checkpoint together; finally the
backend steps each trained model. After the step come the stages, each with its own cadence
(`stages.*.every`), on every rank and every backend: validate (before the checkpoint, so the
checkpoint holds what it measured), checkpoint, media, export; at the end a final checkpoint and
the export of the task's model. See docs/engine.md.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import torch

from mars_dist.engine.backend import Backend
from mars_dist.engine.checkpoint import (
    TASK_STATE,
    Checkpointer,
    committed_checkpoints,
    read_train_state,
    rng_file_name,
    step_dir_name,
)
from mars_dist.engine.metrics import METRICS_FILE, MetricsLogger, ProfilerWindow, device_peak_flops
from mars_dist.engine.preemption import PREEMPTED_MARKER, PreemptionWatcher, restarted_after_preemption, write_marker
from mars_dist.engine.rng import deterministic_mode, rank_seed, restore_rng_state, seed_everything
from mars_dist.engine.exporting import export_model
from mars_dist.engine.task import Models, Task, trained_names
from mars_dist.errors import UserValueError
from mars_dist.io.atomic import atomic_write_text
from mars_dist.io.export_migrations import RENAMED_TASKS
from mars_dist.io.structured import to_dict, to_yaml

# Per-shard lists of the manifest are not needed to rebuild a task's models (export, sampling).
_DATA_INFO_DROPPED = ("shards", "skipped")


class NonFiniteLossError(RuntimeError):
    """engine.on_nonfinite=stop and some rank's loss was NaN or infinite."""


@dataclass
class StepResult:
    losses: Dict[str, float]  # mean over micro-batches and ranks
    grad_norms: Dict[str, float] = field(default_factory=dict)
    skipped: bool = False
    preempt: bool = False


@dataclass
class TrainResult:
    step: int  # optimizer steps completed
    preempted: bool
    nonfinite_skips: int
    last_checkpoint: Optional[Path]


class Trainer:
    """Runs `task` on `backend` over `stream` (an iterable of per-step micro-batch lists with
    `cursor()` and `geometry`, its BatchGeometry), resuming from `resume_from` (a committed checkpoint).

    `preemption` is the process's installed watcher (mars_dist.train installs it at start-up, so that
    a signal during imports, data set-up or checkpoint loading counts too); without one, signals are
    left to the caller and the run is never preempted.
    """

    def __init__(
        self,
        cfg: Any,
        backend: Backend,
        task: Task,
        stream: Iterable[List[Dict[str, Any]]],
        resume_from: Optional[Path] = None,
        valid_batch: Optional[Dict[str, Any]] = None,
        preemption: Optional[PreemptionWatcher] = None,
    ):
        self.cfg = cfg
        self.backend = backend
        self.task = task
        self.stream = stream
        self.resume_from = Path(resume_from) if resume_from else None
        self.valid_batch = valid_batch
        self.run_dir = Path(cfg.run_dir)
        self.global_batch = cfg.data.batch_size
        self.step = 0
        self.samples_seen = 0
        self.nonfinite_skips = 0
        self.wandb_run_id = uuid.uuid4().hex[:12]
        self.models: Optional[Models] = None
        self.trained: List[str] = []
        self.last_checkpoint: Optional[Path] = None
        self.saved_step: Optional[int] = None
        self.checkpointer = Checkpointer(self.run_dir, cfg.checkpoint.keep_last, backend)
        self.preemption = preemption or PreemptionWatcher()
        self.profiler = ProfilerWindow(cfg.train.profile_steps, self.run_dir / "profile", backend.rank)
        self.logger = MetricsLogger(
            is_main=backend.is_main,
            log_every=cfg.train.log_every,
            global_batch=self.global_batch,
            world_size=backend.world_size,
            flops_per_sample=task.flops_per_sample(),
            tokens_per_sample=task.tokens_per_sample(),
            peak_flops_per_device=device_peak_flops(backend.device, cfg.logging.peak_tflops),
            device=backend.device,
            max_steps=cfg.train.max_steps,
            metrics_file=self.run_dir / METRICS_FILE,
        )

    # ------------------------------------------------------------------ the loop
    def train(self) -> TrainResult:
        cfg, profiler = self.cfg, self.profiler
        with deterministic_mode(cfg.engine.deterministic):
            self._build()
            if self._stop_before_training():
                return self._result(preempted=True)
            self._start_logging()
            batches = iter(self.stream)
            try:
                while self.step < cfg.train.max_steps:
                    wait_start = time.perf_counter()
                    # Starting a DataLoader draws from the global torch RNG; keeping the data pipeline
                    # off the training RNG is what makes a resumed run's dropout match an unbroken one.
                    with torch.random.fork_rng(devices=[]):
                        micro_batches = next(batches)
                    compute_start = time.perf_counter()
                    profiler.before_step(self.step)
                    result = self.train_step(micro_batches)
                    trace = profiler.after_step(self.step)
                    self.step += 1
                    self.samples_seen += self.global_batch
                    self.logger.record_step(self.step, result.losses, result.grad_norms, compute_start - wait_start,
                                            time.perf_counter() - compute_start, skipped=result.skipped,
                                            lrs=self.backend.learning_rates())
                    if trace:
                        self.logger.console(f"profiler trace written to {trace}")
                    if result.preempt:
                        self._save()
                        self._mark_preempted()
                        return self._result(preempted=True)
                    if self._due(cfg.stages.validate.every):
                        self._validate()
                    if self._due(cfg.checkpoint.every_steps):
                        self._save()
                    if self._due(cfg.stages.media.every):
                        self._log_media()
                    if self._due(cfg.stages.export.every):
                        self._export(self.run_dir / "exports" / step_dir_name(self.step))
                if self.saved_step != self.step:
                    self._save()
                if cfg.stages.export.on_finish:
                    self._export(self.run_dir / "export")
            finally:
                profiler.close()
                self.logger.close()
        return self._result(preempted=False)

    def train_step(self, micro_batches: List[Dict[str, Any]]) -> StepResult:
        backend, task = self.backend, self.task
        if len(micro_batches) != backend.grad_accum:
            raise RuntimeError(f"the stream gave {len(micro_batches)} micro-batches, the backend accumulates {backend.grad_accum}")
        sums: Dict[str, torch.Tensor] = {}
        for i, batch in enumerate(micro_batches):
            batch = self._to_device(batch)
            with backend.micro_step_context(sync=i == len(micro_batches) - 1), backend.autocast():
                losses = task.micro_step(batch, self.models, self.step, backend.backward)
            for name, value in losses.items():
                value = torch.as_tensor(value, device=backend.device).detach().float()
                sums[name] = sums[name] + value if name in sums else value

        names = sorted(sums)
        local_means = torch.stack([sums[n] / len(micro_batches) for n in names]) if names else torch.zeros(0, device=backend.device)
        flags = torch.tensor([float(not bool(torch.isfinite(local_means).all())), float(self.preemption.requested)],
                             device=backend.device)
        reduced = backend.all_reduce_mean(torch.cat([local_means, flags])).tolist()
        losses = dict(zip(names, reduced[: len(names)]))
        nonfinite, preempt = reduced[-2] > 0, reduced[-1] > 0

        if nonfinite:
            self._on_nonfinite(losses, dict(zip(names, local_means.tolist())))
            return StepResult(losses, skipped=True, preempt=preempt)
        grad_norms = {name: backend.step(name) for name in self.trained}
        task.after_step(self.step, self.models)
        return StepResult(losses, grad_norms, preempt=preempt)

    # ------------------------------------------------------------------ pieces of the loop
    def _build(self) -> None:
        cfg, backend = self.cfg, self.backend
        seed_everything(cfg.seed)  # identical initial weights on every rank
        specs = self.task.build_models()
        self.trained = trained_names(specs)
        if not self.trained:
            raise ValueError(f"task {cfg.task!r} builds no model with an optimizer: nothing to train")
        self._check_export_stage(specs)
        self.models = backend.prepare(specs, self.stream.geometry)
        seed_everything(rank_seed(cfg.seed, backend.rank))  # per-rank randomness (dropout, noise)
        if self.resume_from is not None:
            self._restore(self.resume_from)

    def _restore(self, directory: Path) -> None:
        backend = self.backend
        state = read_train_state(directory)
        renamed = RENAMED_TASKS.get(state.get("task"))
        if renamed is not None:  # a checkpoint of the task's old name: its generator was saved under that name
            backend.rename_saved_models({renamed: state["task"]})
        backend.load_checkpoint(directory, state["world_size"])
        self.task.load_state_dict(torch.load(directory / TASK_STATE, map_location=backend.device, weights_only=True))
        self.step = state["step"]
        self.samples_seen = state["samples_seen"]
        self.nonfinite_skips = state["nonfinite_skips"]
        self.wandb_run_id = state["wandb_run_id"]
        self.last_checkpoint, self.saved_step = directory, self.step
        if state["world_size"] == backend.world_size:
            restore_rng_state(torch.load(directory / rng_file_name(backend.rank), weights_only=True))
        else:  # no rank-to-rank mapping of RNG streams exists across world sizes: derive fresh ones
            seed_everything(rank_seed(self.cfg.seed, backend.rank, self.step))
        self.logger.console(f"resumed from {directory} at step {self.step} (saved with world size "
                            f"{state['world_size']}, now {backend.world_size})")

    def _stop_before_training(self) -> bool:
        """Whether every rank exits for requeue before the first step (one all-reduce, so all agree):
        some rank was signalled during start-up, or torchrun restarted a preempted group in place.
        Nothing is saved; PREEMPTED names the newest committed checkpoint, which a rerun resumes."""
        backend = self.backend
        flags = torch.tensor([float(self.preemption.requested), float(restarted_after_preemption(self.run_dir))], device=backend.device)
        signalled, restarted = (backend.all_reduce_max(flags) > 0).tolist()
        if not (signalled or restarted):
            return False
        found = committed_checkpoints(self.run_dir)
        if backend.is_main:
            write_marker(self.run_dir, found[-1][1] if found else None)
        reason = (f"preempted during start-up (signal {self.preemption.received or 'on another rank'})" if signalled
                  else "torchrun restarted this group after it was preempted (use mars-torchrun to get status 75 instead)")
        self.logger.console(f"{reason}: exiting for requeue before the first step, without a new checkpoint "
                            f"(the newest committed one is {found[-1][1] if found else 'none'})")
        return True

    def _start_logging(self) -> None:
        cfg, backend = self.cfg, self.backend
        if backend.is_main:
            (self.run_dir / PREEMPTED_MARKER).unlink(missing_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", to_yaml(cfg))
            self.logger.console(f"resolved config:\n{to_yaml(cfg)}")
            self.logger.console(
                f"task {cfg.task} | backend {backend.name} | world size {backend.world_size} | device {backend.device} | "
                f"global batch {self.stream.geometry.describe()} | trains {', '.join(self.trained)}"
            )
        self.logger.start_wandb(cfg.logging.project, cfg.logging.wandb_mode, self.run_dir, self.wandb_run_id, to_dict(cfg))

    def _on_nonfinite(self, mean_losses: Dict[str, float], local_losses: Dict[str, float]) -> None:
        message = (f"non-finite loss at step {self.step} (0-based) on at least one rank: mean over ranks {mean_losses}, "
                   f"rank {self.backend.rank} {local_losses}")
        if self.cfg.engine.on_nonfinite == "stop":
            raise NonFiniteLossError(message + " (engine.on_nonfinite=stop)")
        for name in self.trained:
            self.backend.zero_grad(name)
        self.nonfinite_skips += 1
        self.logger.console(f"WARNING {message}: step skipped, {self.nonfinite_skips} skipped so far (engine.on_nonfinite=skip)")
        self.logger.log_figures(self.step + 1, {"train/nonfinite_skips": self.nonfinite_skips})

    def _save(self) -> None:
        started = time.perf_counter()
        train_state = {
            "step": self.step,
            "samples_seen": self.samples_seen,
            "cursor": self.stream.cursor(),
            "world_size": self.backend.world_size,
            "backend": self.backend.name,
            "task": self.cfg.task,
            "seed": self.cfg.seed,
            "nonfinite_skips": self.nonfinite_skips,
            "wandb_run_id": self.wandb_run_id,
            "data_info": {k: v for k, v in self.task.data_info.items() if k not in _DATA_INFO_DROPPED},
            "config": to_dict(self.cfg),
            "saved_at": time.time(),
        }
        self.last_checkpoint = self.checkpointer.save(self.step, train_state, self.task.state_dict(), to_yaml(self.cfg))
        self.saved_step = self.step
        self.logger.console(f"checkpoint {self.last_checkpoint} committed in {time.perf_counter() - started:.2f} s")

    def _mark_preempted(self) -> None:
        if self.backend.is_main:
            write_marker(self.run_dir, self.last_checkpoint)
        self.logger.console(f"preempted (signal {self.preemption.received or 'on another rank'}): "
                            f"checkpoint {self.last_checkpoint} written, exiting for requeue")

    def _check_export_stage(self, specs: Dict[str, Any]) -> None:
        """A model the export stage cannot write is refused before training, not after it."""
        export = self.cfg.stages.export
        if not (export.on_finish or export.every > 0) or not (export.model or self.task.default_export_model()):
            return
        model = export.model or self.task.default_export_model()
        if model not in specs:
            raise UserValueError(f"stages.export.model={model!r}: the {self.cfg.task} task has models {', '.join(specs)}")
        self.task.export_spec(model)

    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def _stage_rng(self):
        """The stages draw from a fork of the training RNG (a model copy's initialisation, a sampler):
        whether and how often they run must not change training, nor what a resumed run draws."""
        return torch.random.fork_rng(devices=[self.backend.device] if self.backend.device.type == "cuda" else [])

    def _validate(self) -> None:
        with self._stage_rng(), torch.no_grad(), self.backend.autocast():
            items = self.task.validate(self.step, self.models)
        self.logger.log_figures(self.step, items)

    def _export(self, out_dir: Path) -> None:
        """The export stage: the task's model (stages.export.model, else the task's default) as
        consolidated weights + config.json, written by rank 0. Collective."""
        model = self.cfg.stages.export.model or self.task.default_export_model()
        if model is None:
            return
        started = time.perf_counter()
        path = export_model(self.backend, self.task, model, out_dir, self.cfg.audio, self._provenance(model))
        self.logger.console(f"exported {model} to {path} in {time.perf_counter() - started:.2f} s")

    def _provenance(self, model: str) -> Dict[str, Any]:
        return {"model": model, "task": self.cfg.task, "step": self.step, "checkpoint": str(self.last_checkpoint),
                "backend": self.backend.name,
                "data_info": {k: v for k, v in self.task.data_info.items() if k not in _DATA_INFO_DROPPED}}

    def _log_media(self) -> None:
        if self.valid_batch is None:
            return
        out_dir = str(self.run_dir / "media" / step_dir_name(self.step)) if self.backend.is_main else None
        with self._stage_rng(), torch.no_grad(), self.backend.autocast():
            items = self.task.log_media(self.step, self.models, self._to_device(self.valid_batch), out_dir)
        self.logger.log_figures(self.step, items)

    def _to_device(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        device = self.backend.device
        return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _result(self, preempted: bool) -> TrainResult:
        return TrainResult(self.step, preempted, self.nonfinite_skips, self.last_checkpoint)

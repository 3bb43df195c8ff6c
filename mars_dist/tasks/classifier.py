"""Training task of the evaluation's note classifier: MIDI pitch and instrument family from the log spectrogram.

Its softmax feeds the pitch / instrument Inception Scores, its logits PKID / IKID and its
penultimate features are the default FAD embedding (mars_dist/eval/features/classifier.py). It
trains on the shards like every task (any backend, any launcher), from the stored CMX tensors
turned back into log spectrograms (a lossless reshape); evaluation gives it the same log
spectrogram computed from audio, by the same front-end.

Loss = CE(pitch) + family_weight * CE(instrument family). The validation stage (every
`stages.validate.every` steps, and so at the end when max_steps is a multiple of it) measures the
accuracy of each head on `data.valid_shards`, prints it, logs it ("valid/pitch_accuracy",
"valid/family_accuracy") and stores it in the model's buffers, so the checkpoint of that step and
the export carry it. Without validation shards nothing is measured (the buffers keep -1).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mars_dist.audio.frontend import AudioFrontend
from mars_dist.engine import schedule as lr_schedule
from mars_dist.engine.optim import adamw_factory
from mars_dist.engine.task import Models, ModelSpec, Task
from mars_dist.io.exports import ExportSpec
from mars_dist.io.structured import field_values
from mars_dist.models.classifier.config import ClassifierConfig
from mars_dist.models.classifier.model import NoteClassifier
from mars_dist.parallel.context import ParallelContext
from mars_dist.tasks.registry import register_task

MODEL = "classifier"


@dataclass
class ClassifierTaskConfig(ClassifierConfig):
    """The `classifier:` section: the CNN's architecture plus its loss, augmentation and validation."""

    family_weight: float = 1.0
    label_smoothing: float = 0.0
    # Each training note's level is shifted by a random gain in [-gain_db, gain_db] dB: generated
    # notes need not be as loud as the real ones, and the classifier should not care.
    gain_db: float = 6.0
    valid_limit: int = 0  # validation notes measured (manifest order; 0 = all of data.valid_shards)
    valid_batch: int = 32

    def validate(self) -> None:
        super().validate()
        if self.valid_limit < 0 or self.valid_batch < 1 or self.gain_db < 0:
            raise ValueError(f"classifier.valid_limit={self.valid_limit}, valid_batch={self.valid_batch}, "
                             f"gain_db={self.gain_db}: need valid_limit >= 0, valid_batch >= 1, gain_db >= 0")


def log_spectrogram(frontend: AudioFrontend, cmx_BCHW: torch.Tensor) -> torch.Tensor:
    """The classifier's input from stored CMX tensors: the log spectrogram [B, F, T] (inverse CMX)."""
    return frontend.cmx_to_log(cmx_BCHW)


@torch.no_grad()
def head_hits(model: nn.Module, log_BFT: torch.Tensor, pitch_B: torch.Tensor, family_B: torch.Tensor) -> torch.Tensor:
    """float64 [3]: correct pitch predictions, correct family predictions, notes."""
    out = model(log_BFT)
    return torch.tensor([float((out["pitch"].argmax(-1) == pitch_B).sum()),
                         float((out["instrument_family"].argmax(-1) == family_B).sum()), float(len(pitch_B))],
                        dtype=torch.float64)


@register_task("classifier", config=ClassifierTaskConfig)
class ClassifierTask(Task):
    """models: "classifier" (trained)."""

    def __init__(self, cfg: Any, data_info: Dict[str, Any]):
        super().__init__(cfg, data_info)
        self.frontend = AudioFrontend(cfg.audio)
        self._valid_reader = None
        self._flops_per_sample: Optional[float] = None

    def export_spec(self, name: str) -> ExportSpec:
        if name != MODEL:
            return super().export_spec(name)
        return ExportSpec("classifier", field_values(self.settings, ClassifierConfig),
                          {"spec_shape": list(self.frontend.spec_shape)})

    def default_export_model(self) -> Optional[str]:
        return MODEL

    def build_models(self) -> Dict[str, ModelSpec]:
        return {MODEL: ModelSpec(NoteClassifier(self.settings, self.frontend.spec_shape), adamw_factory(self.cfg.optim),
                                 lr_schedule.from_config(self.cfg))}

    def _augment(self, log_BFT: torch.Tensor) -> torch.Tensor:
        gain_db = self.settings.gain_db
        if gain_db <= 0:
            return log_BFT
        log_cfg = self.cfg.audio.log_scale
        shift_B = (torch.rand(len(log_BFT), device=log_BFT.device) * 2 - 1) * gain_db
        return (log_BFT + (2.0 * shift_B / (log_cfg.db_max - log_cfg.db_min))[:, None, None]).clamp(-1.0, 1.0)

    def micro_step(self, batch: Dict[str, Any], models: Models, step: int, backward) -> Dict[str, torch.Tensor]:
        s = self.settings
        out = models[MODEL](self._augment(log_spectrogram(self.frontend, batch["cmx"])))
        ce_pitch = F.cross_entropy(out["pitch"].float(), batch["pitch"], label_smoothing=s.label_smoothing)
        ce_family = F.cross_entropy(out["instrument_family"].float(), batch["instrument_family"],
                                    label_smoothing=s.label_smoothing)
        loss = ce_pitch + s.family_weight * ce_family
        backward(MODEL, loss)
        with torch.no_grad():
            return {
                "loss/total": loss.detach(),
                "loss/pitch_ce": ce_pitch.detach(),
                "loss/family_ce": ce_family.detach(),
                "train/pitch_accuracy": (out["pitch"].argmax(-1) == batch["pitch"]).float().mean(),
                "train/family_accuracy": (out["instrument_family"].argmax(-1) == batch["instrument_family"]).float().mean(),
            }

    def flops_per_sample(self) -> float:
        """Forward + backward FLOPs of one note, counted once on the meta device."""
        if self._flops_per_sample is None:
            with torch.device("meta"):
                model = NoteClassifier(self.settings, self.frontend.spec_shape)
                with FlopCounterMode(display=False) as counter:
                    out = model(torch.zeros(1, *self.frontend.spec_shape))
                    (out["pitch"].sum() + out["instrument_family"].sum()).backward()
            self._flops_per_sample = float(counter.get_total_flops())
        return self._flops_per_sample

    # ------------------------------------------------------------------ validation
    def _validation_hits(self, model: nn.Module, device: torch.device, parallel: ParallelContext) -> torch.Tensor:
        """float64 [3] summed over ranks: each rank measures its strided share of the validation notes."""
        s = self.settings
        if self._valid_reader is None:
            from mars_dist.data.shard_set import open_shard_set

            _, self._valid_reader = open_shard_set(self.cfg.data.valid_shards, self.cfg.audio,
                                                   self.cfg.data.storage_options, with_audio=False)
        reader = self._valid_reader
        mine = list(range(min(s.valid_limit or len(reader), len(reader))))[parallel.rank::parallel.world_size]
        hits = torch.zeros(3, dtype=torch.float64)
        for start in range(0, len(mine), s.valid_batch):
            samples = [reader[i] for i in mine[start:start + s.valid_batch]]
            cmx = torch.stack([torch.from_numpy(x["cmx"]) for x in samples]).to(device).float()
            labels = {k: torch.tensor([x[k] for x in samples], device=device) for k in ("pitch", "instrument_family")}
            hits += head_hits(model, log_spectrogram(self.frontend, cmx), labels["pitch"], labels["instrument_family"])
        # on the device (nccl reduces CUDA tensors only); integer counts, exact in float64
        return parallel.all_reduce_sum(hits.to(device)).cpu()

    @torch.no_grad()
    def validate(self, step: int, models: Models) -> Dict[str, Any]:
        """Accuracy per head on data.valid_shards, into the model's buffers on every rank (collective:
        each rank measures its share with a plain copy of the full weights, the counts are summed)."""
        if not self.cfg.data.valid_shards:
            return {}
        parallel = models.parallel
        live = models.unwrap(MODEL)
        device = next(live.buffers()).device
        copy = NoteClassifier(self.settings, self.frontend.spec_shape).to(device).eval()
        with parallel.full_named_parameters(live) as full:
            copy.load_state_dict({**{k: v.detach() for k, v in full.items()}, **dict(live.named_buffers())})
        hits = self._validation_hits(copy, device, parallel)
        live.set_validation(float(hits[0] / hits[2]), float(hits[1] / hits[2]), int(hits[2]), step)
        v = live.validation()
        if parallel.is_main:
            print(f"[{time.strftime('%H:%M:%S')}] step {step} | validation accuracy: pitch {v['valid_pitch_accuracy']:.1%}, "
                  f"instrument family {v['valid_family_accuracy']:.1%} ({int(hits[2])} notes of "
                  f"{self.cfg.data.valid_shards})", flush=True)
        return {"valid/pitch_accuracy": v["valid_pitch_accuracy"], "valid/family_accuracy": v["valid_family_accuracy"]}

"""Features from an exported note classifier (mars_dist/tasks/classifier.py): the inputs of PIS/IIS,
PKID/IKID and the default FAD embedding.

Every evaluated set, real or generated, reaches the classifier the same way: its AUDIO (the stored
original, or Griffin-Lim of a spectrogram) -> |STFT| -> log scale, by the audio front-end of the
classifier's own training run. So a generated note is judged on what it sounds like, exactly as
the reference notes are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch

from mars_dist.audio.frontend import AudioFrontend
from mars_dist.audio.logscale import to_log_scale
from mars_dist.errors import UserValueError
from mars_dist.generation.loaders import export_audio
from mars_dist.models.builders import load_model


class ClassifierFeatures:
    """wave_BN -> {"pitch_logits" [B, 128], "instrument_logits" [B, 11], "embedding" [B, D]} (float32, CPU)."""

    def __init__(self, module: torch.nn.Module, frontend: AudioFrontend, device: torch.device, config: Dict):
        self.module = module.to(device).eval()
        self.frontend, self.device, self.config = frontend, device, config

    @classmethod
    def from_export(cls, path: Path, device: torch.device) -> "ClassifierFeatures":
        """The exported classifier (train configs/classifier/small.yaml; its run exports it) with the
        audio front-end it was trained with."""
        module, config = load_model(Path(path), expected=("classifier",), what="--classifier",
                                    hint="train configs/classifier/small.yaml: its run exports it to RUN_DIR/export")
        return cls(module, AudioFrontend(export_audio(config, Path(path))), device, config)

    def check_audio(self, sample_rate: int, num_samples: int, what: str) -> None:
        """The classifier hears notes of one length and rate: those of the set it is given must match."""
        stft = self.frontend.cfg.stft
        if (stft.sample_rate, stft.num_samples) != (sample_rate, num_samples):
            raise UserValueError(f"the classifier was trained on {stft.num_samples} samples at {stft.sample_rate} Hz, "
                                 f"{what} has {num_samples} at {sample_rate} Hz")

    def validation(self) -> Dict[str, float]:
        """Validation accuracy per head as stored at training time (-1 = never measured)."""
        return self.module.validation()

    @torch.no_grad()
    def __call__(self, wave_BN: torch.Tensor) -> Dict[str, torch.Tensor]:
        log_BFT = to_log_scale(self.frontend.wave_to_magnitude(wave_BN.to(self.device)), self.frontend.cfg.log_scale)
        out = self.module(log_BFT)
        return {"pitch_logits": out["pitch"].float().cpu(), "instrument_logits": out["instrument_family"].float().cpu(),
                "embedding": out["embedding"].float().cpu()}

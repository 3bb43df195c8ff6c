"""A compact CNN on the log spectrogram with two heads: MIDI pitch (128 classes) and instrument family (11).

Strided 3x3 conv stages shrink frequency and time; the time axis is then averaged away, but the
frequency axis is kept and flattened, so the linear layers see WHERE the harmonics are (what pitch
is) and not only what they look like. The flattened map becomes the `embedding` (penultimate
features, the default FAD embedding), from which both heads read their logits.

The module also carries the validation accuracy of its heads as buffers, so checkpoints and exports
hold the figure next to the weights it describes (-1 = never measured).
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn

from mars_dist.labels import FAMILIES, PITCHES
from mars_dist.models.classifier.config import ClassifierConfig

HEADS: Dict[str, int] = {"pitch": PITCHES, "instrument_family": len(FAMILIES)}
VALIDATION_BUFFERS = ("valid_pitch_accuracy", "valid_family_accuracy", "valid_notes", "valid_step")


def _stage(c_in: int, c_out: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(min(groups, c_out), c_out),
                         nn.GELU(), nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(min(groups, c_out), c_out),
                         nn.GELU())


class NoteClassifier(nn.Module):
    """log_BFT (log-scaled magnitude in [-1, 1], F x T as the audio front-end gives it) -> logits + embedding."""

    def __init__(self, cfg: ClassifierConfig, spec_shape: Tuple[int, int]):
        super().__init__()
        self.cfg, self.spec_shape = cfg, tuple(spec_shape)
        F, T = self.spec_shape
        stages, c_in = [], 1
        for c_out in cfg.channels:
            stages.append(_stage(c_in, c_out, cfg.norm_groups))
            c_in = c_out
        self.trunk = nn.Sequential(*stages)
        f_out = F
        for _ in cfg.channels:
            f_out = (f_out - 1) // 2 + 1
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(c_in * f_out, cfg.embedding_dim), nn.GELU())
        self.dropout = nn.Dropout(cfg.dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(cfg.embedding_dim, n) for name, n in HEADS.items()})
        for name in VALIDATION_BUFFERS:
            self.register_buffer(name, torch.tensor(-1.0))
        if T < cfg.time_pool:
            raise ValueError(f"classifier.time_pool={cfg.time_pool} exceeds the spectrogram's {T} frames")

    def forward(self, log_BFT: torch.Tensor) -> Dict[str, torch.Tensor]:
        """{"pitch": logits [B, 128], "instrument_family": logits [B, 11], "embedding": [B, embedding_dim]}."""
        if tuple(log_BFT.shape[-2:]) != self.spec_shape:
            raise ValueError(f"NoteClassifier: expected log spectrograms [B, {self.spec_shape[0]}, {self.spec_shape[1]}], "
                             f"got {tuple(log_BFT.shape)}")
        B, F, T = log_BFT.shape
        pool = self.cfg.time_pool
        x_B1FT = log_BFT[..., :T - T % pool].reshape(B, F, T // pool, pool).mean(-1).unsqueeze(1)
        h_BCft = self.trunk(x_B1FT)
        embedding_BD = self.embed(h_BCft.mean(-1))
        z_BD = self.dropout(embedding_BD)
        return {"embedding": embedding_BD, **{name: head(z_BD) for name, head in self.heads.items()}}

    @torch.no_grad()
    def set_validation(self, pitch_accuracy: float, family_accuracy: float, notes: int, step: int) -> None:
        for name, value in zip(VALIDATION_BUFFERS, (pitch_accuracy, family_accuracy, notes, step)):
            getattr(self, name).fill_(float(value))

    def validation(self) -> Dict[str, float]:
        """The stored validation figures (accuracies -1 when never measured)."""
        return {name: float(getattr(self, name)) for name in VALIDATION_BUFFERS}

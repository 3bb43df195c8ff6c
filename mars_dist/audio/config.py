"""Audio front-end settings: STFT, log-magnitude scale, CMX and Griffin-Lim.

STFT, log scale and CMX define the stored tensors and are recorded in every shard manifest
(`AudioFrontend.describe()`); Griffin-Lim only affects decoding and is not.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class STFTConfig:
    """Paper setting: 16 kHz, 1024-point Hann, hop 256, centered, Nyquist bin dropped -> 512 x 256."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    num_samples: int = 64000
    num_frames: int = 256


@dataclass
class LogScaleConfig:
    """Magnitude -> dB -> clipped to [db_min, db_max] -> linearly mapped to [-1, 1]."""

    db_min: float = -100.0
    db_max: float = 50.0


@dataclass
class CMXConfig:
    """Space-to-depth with a factor per axis (freq, time); `factors` wins over `target_size`."""

    factors: Optional[List[int]] = None
    target_size: Optional[List[int]] = field(default_factory=lambda: [256, 256])
    layout: str = "interleaved"  # interleaved ("chessboard") | contiguous


@dataclass
class GriffinLimConfig:
    """Phase recovery for decoding (torchaudio's fast Griffin-Lim); seeded random initial phase."""

    n_iter: int = 64
    momentum: float = 0.99
    seed: int = 0


@dataclass
class AudioConfig:
    stft: STFTConfig = field(default_factory=STFTConfig)
    log_scale: LogScaleConfig = field(default_factory=LogScaleConfig)
    cmx: CMXConfig = field(default_factory=CMXConfig)
    griffin_lim: GriffinLimConfig = field(default_factory=GriffinLimConfig)

    def validate(self) -> None:
        if self.cmx.layout not in ("interleaved", "contiguous"):
            raise ValueError(f"audio.cmx.layout={self.cmx.layout!r}: expected interleaved or contiguous")

"""Signal features of the evaluation that need no trained model: NDB/k's downsampled log spectrogram
and the evaluation mel of the MSE / MAE columns (mars_dist.audio.mel)."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from mars_dist.audio.frontend import AudioFrontend
from mars_dist.audio.logscale import to_log_scale
from mars_dist.audio.mel import eval_mel

# Bins x frames NDB/k sees: 2048 values per note (Richardson & Weiss cluster images of that order);
# for the paper's 512 x 256 spectrogram each value is the mean of 16 bins x 4 frames.
NDB_GRID: Tuple[int, int] = (32, 64)


@torch.no_grad()
def ndb_features(wave_BN: torch.Tensor, frontend: AudioFrontend, grid: Tuple[int, int] = NDB_GRID) -> torch.Tensor:
    """[B, grid[0] * grid[1]] float32: the log-scaled |STFT| (in [-1, 1]) averaged onto `grid`, flattened."""
    log_BFT = to_log_scale(frontend.wave_to_magnitude(wave_BN), frontend.cfg.log_scale)
    return F.adaptive_avg_pool2d(log_BFT.unsqueeze(1), grid).flatten(1).float().cpu()


@torch.no_grad()
def mel_features(wave_BN: torch.Tensor) -> torch.Tensor:
    """[B, 80, frames] float32: the evaluation protocol's normalised mel."""
    return eval_mel(wave_BN).float().cpu()


@torch.no_grad()
def log_spectrogram(wave_BN: torch.Tensor, frontend: AudioFrontend) -> torch.Tensor:
    """[B, F, T] in [-1, 1]: what the figures show (the audio that was evaluated, analysed again)."""
    return to_log_scale(frontend.wave_to_magnitude(wave_BN), frontend.cfg.log_scale).float().cpu()

"""Media a run writes for people to look at and listen to: spectrogram PNG grids and 16-bit wavs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch

from mars_dist.io.atomic import atomic_write


@dataclass(frozen=True)
class SpectrogramAxes:
    """What the pixels of a log spectrogram in [-1, 1] mean: frame -> seconds, bin -> Hz, value -> dB."""

    sample_rate: int
    n_fft: int
    hop_length: int
    db_min: float
    db_max: float

    @classmethod
    def from_audio(cls, audio_cfg: Any) -> "SpectrogramAxes":
        stft, log = audio_cfg.stft, audio_cfg.log_scale
        return cls(stft.sample_rate, stft.n_fft, stft.hop_length, log.db_min, log.db_max)

    def extent(self, num_bins: int, num_frames: int) -> tuple:
        """(left, right, bottom, top) of imshow: seconds across, Hz up (bin f covers f * sr / n_fft Hz)."""
        return (0.0, num_frames * self.hop_length / self.sample_rate, 0.0, num_bins * self.sample_rate / self.n_fft)


def write_spectrogram_grid(rows: Dict[str, torch.Tensor], path: str, axes: SpectrogramAxes) -> None:
    """One row per entry of `rows` ([N, F, T] log spectrograms in [-1, 1]), one column per sample;
    time in s, frequency in Hz on the outer axes, one colour bar in dB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    n = rows[names[0]].shape[0]
    fig, grid = plt.subplots(len(names), n, figsize=(2.6 * n + 0.8, 2.2 * len(names) + 0.4), squeeze=False)
    image = None
    for r, name in enumerate(names):
        for c in range(n):
            ax = grid[r][c]
            log_FT = rows[name][c].float()
            db_FT = (log_FT + 1.0) / 2.0 * (axes.db_max - axes.db_min) + axes.db_min
            image = ax.imshow(db_FT.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=axes.db_min,
                              vmax=axes.db_max, extent=axes.extent(*log_FT.shape))
            ax.tick_params(labelsize=6)
            if c == 0:
                ax.set_ylabel(f"{name}\nfrequency (Hz)", fontsize=7)
            else:
                ax.set_yticklabels([])
            if r == len(names) - 1:
                ax.set_xlabel("time (s)", fontsize=7)
            else:
                ax.set_xticklabels([])
    bar = fig.colorbar(image, ax=grid, fraction=0.03, pad=0.02)
    bar.set_label("dB", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80, bbox_inches="tight"))
    plt.close(fig)


def write_wav(wave_N: torch.Tensor, sample_rate: int, path: str) -> None:
    import soundfile

    atomic_write(path, lambda tmp: soundfile.write(tmp, wave_N.numpy(), sample_rate, format="WAV", subtype="PCM_16"))


def wandb_image(path: str, caption: Optional[str] = None) -> Any:
    import wandb

    return wandb.Image(path, caption=caption)


def wandb_audio(path: str, sample_rate: int, caption: str) -> Any:
    import wandb

    return wandb.Audio(path, sample_rate=sample_rate, caption=caption)

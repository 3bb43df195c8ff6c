"""Media a run writes for people to look at and listen to: spectrogram PNG grids and 16-bit wavs."""
from __future__ import annotations

from typing import Any, Dict

import torch

from mars_dist.io.atomic import atomic_write


def write_spectrogram_grid(rows: Dict[str, torch.Tensor], path: str) -> None:
    """One row per entry of `rows` ([N, F, T] log spectrograms in [-1, 1]), one column per sample."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    n = rows[names[0]].shape[0]
    fig, axes = plt.subplots(len(names), n, figsize=(2.4 * n, 2.2 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(rows[name][c].numpy(), origin="lower", aspect="auto", vmin=-1, vmax=1, cmap="magma")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)


def write_wav(wave_N: torch.Tensor, sample_rate: int, path: str) -> None:
    import soundfile

    atomic_write(path, lambda tmp: soundfile.write(tmp, wave_N.numpy(), sample_rate, format="WAV", subtype="PCM_16"))


def wandb_image(path: str) -> Any:
    import wandb

    return wandb.Image(path)


def wandb_audio(path: str, sample_rate: int, caption: str) -> Any:
    import wandb

    return wandb.Audio(path, sample_rate=sample_rate, caption=caption)

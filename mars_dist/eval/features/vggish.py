"""VGGish (Hershey et al. 2017) audio embeddings for FAD, loadable from a user-supplied torchvggish state dict.

The network is the torchvggish (harritaylor/torchvggish) layout, so its `vggish-10086976.pth` loads
with strict=True: `features` (VGG convolutions 64-128-256-256-512-512, 3x3, padding 1, ReLU, four 2x2
max-pools) and `embeddings` (12288 -> 4096 -> 4096 -> 128, each Linear followed by ReLU). The conv
output [M, 512, 6, 4] is flattened in (time, band, channel) order, the order of the TensorFlow
original whose weights torchvggish converted. Nothing is downloaded: `load_vggish(path)` reads a file.

Front-end (VGGish's own, not the evaluation mel): 16 kHz mono; 25 ms periodic-Hann frames (400
samples) every 10 ms (160), no padding, |512-point rfft|; 64 HTK-mel triangles, 125-7500 Hz, built
in the mel domain, no area normalisation; log(mel + 0.01); non-overlapping examples of
96 frames (0.96 s): a 4 s NSynth note (64000 samples, 398 frames) gives 4 examples, one 128-d
embedding each. FAD pools the examples of all notes, as Kilgour et al.'s reference does.

Postprocessing (AudioSet's PCA + whitening) is used only when asked for and when the state dict
supplies `pca_eigen_vectors` [128, 128] and `pca_means` [128] (or torchvggish's `pproc.`-prefixed
[128, 1] form): embedding -> V (embedding - mean). The 8-bit quantisation of the AudioSet release
is not applied (it only serves storage; FAD implementations use the unquantised embedding).
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Dict, List, Mapping

import numpy as np
import torch
from torch import nn

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 400  # 25 ms
HOP_SAMPLES = 160  # 10 ms
FFT_SIZE = 512  # next power of two above the window
NUM_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s
EMBEDDING_SIZE = 128
PCA_KEYS = ("pca_eigen_vectors", "pca_means")
_CONV_CHANNELS = (64, "pool", 128, "pool", 256, 256, "pool", 512, 512, "pool")


class VGGishWeightsError(ValueError):
    """A VGGish weights file that is missing, unreadable or not a matching state dict (the message names the path)."""


# --------------------------------------------------------------------------- front-end
def hz_to_mel(f_hz):
    """HTK mel scale, 1127 ln(1 + f / 700) (VGGish's)."""
    return 1127.0 * np.log1p(np.asarray(f_hz, np.float64) / 700.0)


@lru_cache(maxsize=1)
def mel_matrix() -> torch.Tensor:
    """[257, 64] float64 weights: rfft magnitudes [.., 257] @ W -> mel bands [.., 64].

    Triangles are linear in mel (not in Hz, unlike torchaudio's melscale_fbanks), edges equally
    spaced in mel from 125 to 7500 Hz; bins outside (DC included) get no weight.
    """
    bins_mel_F = hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, FFT_SIZE // 2 + 1))[:, None]
    edges = np.linspace(hz_to_mel(MEL_MIN_HZ), hz_to_mel(MEL_MAX_HZ), NUM_BANDS + 2)
    lower, center, upper = edges[:-2][None], edges[1:-1][None], edges[2:][None]
    rising = (bins_mel_F - lower) / (center - lower)
    falling = (upper - bins_mel_F) / (upper - center)
    weights_FB = np.maximum(0.0, np.minimum(rising, falling))
    return torch.from_numpy(weights_FB)


def examples_per_note(num_samples: int) -> int:
    """How many 0.96 s examples VGGish takes from a note of `num_samples` samples (0 if it is too short)."""
    frames = 1 + (num_samples - WINDOW_SAMPLES) // HOP_SAMPLES if num_samples >= WINDOW_SAMPLES else 0
    return frames // EXAMPLE_FRAMES


def log_mel_examples(wave_BN, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """16 kHz waveforms [B, N] (or [N]) -> VGGish input examples [B, E, 96, 64] (float32, float64 inside)."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"sample_rate={sample_rate}: VGGish takes {SAMPLE_RATE} Hz audio; resample first "
                         f"(NSynth is already {SAMPLE_RATE} Hz)")
    wave = wave_BN.detach() if isinstance(wave_BN, torch.Tensor) else torch.from_numpy(np.asarray(wave_BN))
    if wave.ndim not in (1, 2) or wave.is_complex():
        raise ValueError(f"wave_BN: expected real mono waveforms [B, N] or [N], got shape {list(wave.shape)}")
    wave = wave.reshape(-1, wave.shape[-1]).to(torch.float64)
    if examples_per_note(wave.shape[-1]) == 0:
        need = (EXAMPLE_FRAMES - 1) * HOP_SAMPLES + WINDOW_SAMPLES
        raise ValueError(f"wave_BN: notes of {wave.shape[-1]} samples are shorter than one VGGish example "
                         f"({need} samples = 0.96 s + one window at {SAMPLE_RATE} Hz)")
    frames_BFW = wave.unfold(-1, WINDOW_SAMPLES, HOP_SAMPLES)
    window = torch.hann_window(WINDOW_SAMPLES, periodic=True, dtype=torch.float64, device=wave.device)
    magnitude_BFK = torch.fft.rfft(frames_BFW * window, n=FFT_SIZE).abs()
    log_mel_BFM = torch.log(magnitude_BFK @ mel_matrix().to(wave.device) + LOG_OFFSET)
    examples_BEMT = log_mel_BFM.unfold(1, EXAMPLE_FRAMES, EXAMPLE_FRAMES)  # [B, E, 64 bands, 96 frames]
    return examples_BEMT.transpose(-1, -2).float()


# --------------------------------------------------------------------------- network
def _conv_stack() -> nn.Sequential:
    layers: List[nn.Module] = []
    channels = 1
    for spec in _CONV_CHANNELS:
        if spec == "pool":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, spec, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = spec
    return nn.Sequential(*layers)


class VGGish(nn.Module):
    """VGGish embedding network; `pca=True` adds the (unused unless `postprocess`) PCA buffers."""

    def __init__(self, pca: bool = False, postprocess: bool = False):
        super().__init__()
        if postprocess and not pca:
            raise ValueError("postprocess=True needs pca=True: the PCA parameters come with the state dict")
        self.features = _conv_stack()
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING_SIZE), nn.ReLU(inplace=True),
        )
        self.postprocess = postprocess
        if pca:
            self.register_buffer("pca_eigen_vectors", torch.eye(EMBEDDING_SIZE))
            self.register_buffer("pca_means", torch.zeros(EMBEDDING_SIZE))

    def forward(self, examples_M1TF: torch.Tensor) -> torch.Tensor:
        """Log-mel examples [M, 1, 96, 64] -> embeddings [M, 128]."""
        x_MCTF = self.features(examples_M1TF)  # [M, 512, 6, 4]
        emb_MD = self.embeddings(x_MCTF.permute(0, 2, 3, 1).flatten(1))  # TF's (time, band, channel) order
        if self.postprocess:
            emb_MD = (emb_MD - self.pca_means) @ self.pca_eigen_vectors.T
        return emb_MD

    @torch.no_grad()
    def embed(self, wave_BN, sample_rate: int = SAMPLE_RATE, batch: int = 256) -> torch.Tensor:
        """Waveforms [B, N] (or [N]) -> embeddings [B * E, 128], note-major (rows e + E b are note b's)."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        examples = log_mel_examples(wave_BN, sample_rate).flatten(0, 1)[:, None]
        out = torch.cat([self(examples[i:i + batch].to(device)) for i in range(0, len(examples), batch)])
        self.train(was_training)
        return out


# --------------------------------------------------------------------------- loading
def _normalise_pca_keys(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """torchvggish's whole-model dicts call the PCA tensors pproc.* with means [128, 1]: accept both forms."""
    out = {}
    for key, value in state.items():
        name = key[len("pproc."):] if key.startswith("pproc.") and key[len("pproc."):] in PCA_KEYS else key
        out[name] = value.reshape(-1) if name == "pca_means" and value.ndim == 2 and value.shape[1] == 1 else value
    return out


def _first(keys, limit: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_vggish(path: str | os.PathLike, postprocess: bool = False, map_location="cpu") -> VGGish:
    """A VGGish in eval mode with the state dict at `path` loaded strictly (torch.load, weights_only=True).

    Every problem is one VGGishWeightsError naming the path: no such file, not a torch file, not a
    state dict of tensors, missing / unexpected keys or wrong shapes (the first few of each), or
    postprocess=True without PCA tensors in the dict.
    """
    where = os.fspath(path)
    if not os.path.isfile(where):
        raise VGGishWeightsError(f"{where}: no such file (a VGGish state dict, e.g. torchvggish's "
                                 f"vggish-10086976.pth; nothing is downloaded)")
    try:
        state = torch.load(where, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a weights file"
        raise VGGishWeightsError(f"{where}: not a readable torch state dict ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in state.items()):
        raise VGGishWeightsError(f"{where}: holds a {type(state).__name__}, not a state dict (a mapping of "
                                 f"parameter names to tensors)")
    state = _normalise_pca_keys(dict(state))
    has_pca = any(k in state for k in PCA_KEYS)
    if postprocess and not has_pca:
        raise VGGishWeightsError(f"{where}: postprocess=True needs {' and '.join(PCA_KEYS)} in the state dict; "
                                 f"it has none (load torchvggish's PCA tensors into it, or use postprocess=False)")
    model = VGGish(pca=has_pca, postprocess=postprocess)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {list(state[k].shape)} (expected {list(expected[k])})"
             for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        problems = [f"missing keys: {_first(missing)}" if missing else "",
                    f"unexpected keys: {_first(unexpected)}" if unexpected else "",
                    f"wrong shapes: {'; '.join(wrong[:5])}" if wrong else ""]
        raise VGGishWeightsError(f"{where}: not a VGGish (torchvggish layout) state dict: "
                                 + "; ".join(p for p in problems if p))
    model.load_state_dict(state, strict=True)
    return model.eval()

"""Real notes of a shard set for evaluation (any subset, by index) with their reference audio, and
their tokenizer reconstructions.

The reference audio is the note's stored original (.flac, shards written --with-audio: the
evaluation protocol proper) or else Griffin-Lim of the stored CMX tensor (phase recovery on both
sides of a comparison); `Notes.reference` says which. The quick report reads the first notes of a
set, the distributed runner a strided slice of it: both through `ShardNotes.read(indices)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from mars_dist.audio.frontend import AudioFrontend
from mars_dist.data.shard_set import ShardSetError, open_shard_set
from mars_dist.errors import UserValueError
from mars_dist.labels import SAMPLE_FIELDS

REFERENCE_FLAC = "flac"  # the original note stored in the shards (--with-audio)
REFERENCE_GRIFFIN_LIM = "griffin_lim_of_cmx"  # Griffin-Lim of the stored CMX tensor


def griffin_lim_audio(frontend: AudioFrontend, cmx_NCHW: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Griffin-Lim audio [N, num_samples] of CMX tensors, `batch` at a time (bounded memory)."""
    return torch.cat([frontend.cmx_to_wave(cmx_NCHW[i:i + batch]) for i in range(0, len(cmx_NCHW), batch)])


@dataclass
class Notes:
    keys: List[str]
    cmx_NCHW: torch.Tensor  # float32, as the tokenizer sees it
    labels: Dict[str, torch.Tensor]  # LongTensors [N] of every NSynth label field (mars_dist.labels.SAMPLE_FIELDS)
    wave_NT: torch.Tensor  # the reference audio (see `reference`)
    reference: str  # REFERENCE_FLAC | REFERENCE_GRIFFIN_LIM

    @property
    def pitch_N(self) -> torch.Tensor:
        return self.labels["pitch"]


class ShardNotes:
    """A shard set opened for evaluation: `len()` notes in manifest order, `read(indices)` any of them."""

    def __init__(self, url: str, frontend: AudioFrontend, storage_options: Optional[Dict[str, Any]] = None):
        from mars_dist.data.sample_reader import AUDIO_MEMBER, SampleReader

        self.url, self.frontend = url, frontend
        self.manifest, self.reader = open_shard_set(url, frontend.cfg, storage_options)
        self.reference = REFERENCE_FLAC if AUDIO_MEMBER in self.reader.members else REFERENCE_GRIFFIN_LIM
        self._label_reader = SampleReader(url, storage_options, self.reader.index, self.manifest["cmx_shape"])

    def __len__(self) -> int:
        return len(self.reader)

    def labels(self, indices: Sequence[int]) -> Dict[str, torch.Tensor]:
        """LongTensors [len(indices)] of every NSynth label field of these notes (their audio is not decoded)."""
        samples = [self._label_reader[int(i)] for i in indices]
        return {f: torch.tensor([s[f] for s in samples], dtype=torch.long) for f in SAMPLE_FIELDS}

    def read(self, indices: Sequence[int]) -> Notes:
        samples = [self.reader[int(i)] for i in indices]
        cmx = torch.from_numpy(np.stack([s["cmx"] for s in samples])).float()
        labels = {f: torch.tensor([s[f] for s in samples], dtype=torch.long) for f in SAMPLE_FIELDS}
        if self.reference == REFERENCE_FLAC:
            num_samples = self.frontend.cfg.stft.num_samples
            for s in samples:
                if s["audio"].shape != (num_samples,):
                    raise ShardSetError(f"{self.url}: {s['key']}.flac has shape {list(s['audio'].shape)}, expected "
                                        f"mono [{num_samples}] (audio.stft.num_samples)")
            wave = torch.from_numpy(np.stack([s["audio"] for s in samples]))
        else:
            wave = griffin_lim_audio(self.frontend, cmx)
        return Notes([s["key"] for s in samples], cmx, labels, wave, self.reference)


def read_validation_notes(url: str, frontend: AudioFrontend, limit: int = 0,
                          storage_options: Optional[Dict[str, Any]] = None) -> Notes:
    """The first `limit` notes (0 = all) of a shard set, in manifest order, with their reference audio."""
    if limit < 0:
        raise UserValueError(f"limit={limit}: expected 0 (all notes) or a positive count")
    notes = ShardNotes(url, frontend, storage_options)
    return notes.read(range(min(limit or len(notes), len(notes))))


# --------------------------------------------------------------------------- reconstructions
@dataclass
class Reconstruction:
    cmx_NCHW: torch.Tensor  # decoded from the token maps, clamped to the log scale's [-1, 1]
    wave_NT: torch.Tensor  # its Griffin-Lim audio
    code_hits: List[torch.Tensor]  # per scale, how often each code was picked [V]


@torch.no_grad()
def reconstruct(tokenizer: torch.nn.Module, frontend: AudioFrontend, cmx_NCHW: torch.Tensor,
                batch: int = 16) -> Reconstruction:
    """encode -> decode_indices (what a generator's tokens decode to) -> Griffin-Lim, in batches, in eval mode."""
    was_training = tokenizer.training
    tokenizer.eval()
    device = next(tokenizer.parameters()).device
    V = tokenizer.quantizer.codebook_size
    hits = [torch.zeros(V) for _ in tokenizer.quantizer.scales]
    recon, waves = [], []
    for i in range(0, len(cmx_NCHW), batch):
        idx_list = tokenizer.encode(cmx_NCHW[i:i + batch].to(device))
        for si, idx in enumerate(idx_list):
            hits[si] += torch.bincount(idx.flatten().cpu(), minlength=V).float()
        x = tokenizer.decode_indices(idx_list).float().clamp(-1.0, 1.0)
        recon.append(x.cpu())
        waves.append(frontend.cmx_to_wave(x).cpu())
    tokenizer.train(was_training)
    return Reconstruction(torch.cat(recon), torch.cat(waves), hits)

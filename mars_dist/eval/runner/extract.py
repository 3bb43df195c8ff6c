"""One work item -> the feature arrays of its notes: read or generate the audio, then extract.

Every set goes through `NoteFeatures` from its audio, so real, reconstructed and generated notes
are measured the same way. Arrays are numpy (float32 features, int64 labels) keyed by feature name;
the runner gathers them and names them `<feature>_<set>`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np
import torch

from mars_dist.audio.frontend import AudioFrontend
from mars_dist.eval.features.classifier import ClassifierFeatures
from mars_dist.eval.features.spectral import log_spectrogram, mel_features, ndb_features
from mars_dist.eval.notes import ShardNotes, reconstruct
from mars_dist.eval.runner.plan import FLOOR, RECONSTRUCTION, REFERENCE, WorkItem, batch_generator, \
    generation_sources, label_sets
from mars_dist.generation.generator import Generator
from mars_dist.models.generators.options import SamplingOptions
from mars_dist.labels import CONDITION_CLASSES

Arrays = Dict[str, np.ndarray]
PREVIEW = "preview"  # log spectrograms of a set's first notes, for the PNGs (not a metric input)


@dataclass
class NoteFeatures:
    """Audio [B, num_samples] -> every array a metric needs, plus previews of the first `previews` notes."""

    classifier: ClassifierFeatures
    frontend: AudioFrontend  # the evaluated audio's settings (the tokenizer's)
    vggish: Optional[torch.nn.Module] = None
    previews: int = 4

    def __call__(self, wave_BN: torch.Tensor, first_index: int) -> Arrays:
        wave_BN = wave_BN.float()
        out = {k: v.numpy() for k, v in self.classifier(wave_BN).items()}
        out["classifier_embedding"] = out.pop("embedding")
        out["mel"] = mel_features(wave_BN).numpy()
        out["ndb_features"] = ndb_features(wave_BN, self.frontend).numpy()
        if self.vggish is not None:
            out["vggish_embedding"] = self.vggish.embed(wave_BN).float().cpu().numpy()
        shown = max(0, min(self.previews - first_index, len(wave_BN)))
        if shown:
            out[PREVIEW] = log_spectrogram(wave_BN[:shown], self.frontend).numpy()
        return out


def _labels(labels: Dict[str, torch.Tensor]) -> Arrays:
    return {name: labels[name].numpy().astype(np.int64) for name in CONDITION_CLASSES}


@dataclass
class Sources:
    """Where each set's notes come from."""

    reference: ShardNotes
    tokenizer: Optional[torch.nn.Module] = None  # reconstructions of the reference notes
    floor: Optional[ShardNotes] = None
    generators: Dict[str, Generator] = field(default_factory=dict)


def process_item(item: WorkItem, sources: Sources, features: NoteFeatures, sampling: Dict[str, SamplingOptions],
                 seed: int, n_reference: int) -> Dict[str, Arrays]:
    """{set name: arrays} for one item (a reference item also yields the reconstruction set); a
    generated set's notes are drawn with its generator's options, `sampling[set]`."""
    if item.set in (REFERENCE, FLOOR):
        shard_notes = sources.reference if item.set == REFERENCE else sources.floor
        notes = shard_notes.read(range(item.start, item.stop))
        out = {item.set: {**features(notes.wave_NT, item.start), **_labels(notes.labels),
                          "keys": np.array(notes.keys)}}
        if item.set == REFERENCE and sources.tokenizer is not None:
            rec = reconstruct(sources.tokenizer, features.frontend, notes.cmx_NCHW, batch=item.size)
            out[RECONSTRUCTION] = {**features(rec.wave_NT, item.start), **_labels(notes.labels)}
        return out
    gen = sources.generators[item.set]
    wanted = label_sets(sources.reference.labels(generation_sources(item.start, item.stop, n_reference)))
    batch = next(gen.generate(wanted, sampling[item.set], batch_generator(seed, item.batch, gen.device), item.size))
    requested = {name: torch.tensor([s[name] for s in wanted]) for name in CONDITION_CLASSES}
    return {item.set: {**features(batch.wave_BN.cpu(), item.start), **_labels(requested)}}

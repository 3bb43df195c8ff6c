"""The distributed evaluation: every rank extracts the features of its strided share of the work items,
rank 0 gathers them in global note order and computes every set's metrics in float64.

Launcher-agnostic: the rank and world size are the caller's (mars_dist.evaluate takes them from the
launcher's environment through mars_dist.parallel.process_group); with one process nothing is gathered.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from mars_dist.eval.metrics import softmax
from mars_dist.eval.runner.extract import PREVIEW, Arrays, NoteFeatures, Sources, process_item
from mars_dist.eval.runner.plan import FLOOR, RECONSTRUCTION, REFERENCE, WorkItem, plan_items, rank_items
from mars_dist.eval.runner.table import compute_set, metric_options
from mars_dist.models.generators.options import SamplingOptions
from mars_dist.parallel import process_group


@dataclass
class EvalSettings:
    n_reference: int  # reference notes, the first in manifest order
    n_generate: int = 0  # notes per generator (0 = n_reference)
    n_floor: int = 0  # floor notes (0 = n_generate)
    batch: int = 16  # notes per work item: part of what a generated note is (with seed and batch index)
    seed: int = 0
    sampling: Dict[str, SamplingOptions] = field(default_factory=dict)  # generated set -> its generator's options
    previews: int = 4  # notes per set drawn in the spectrogram PNGs
    ndb_k: int = 0  # 0 = table.default_ndb_k(n_reference)
    is_splits: int = 1
    kid_subsets: int = 0  # 0 = one estimate on the full sets
    kid_subset_size: int = 0
    mel_device: Optional[str] = None  # device of the nearest-neighbour mel search (None: the CPU)
    progress: bool = True


@dataclass
class EvalResult:
    features: Dict[str, np.ndarray]  # `<feature>_<set>`: what features.npz holds
    previews: Dict[str, np.ndarray]  # set -> log spectrograms [K, F, T] of its first notes
    results: Dict[str, Dict[str, Dict]]  # set -> metric -> result
    options: Dict[str, Dict[str, Dict]]  # set -> the metric options used
    sizes: Dict[str, int]
    fad_embedding: str
    seconds: Dict[str, float]


def set_sizes(sources: Sources, settings: EvalSettings) -> Dict[str, int]:
    """Notes per work-item set (a reference item also yields the reconstruction)."""
    n_generate = settings.n_generate or settings.n_reference
    sizes = {REFERENCE: settings.n_reference}
    if sources.floor is not None:
        sizes[FLOOR] = min(settings.n_floor or n_generate, len(sources.floor))
    sizes.update({name: n_generate for name in sources.generators})
    return sizes


def extract_share(items: List[WorkItem], sources: Sources, features: NoteFeatures, settings: EvalSettings,
                  rank: int) -> List[Dict[str, Arrays]]:
    """The features of this rank's items, in item order, with a progress bar over notes on rank 0."""
    from tqdm import tqdm

    bar = tqdm(total=sum(i.size for i in items), unit="note", desc=f"evaluate (rank {rank}'s share)",
               disable=rank != 0 or not settings.progress, mininterval=2.0)
    out = []
    for item in items:
        out.append(process_item(item, sources, features, settings.sampling, settings.seed, settings.n_reference))
        bar.update(item.size)
    bar.close()
    return out


def gather_features(items: List[WorkItem], mine: List[Dict[str, Arrays]], rank: int,
                    world: int) -> Optional[Dict[int, Dict[str, Arrays]]]:
    """{item index: its arrays} of every rank's items, on rank 0 (None elsewhere); one item per rank and
    round, so at most world_size items are in flight."""
    indices = rank_items(list(range(len(items))), rank, world)
    collected: Dict[int, Dict[str, Arrays]] = {}
    for r in range(math.ceil(len(items) / world)):
        payload = (indices[r], mine[r]) if r < len(mine) else None
        for got in process_group.gather_object(payload) or []:
            if got is not None:
                collected[got[0]] = got[1]
    return collected if rank == 0 else None


def assemble(collected: Dict[int, Dict[str, Arrays]]) -> tuple:
    """(features `<feature>_<set>` concatenated in global note order, previews per set)."""
    parts: Dict[str, List[np.ndarray]] = {}
    previews: Dict[str, List[np.ndarray]] = {}
    for index in sorted(collected):
        for set_name, arrays in collected[index].items():
            for name, value in arrays.items():
                target = previews.setdefault(set_name, []) if name == PREVIEW else parts.setdefault(f"{name}_{set_name}", [])
                target.append(value)
    return ({k: np.concatenate(v) for k, v in parts.items()}, {k: np.concatenate(v) for k, v in previews.items()})


def probabilities(arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """`<head>_probs_<set>`: the float64 softmax of every logits array (what PIS / IIS are computed from)."""
    return {key.replace("_logits_", "_probs_"): softmax(value) for key, value in arrays.items()
            if key.startswith(("pitch_logits_", "instrument_logits_"))}


def evaluate(sources: Sources, features: NoteFeatures, settings: EvalSettings, rank: int = 0,
             world: int = 1) -> Optional[EvalResult]:
    """Runs the evaluation on this rank; rank 0 returns the result, the others None."""
    t0 = time.perf_counter()
    sizes = set_sizes(sources, settings)
    items = plan_items(sizes, settings.batch)
    mine = extract_share(rank_items(items, rank, world), sources, features, settings, rank)
    t1 = time.perf_counter()
    collected = gather_features(items, mine, rank, world)
    if collected is None:
        return None
    t2 = time.perf_counter()
    arrays, previews = assemble(collected)
    arrays.update(probabilities(arrays))
    if sources.tokenizer is not None:
        sizes = {REFERENCE: sizes[REFERENCE], RECONSTRUCTION: sizes[REFERENCE], **sizes}
    fad_embedding = "vggish_embedding" if features.vggish is not None else "classifier_embedding"
    options = {name: metric_options(name, settings.n_reference, settings.ndb_k, settings.is_splits,
                                    settings.kid_subsets, settings.kid_subset_size, settings.mel_device)
               for name in sizes}
    results = {name: compute_set(arrays, name, fad_embedding, options[name]) for name in sizes}
    seconds = {"extract_rank0": t1 - t0, "gather_and_wait": t2 - t1, "metrics": time.perf_counter() - t2}
    return EvalResult(arrays, previews, results, options, sizes, fad_embedding, seconds)

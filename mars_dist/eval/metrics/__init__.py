"""The evaluation metrics of MARS Table 1 (Vinay & Lerch 2022; Nistal et al. 2021), one module each.

Each metric is a plain function of feature arrays (numpy arrays or CPU torch tensors; the mel metrics
also take tensors on any device) that returns a JSON-ready dict; METRICS names them, with the
feature arrays each needs, so a runner can compute every metric its features allow:

    results = compute_metrics(features, options={"ndb_k": {"k": 50}})

Feature arrays (ref = reference/test notes, gen = generated notes, recon = reconstructions of the ref
notes, row i of recon being note i of ref):

| key                      | shape      | what                                                        |
|--------------------------|------------|-------------------------------------------------------------|
| ndb_features_ref / _gen  | [N, D]     | log-magnitude spectrogram per note, downsampled, flattened  |
| pitch_logits_ref / _gen  | [N, 128]   | pitch classifier logits (MIDI 0-127)                        |
| instrument_logits_ref / _gen | [N, 11] | instrument-family classifier logits                        |
| mel_ref, mel_gen, mel_recon | [N, 80, T] | mars_dist.audio.mel.eval_mel of the audio                |
| embedding_ref / _gen     | [E, 128]   | VGGish (or another) embeddings, all examples of all notes   |

Docs: docs/eval.md (definitions, formulas, references and the choices made where papers differ).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple

from mars_dist.eval.metrics.frechet import frechet_distance
from mars_dist.eval.metrics.inception_score import inception_score, softmax
from mars_dist.eval.metrics.kernel_distance import kernel_distances
from mars_dist.eval.metrics.mel_error import nearest_mel_error, paired_mel_error
from mars_dist.eval.metrics.ndb import ndb_k


@dataclass(frozen=True)
class Metric:
    name: str
    needs: Tuple[str, ...]  # feature keys, passed positionally to `compute` in this order
    compute: Callable[..., Dict[str, Any]]  # compute(*arrays, **options) -> JSON-ready dict
    summary: str


def _inception(logits, splits: int = 1) -> Dict[str, Any]:
    return inception_score(softmax(logits), splits=splits)


def _fad(ref, gen) -> Dict[str, Any]:
    return {"fad": frechet_distance(ref, gen)}


METRICS: Dict[str, Metric] = {m.name: m for m in (
    Metric("ndb_k", ("ndb_features_ref", "ndb_features_gen"), ndb_k,
           "NDB/k: share of k-means bins (on ref) whose generated proportion differs (z-test, p < 0.05)"),
    Metric("pis", ("pitch_logits_gen",), _inception, "pitch Inception Score of the generated notes"),
    Metric("iis", ("instrument_logits_gen",), _inception, "instrument Inception Score of the generated notes"),
    Metric("pkid", ("pitch_logits_ref", "pitch_logits_gen"), kernel_distances,
           "pitch kernel distance: unbiased MMD^2 of pitch logits, cubic (kid_poly) and IMQ (kid_imq) kernels"),
    Metric("ikid", ("instrument_logits_ref", "instrument_logits_gen"), kernel_distances,
           "instrument kernel distance: as pkid on instrument logits"),
    Metric("mel_paired", ("mel_ref", "mel_recon"), paired_mel_error,
           "MSE / MAE of each reconstruction against its own reference note"),
    Metric("mel_nearest", ("mel_gen", "mel_ref"), nearest_mel_error,
           "MSE / MAE of each generated note against its MSE-nearest reference note"),
    Metric("fad", ("embedding_ref", "embedding_gen"), _fad, "Fréchet Audio Distance between embedding Gaussians"),
)}


def available_metrics(feature_keys: Iterable[str]) -> Tuple[str, ...]:
    """The metrics whose every input is among `feature_keys`, in METRICS order."""
    keys = set(feature_keys)
    return tuple(name for name, m in METRICS.items() if set(m.needs) <= keys)


def compute_metrics(features: Mapping[str, Any], names: Optional[Iterable[str]] = None,
                    options: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Dict[str, Dict[str, Any]]:
    """{metric name: result dict} for `names` (default: every metric the features allow).

    `options` maps a metric name to keyword arguments of its function (e.g. {"pis": {"splits": 10}}).
    An unknown metric or option key, or a missing feature array, is a ValueError naming it.
    """
    names = available_metrics(features) if names is None else tuple(names)
    options = dict(options or {})
    unknown = [n for n in list(names) + list(options) if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
    stray = [n for n in options if n not in names]
    if stray:
        raise ValueError(f"options given for {stray}, which are not being computed ({list(names)})")
    results = {}
    for name in names:
        metric = METRICS[name]
        missing = [k for k in metric.needs if k not in features]
        if missing:
            raise ValueError(f"metric {name!r} needs feature array(s) {missing}; given: {sorted(features)}")
        kwargs = dict(options.get(name, {}))
        accepted = list(inspect.signature(metric.compute).parameters)[len(metric.needs):]
        bad = [k for k in kwargs if k not in accepted]
        if bad:
            raise ValueError(f"metric {name!r} has no option(s) {bad}; its options: {accepted}")
        results[name] = metric.compute(*(features[k] for k in metric.needs), **kwargs)
    return results


__all__ = ["METRICS", "Metric", "available_metrics", "compute_metrics", "frechet_distance", "inception_score",
           "kernel_distances", "ndb_k", "nearest_mel_error", "paired_mel_error", "softmax"]

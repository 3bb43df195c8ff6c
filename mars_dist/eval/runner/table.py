"""The metrics of each evaluated set, computed from the gathered features, and the Table 1 layout.

Feature arrays are named `<feature>_<set>` (features.npz holds exactly these); `metric_inputs` maps
one evaluated set onto the metric layer's `_ref` / `_gen` (/ `_recon`) names, so every number of
metrics.json can be recomputed from features.npz with `compute_set(features, set, ...)` or with any
other implementation of the formulas in docs/eval.md.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from mars_dist.eval.metrics import compute_metrics
from mars_dist.eval.runner.plan import FLOOR, RECONSTRUCTION, REFERENCE

# Which metrics each kind of set gets: the reference notes only have their own Inception Scores;
# a reconstruction is compared with its own reference note (paired mel errors), anything else with
# the MSE-nearest reference note.
REFERENCE_METRICS = ("pis", "iis")
RECONSTRUCTION_METRICS = ("ndb_k", "pis", "iis", "pkid", "ikid", "mel_paired", "fad")
GENERATED_METRICS = ("ndb_k", "pis", "iis", "pkid", "ikid", "mel_nearest", "fad")
FEATURES = ("ndb_features", "pitch_logits", "instrument_logits", "mel")
FAD_EMBEDDINGS = ("classifier_embedding", "vggish_embedding")

# Table 1's columns: (header, metric, key in its result, lower is better). PKID / IKID are Nistal et
# al.'s, with their bounded inverse-multiquadratic kernel (docs/eval.md); metrics.json also holds the
# cubic-kernel KID (kid_poly), which on raw logits mostly measures their scale.
COLUMNS: Tuple[Tuple[str, str, str, bool], ...] = (
    ("NDB/k", "ndb_k", "ndb_k", True),
    ("PIS", "pis", "mean", False),
    ("IIS", "iis", "mean", False),
    ("PKID", "pkid", "kid_imq", True),
    ("IKID", "ikid", "kid_imq", True),
    ("MSE", "mel", "mse", True),
    ("MAE", "mel", "mae", True),
    ("FAD", "fad", "fad", True),
)

# MARS (Ristori, Bindini & Frasconi 2025) on the NSynth test set, for reference only: another data
# set, classifiers and embedding. The tokenizer's mel MSE / MAE are the values this project quotes
# (docs/tokenizer.md); the rest of the paper's Table 1 was not available offline when this was
# written, so those cells stay empty rather than guessed.
PAPER_ROWS: Dict[str, Dict[str, Optional[float]]] = {
    "MARS reconstruction (paper, NSynth test)": {"MSE": 0.0143, "MAE": 0.0915},
    "MARS generated (paper, NSynth test)": {},
}


def metrics_for(evaluated: str) -> Tuple[str, ...]:
    return {REFERENCE: REFERENCE_METRICS, RECONSTRUCTION: RECONSTRUCTION_METRICS}.get(evaluated, GENERATED_METRICS)


def metric_inputs(features: Mapping[str, np.ndarray], evaluated: str, fad_embedding: str) -> Dict[str, np.ndarray]:
    """The metric layer's arrays for `evaluated` against the reference set."""
    out: Dict[str, np.ndarray] = {}
    for name in FEATURES:
        out[f"{name}_ref"] = features[f"{name}_{REFERENCE}"]
        out[f"{name}_gen"] = features[f"{name}_{evaluated}"]
    out["embedding_ref"] = features[f"{fad_embedding}_{REFERENCE}"]
    out["embedding_gen"] = features[f"{fad_embedding}_{evaluated}"]
    out["mel_recon"] = out["mel_gen"]
    return out


def default_ndb_k(n_reference: int) -> int:
    """50 bins (Vinay & Lerch) when the reference set has >= 500 notes, else one bin per 10 notes (>= 2):
    a bin holding fewer notes makes NDB/k mostly sampling noise (docs/eval.md, small-sample bias)."""
    return max(2, min(50, n_reference // 10))


def metric_options(evaluated: str, n_reference: int, ndb_k: int = 0, is_splits: int = 1, kid_subsets: int = 0,
                   kid_subset_size: int = 0, mel_device: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
    """Keyword arguments of each metric of `evaluated` (JSON-ready: metrics.json records them).
    `mel_device` runs the nearest-neighbour mel search, the evaluation's one O(M N) step, there (a GPU)."""
    names = metrics_for(evaluated)
    options: Dict[str, Dict[str, Any]] = {"pis": {"splits": is_splits}, "iis": {"splits": is_splits}}
    if "ndb_k" in names:
        options["ndb_k"] = {"k": ndb_k or default_ndb_k(n_reference)}
    if kid_subsets and "pkid" in names:
        options["pkid"] = options["ikid"] = {"subsets": kid_subsets, "subset_size": kid_subset_size}
    if mel_device and "mel_nearest" in names:
        options["mel_nearest"] = {"device": mel_device}
    return options


def compute_set(features: Mapping[str, np.ndarray], evaluated: str, fad_embedding: str,
                options: Mapping[str, Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """{metric: result} of one evaluated set (float64 inside the metric layer)."""
    return compute_metrics(metric_inputs(features, evaluated, fad_embedding), metrics_for(evaluated), options)


def cells(results: Mapping[str, Mapping[str, Any]]) -> Dict[str, Optional[float]]:
    """{column header: value} of one set's results (None where the set has no such metric)."""
    out: Dict[str, Optional[float]] = {}
    for header, metric, key, _ in COLUMNS:
        source = next((r for name, r in results.items() if name == metric or name.startswith(metric + "_")), None)
        out[header] = None if source is None else float(source[key])
    return out


def _fmt(value: Optional[float]) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def markdown_table(rows: Sequence[Tuple[str, str, int, Mapping[str, Optional[float]]]], notes: List[str]) -> str:
    """Rows (label, data set, notes, cells) of this run, then the paper's rows, then the footnotes."""
    header = ["", "data set", "notes"] + [f"{h} {'↓' if lower else '↑'}" for h, _, _, lower in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, data, n, values in rows:
        lines.append("| " + " | ".join([label, data, str(n)] + [_fmt(values.get(h)) for h, *_ in COLUMNS]) + " |")
    for label, values in PAPER_ROWS.items():
        lines.append("| " + " | ".join([f"*{label}*", "*NSynth test: a different data set*", "4096"]
                                       + [_fmt(values.get(h)) for h, *_ in COLUMNS]) + " |")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def row_label(name: str) -> str:
    """How a set is named in the table (a generator's set by its own name)."""
    return {REFERENCE: "real notes (reference)", FLOOR: "real notes of another set (floor)",
            RECONSTRUCTION: "tokenizer reconstruction"}.get(name, name)

"""Inception Score (Salimans et al. 2016) of a classifier's predictions: PIS (pitch) and IIS (instrument).

    IS = exp( mean_x KL( p(y|x) || p(y) ) ),   p(y) = mean_x p(y|x)

High when each note is confidently one class (sharp p(y|x)) and the classes are used evenly (flat
p(y)); it lies in [1, K]. Only the generated notes enter; the reference set's IS is its ceiling.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from mars_dist.eval.metrics._arrays import as_float64_rows, check_positive_int

ROW_SUM_TOLERANCE = 1e-3  # float32 softmax rows sum to 1 within ~1e-6; anything far off is not a distribution


def softmax(logits_NK) -> np.ndarray:
    """Row-wise softmax in float64 (max subtracted: no overflow for large logits)."""
    z = as_float64_rows(logits_NK, "logits_NK")
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _mean_kl_to_marginal(p_NK: np.ndarray) -> float:
    """mean_x KL(p(y|x) || p(y)) with 0 log 0 = 0, so one-hot predictions (exact zeros) are fine.

    Where p(y|x) > 0 the marginal is > 0 too, so the logarithm never sees a zero.
    """
    marginal_K = p_NK.mean(axis=0)
    positive = p_NK > 0
    log_ratio = np.log(np.where(positive, p_NK, 1.0)) - np.log(np.where(positive, marginal_K, 1.0))
    return float((np.where(positive, p_NK * log_ratio, 0.0)).sum(axis=1).mean())


def inception_score(probs_NK, splits: int = 1) -> Dict[str, Any]:
    """IS of softmax probabilities [N, K]: {"mean", "std", "splits"}.

    With `splits` > 1 the N rows are cut, in their given order, into `splits` nearly equal consecutive
    parts (np.array_split); the score is computed per part and "mean"/"std" are over the parts, std
    with 1/splits normalisation (as Salimans et al.'s reference code; 10 splits is the usual report).
    With one split "std" is None: there is no spread to report. Rows must be probability vectors.
    """
    p = as_float64_rows(probs_NK, "probs_NK")
    splits = check_positive_int(splits, "splits")
    n, k = p.shape
    if splits > n:
        raise ValueError(f"splits={splits} exceeds the {n} rows of probs_NK (shape {[n, k]}): each split needs a row")
    if (p < 0).any():
        raise ValueError(f"probs_NK: negative entries (min {p.min():.3g}); expected softmax probabilities, "
                         f"not logits (use softmax(logits_NK))")
    sums = p.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > ROW_SUM_TOLERANCE:
        raise ValueError(f"probs_NK: row {worst} sums to {sums[worst]:.6g}, expected 1 (softmax probabilities over "
                         f"K={k} classes; pass logits through softmax(logits_NK))")
    p = p / sums[:, None]
    scores = np.array([np.exp(_mean_kl_to_marginal(part)) for part in np.array_split(p, splits)])
    return {"mean": float(scores.mean()), "std": float(scores.std()) if splits > 1 else None, "splits": splits}

"""NDB/k, the Number of statistically Different Bins (Richardson & Weiss 2018), as Vinay & Lerch 2022 use it.

k-means (k = 50 by default) on the REFERENCE features defines k bins (Voronoi cells of the centers);
both sets are assigned to their nearest center; per bin, a two-sided two-proportion z-test with the
pooled proportion asks whether the generated share differs from the reference share at level alpha:

    p = (n_r p_r + n_g p_g) / (n_r + n_g),   z = (p_r - p_g) / sqrt(p (1 - p) (1/n_r + 1/n_g)),
    different  <=>  2 Phi(-|z|) < alpha

NDB/k = (number of different bins) / k: 0 for a generator that covers the modes in the right
proportions, near alpha for a second sample of the reference distribution, -> 1 under mode collapse.
Features: a log-magnitude spectrogram per note, downsampled and flattened (rows of [N, D]); no
whitening and all D dimensions used (Richardson & Weiss's code can whiten and subsample dimensions).
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np
from scipy.special import erfc

from mars_dist.eval.metrics._arrays import as_float64_rows, check_positive_int, check_same_width
from mars_dist.eval.metrics.kmeans import kmeans, nearest_center


def two_proportion_z_test(p1_K, n1: int, p2_K, n2: int) -> Tuple[np.ndarray, np.ndarray]:
    """(z [K], two-sided p-values [K]) of p1 vs p2 with the pooled standard error.

    A bin empty in both sets (pooled p = 0) or holding everything in both (p = 1) has no spread:
    it is reported as z = 0, p-value 1 (no evidence of a difference).
    """
    p1, p2 = np.asarray(p1_K, np.float64), np.asarray(p2_K, np.float64)
    pooled = (n1 * p1 + n2 * p2) / (n1 + n2)
    se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    z = np.divide(p1 - p2, se, out=np.zeros_like(se), where=se > 0)
    return z, erfc(np.abs(z) / np.sqrt(2.0))


def ndb_k(ref_ND, gen_MD, k: int = 50, alpha: float = 0.05, seed: int = 0, max_iter: int = 100) -> Dict[str, Any]:
    """NDB/k of generated features [M, D] against reference features [N, D] (rows flattened; N >= k).

    Returns {"ndb_k", "ndb" (count), "k", "alpha", "reference_proportions", "generated_proportions",
    "z", "p_values", "different_bins", "kmeans_iterations", "kmeans_converged"}; the per-bin lists are
    ordered by reference bin size, largest first (so a report's bar chart reads as a histogram).
    """
    ref = as_float64_rows(ref_ND, "ref_ND")
    gen = as_float64_rows(gen_MD, "gen_MD")
    check_same_width(ref, gen, "ref_ND", "gen_MD")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha!r}: the significance level must lie in (0, 1)")
    k = check_positive_int(k, "k")
    if k > ref.shape[0]:
        raise ValueError(f"k={k} bins but ref_ND has only {ref.shape[0]} rows (shape {list(ref.shape)}): "
                         f"NDB needs at least k reference notes, and many per bin (docs/eval.md)")
    km = kmeans(ref, k, seed=seed, max_iter=max_iter)
    ref_counts = np.bincount(nearest_center(ref, km.centers_KD), minlength=k)
    gen_counts = np.bincount(nearest_center(gen, km.centers_KD), minlength=k)
    order = np.argsort(-ref_counts, kind="stable")
    p_ref, p_gen = ref_counts[order] / len(ref), gen_counts[order] / len(gen)
    z, p_values = two_proportion_z_test(p_ref, len(ref), p_gen, len(gen))
    different = p_values < alpha
    return {
        "ndb_k": float(different.sum() / k),
        "ndb": int(different.sum()),
        "k": k,
        "alpha": float(alpha),
        "reference_proportions": p_ref.tolist(),
        "generated_proportions": p_gen.tolist(),
        "z": z.tolist(),
        "p_values": p_values.tolist(),
        "different_bins": different.tolist(),
        "kmeans_iterations": km.iterations,
        "kmeans_converged": km.converged,
    }

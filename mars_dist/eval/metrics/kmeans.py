"""Seeded, deterministic k-means in numpy float64 (k-means++ seeding, then Lloyd iterations): NDB/k's bins.

Written here because NDB needs only this and the environment has no scikit-learn. Determinism: one
numpy Generator seeded by `seed` drives every random choice, so the same inputs and seed give the
same bins on every rank and every run.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mars_dist.eval.metrics._arrays import as_float64_rows, check_positive_int


@dataclass(frozen=True)
class KMeansResult:
    centers_KD: np.ndarray
    labels_N: np.ndarray  # index of the nearest center of each row (int64)
    inertia: float  # sum of squared distances of the rows to their centers
    iterations: int  # Lloyd iterations run
    converged: bool  # True when an iteration changed no assignment


def squared_distances(x_ND: np.ndarray, c_KD: np.ndarray) -> np.ndarray:
    """||x_n - c_k||^2 [N, K] via |x|^2 - 2 x.c + |c|^2 (one matmul), clipped at 0 against rounding."""
    sq = (x_ND * x_ND).sum(1)[:, None] - 2.0 * (x_ND @ c_KD.T) + (c_KD * c_KD).sum(1)[None, :]
    return np.clip(sq, 0.0, None)


def nearest_center(x_ND: np.ndarray, c_KD: np.ndarray) -> np.ndarray:
    """Index of the nearest center of each row (ties: the lowest index)."""
    return squared_distances(x_ND, c_KD).argmin(axis=1)


def kmeans_plus_plus(x_ND: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Arthur & Vassilvitskii's seeding: the first center uniform, each next one drawn with probability
    proportional to the squared distance to the nearest center chosen so far (so never a chosen point)."""
    n = x_ND.shape[0]
    norms_N = (x_ND * x_ND).sum(1)
    chosen = [int(rng.integers(n))]
    d2_N = np.full(n, np.inf)
    for _ in range(1, k):
        c_D = x_ND[chosen[-1]]
        d2_N = np.minimum(d2_N, np.clip(norms_N - 2.0 * (x_ND @ c_D) + c_D @ c_D, 0.0, None))
        total = d2_N.sum()
        if total <= 0.0:
            raise ValueError(f"k-means: the {n} rows hold only {len(chosen)} distinct points, fewer than k={k} "
                             f"clusters; lower k or use more reference notes")
        chosen.append(int(rng.choice(n, p=d2_N / total)))
    return x_ND[chosen].copy()


def kmeans(x_ND, k: int, seed: int = 0, max_iter: int = 100) -> KMeansResult:
    """k clusters of the rows of x [N, D]: k-means++ seeding, Lloyd iterations until no assignment changes
    (or `max_iter`). An emptied cluster is re-seeded with the row farthest from its current center."""
    x = as_float64_rows(x_ND, "x_ND")
    k = check_positive_int(k, "k")
    max_iter = check_positive_int(max_iter, "max_iter")
    if k > x.shape[0]:
        raise ValueError(f"k={k} clusters but only {x.shape[0]} rows in x_ND (shape {list(x.shape)}): "
                         f"k-means needs at least k rows")
    centers = kmeans_plus_plus(x, k, np.random.default_rng(seed))
    labels = nearest_center(x, centers)
    converged, iterations = False, 0
    for iterations in range(1, max_iter + 1):
        counts_K = np.bincount(labels, minlength=k)
        for j in np.flatnonzero(counts_K):
            centers[j] = x[labels == j].mean(axis=0)
        for empty in np.flatnonzero(counts_K == 0):
            far = int(((x - centers[labels]) ** 2).sum(1).argmax())
            centers[empty], labels[far] = x[far], empty
        new_labels = nearest_center(x, centers)
        if np.array_equal(new_labels, labels):
            converged = True
            break
        labels = new_labels
    inertia = float(((x - centers[labels]) ** 2).sum())
    return KMeansResult(centers, labels, inertia, iterations, converged)

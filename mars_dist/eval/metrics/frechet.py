"""Fréchet (Audio) Distance between Gaussians fitted to two sets of embeddings (FAD, Kilgour et al. 2019).

    FD = ||mu_r - mu_g||^2 + tr(S_r) + tr(S_g) - 2 tr( (S_r^1/2 S_g S_r^1/2)^1/2 )

The trace term is computed in float64 from two symmetric eigen-decompositions: S_r^1/2 via eigh, then
the eigenvalues of the symmetric PSD matrix S_r^1/2 S_g S_r^1/2 (same spectrum as S_r S_g). Unlike
sqrtm(S_r S_g) of a non-symmetric product, nothing here turns complex, and singular covariances work.
"""
from __future__ import annotations

import warnings
from typing import Tuple

import numpy as np

from mars_dist.eval.metrics._arrays import as_float64_rows, check_same_width


def fit_gaussian(x_ND, name: str = "x_ND") -> Tuple[np.ndarray, np.ndarray]:
    """(mean [D], covariance [D, D]) in float64, covariance with the 1/(N-1) normalisation (np.cov, FAD's and FID's).

    N < 2 is an error (no covariance). N <= D gives a singular covariance of rank <= N-1: the distance
    is still defined, but strongly biased, so it warns; use N well above D (FAD: thousands of frames).
    """
    x = as_float64_rows(x_ND, name, min_rows=2)
    n, d = x.shape
    if n <= d:
        warnings.warn(f"{name}: {n} samples of dimension {d}: the covariance is singular (rank <= {n - 1} < {d}); "
                      f"the Fréchet distance is defined but strongly biased; use many more than {d} samples",
                      RuntimeWarning, stacklevel=2)
    return x.mean(axis=0), np.cov(x, rowvar=False, ddof=1).reshape(d, d)


def _psd_sqrt(sigma_DD: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix; rounding-level negative eigenvalues are clipped to 0."""
    w, v = np.linalg.eigh(sigma_DD)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_from_stats(mu1_D, sigma1_DD, mu2_D, sigma2_DD) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); covariances must be symmetric PSD.

    Clipped at 0: a true distance is non-negative, and identical inputs otherwise give -1e-13-sized rounding.
    """
    mu1, mu2 = np.asarray(mu1_D, np.float64), np.asarray(mu2_D, np.float64)
    s1, s2 = np.asarray(sigma1_DD, np.float64), np.asarray(sigma2_DD, np.float64)
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    for name, m, shape in (("mu1_D", mu1, (d,)), ("mu2_D", mu2, (d,)), ("sigma1_DD", s1, (d, d)),
                           ("sigma2_DD", s2, (d, d))):
        if d < 1 or m.shape != shape:
            raise ValueError(f"frechet_distance_from_stats: {name} has shape {list(m.shape)}, expected {list(shape)} "
                             f"(mu1_D must be 1-D, D={d})")
    for name, s in (("sigma1_DD", s1), ("sigma2_DD", s2)):
        if not np.allclose(s, s.T, rtol=1e-10, atol=1e-12 * max(1.0, float(np.abs(s).max()))):
            raise ValueError(f"frechet_distance_from_stats: {name} is not symmetric; expected a covariance matrix")
    root1 = _psd_sqrt((s1 + s1.T) / 2)
    middle = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    return max(0.0, float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt))


def frechet_distance(x_ref_ND, x_gen_MD) -> float:
    """FAD: Fréchet distance between Gaussians fitted to reference [N, D] and generated [M, D] embeddings."""
    ref = as_float64_rows(x_ref_ND, "x_ref_ND", min_rows=2)
    gen = as_float64_rows(x_gen_MD, "x_gen_MD", min_rows=2)
    check_same_width(ref, gen, "x_ref_ND", "x_gen_MD")
    return frechet_distance_from_stats(*fit_gaussian(ref, "x_ref_ND"), *fit_gaussian(gen, "x_gen_MD"))

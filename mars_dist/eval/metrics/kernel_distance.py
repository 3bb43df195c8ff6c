"""Kernel (Inception) Distance: the unbiased MMD^2 between classifier outputs of reference and generated notes.

PKID / IKID use the pitch / instrument classifier's logits. Two kernels, reported under distinct names:

- "kid_poly": Binkowski et al. 2018 (KID): k(x, y) = (gamma x.y + coef0)^degree, degree 3, gamma 1/D,
  coef0 1 (torchmetrics' and the Vinay & Lerch toolkit's KID).
- "kid_imq": Nistal et al. 2020/2021 (PKID/IKID in the NSynth GAN papers): k(x, y) = C / (C + ||x - y||^2),
  C = 16, exactly the kernel of their released code (`inverse_multiquadratics(d, var=16.)`). It is the
  Wasserstein-auto-encoder form of the inverse multiquadric, 1 / (1 + ||x - y||^2 / C), without the
  square root of the textbook (c^2 + r^2)^(-1/2).

The estimator is the unbiased one (Gretton et al. 2012, eq. 3), for sets of sizes m and n:

    MMD^2 = sum_{i!=j} k(x_i,x_j) / (m(m-1)) + sum_{i!=j} k(y_i,y_j) / (n(n-1)) - 2 sum_{i,j} k(x_i,y_j) / (mn)

It can be slightly negative when the sets agree. Nistal's code keeps the diagonal k(x_i, x_i) = 1 in
the first two sums (still dividing by m(m-1)), which adds 2/(m-1) for equal sizes m: add that to
compare with numbers from it. Kernel sums are accumulated over row chunks, so memory stays
O(chunk x N) and 10k x 10k sets need no 10k x 10k matrix.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, Optional

import numpy as np

from mars_dist.eval.metrics._arrays import as_float64_rows, check_positive_int, check_same_width

Kernel = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (x_AD, y_BD) -> K_AB
IMQ_C = 16.0
CHUNK_ROWS = 1024


def polynomial_kernel(x_AD: np.ndarray, y_BD: np.ndarray, degree: int = 3, gamma: Optional[float] = None,
                      coef0: float = 1.0) -> np.ndarray:
    """(gamma x.y + coef0)^degree, gamma = 1/D by default; the power as repeated in-place products
    (numpy's float power is several times slower on the 1024 x N chunks)."""
    k_AB = x_AD @ y_BD.T
    k_AB *= 1.0 / x_AD.shape[1] if gamma is None else gamma
    k_AB += coef0
    out_AB = k_AB.copy()
    for _ in range(degree - 1):
        out_AB *= k_AB
    return out_AB


def imq_kernel(x_AD: np.ndarray, y_BD: np.ndarray, c: float = IMQ_C) -> np.ndarray:
    """C / (C + ||x - y||^2), Nistal et al.'s inverse multiquadratic kernel (in place on one [A, B] buffer)."""
    k_AB = x_AD @ y_BD.T
    k_AB *= -2.0
    k_AB += (x_AD * x_AD).sum(1)[:, None]
    k_AB += (y_BD * y_BD).sum(1)[None, :]
    np.maximum(k_AB, 0.0, out=k_AB)  # rounding can make a squared distance slightly negative
    k_AB += c
    return np.divide(c, k_AB, out=k_AB)


def _kernel_sum(x_ND: np.ndarray, y_MD: np.ndarray, kernel: Kernel, same: bool, chunk: int) -> float:
    """sum_{i,j} k(x_i, y_j), without the diagonal i == j when x and y are the same set."""
    total = 0.0
    for a in range(0, x_ND.shape[0], chunk):
        k_CM = kernel(x_ND[a:a + chunk], y_MD)
        total += float(k_CM.sum())
        if same:
            total -= float(np.trace(k_CM[:, a:a + k_CM.shape[0]]))
    return total


def mmd2_unbiased(x_ND, y_MD, kernel: Kernel, chunk: int = CHUNK_ROWS) -> float:
    """Unbiased MMD^2 between the rows of x [N, D] and y [M, D] (N, M >= 2) under `kernel`."""
    x = as_float64_rows(x_ND, "x_ND", min_rows=2)
    y = as_float64_rows(y_MD, "y_MD", min_rows=2)
    check_same_width(x, y, "x_ND", "y_MD")
    chunk = check_positive_int(chunk, "chunk")
    m, n = x.shape[0], y.shape[0]
    return (_kernel_sum(x, x, kernel, True, chunk) / (m * (m - 1))
            + _kernel_sum(y, y, kernel, True, chunk) / (n * (n - 1))
            - 2.0 * _kernel_sum(x, y, kernel, False, chunk) / (m * n))


def kernel_distance(x_ref_ND, x_gen_MD, kernel: Kernel, subsets: int = 1, subset_size: Optional[int] = None,
                    seed: int = 0, chunk: int = CHUNK_ROWS) -> Dict[str, Any]:
    """MMD^2 under `kernel`: {"mean", "std", "subsets", "subset_size"}.

    Default: one estimate on the full sets (sizes may differ), "std" None. With `subset_size`, each of
    `subsets` estimates uses `subset_size` rows drawn without replacement from each set (a seeded
    numpy generator), and "mean"/"std" (1/subsets normalisation) are over the estimates: torchmetrics'
    KID protocol (100 subsets of 1000 there).
    """
    ref = as_float64_rows(x_ref_ND, "x_ref_ND", min_rows=2)
    gen = as_float64_rows(x_gen_MD, "x_gen_MD", min_rows=2)
    check_same_width(ref, gen, "x_ref_ND", "x_gen_MD")
    subsets = check_positive_int(subsets, "subsets")
    if subset_size is None:
        if subsets > 1:
            raise ValueError(f"subsets={subsets} needs a subset_size (rows drawn per subset); "
                             f"subset_size=None means one estimate on the full sets")
        return {"mean": mmd2_unbiased(ref, gen, kernel, chunk), "std": None, "subsets": 1, "subset_size": None}
    subset_size = check_positive_int(subset_size, "subset_size", minimum=2)
    if subset_size > min(len(ref), len(gen)):
        raise ValueError(f"subset_size={subset_size} exceeds the smaller set (x_ref_ND has {len(ref)} rows, "
                         f"x_gen_MD has {len(gen)}); it must be <= {min(len(ref), len(gen))}")
    rng = np.random.default_rng(seed)
    values = np.array([mmd2_unbiased(ref[rng.choice(len(ref), subset_size, replace=False)],
                                     gen[rng.choice(len(gen), subset_size, replace=False)], kernel, chunk)
                       for _ in range(subsets)])
    return {"mean": float(values.mean()), "std": float(values.std()) if subsets > 1 else None,
            "subsets": subsets, "subset_size": subset_size}


def kid_poly(x_ref_ND, x_gen_MD, degree: int = 3, gamma: Optional[float] = None, coef0: float = 1.0,
             **subsetting) -> Dict[str, Any]:
    """Binkowski et al.'s KID (cubic polynomial kernel); `subsetting`: see kernel_distance."""
    degree = check_positive_int(degree, "degree")
    return kernel_distance(x_ref_ND, x_gen_MD, partial(polynomial_kernel, degree=degree, gamma=gamma, coef0=coef0),
                           **subsetting)


def kid_imq(x_ref_ND, x_gen_MD, c: float = IMQ_C, **subsetting) -> Dict[str, Any]:
    """Nistal et al.'s PKID/IKID kernel distance (C / (C + ||x - y||^2)); `subsetting`: see kernel_distance."""
    if not c > 0:
        raise ValueError(f"c={c!r}: the inverse multiquadratic kernel's constant must be > 0")
    return kernel_distance(x_ref_ND, x_gen_MD, partial(imq_kernel, c=c), **subsetting)


def kernel_distances(x_ref_ND, x_gen_MD, subsets: int = 1, subset_size: Optional[int] = None,
                     seed: int = 0) -> Dict[str, Any]:
    """Both kernels on the same (seeded, hence identical) subsets: the PKID / IKID report entry.

    {"kid_poly", "kid_poly_std", "kid_imq", "kid_imq_std", "subsets", "subset_size"}.
    """
    ref = as_float64_rows(x_ref_ND, "x_ref_ND", min_rows=2)
    gen = as_float64_rows(x_gen_MD, "x_gen_MD", min_rows=2)
    out: Dict[str, Any] = {}
    for name, fn in (("kid_poly", kid_poly), ("kid_imq", kid_imq)):
        r = fn(ref, gen, subsets=subsets, subset_size=subset_size, seed=seed)
        out[name], out[f"{name}_std"] = r["mean"], r["std"]
        out["subsets"], out["subset_size"] = r["subsets"], r["subset_size"]
    return out

"""Input checks shared by the metric modules: numpy or torch in, float64 numpy out, errors that name the argument."""
from __future__ import annotations

import numpy as np


def as_float64_rows(x, name: str, min_rows: int = 1) -> np.ndarray:
    """`x` [N, ...] (numpy array, CPU torch tensor or nested lists) as a float64 [N, D] array, trailing dims flattened.

    float64 because every metric here ends in sums of many small terms (covariances, kernel means,
    log-probabilities) where float32 rounding is visible in the reported digits.
    """
    if hasattr(x, "detach"):  # torch tensor: never keep a graph, leave the device to the caller's error
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim < 2:
        raise ValueError(f"{name}: expected an array of shape [N, D] (or [N, ...], flattened per row), got shape "
                         f"{list(a.shape)}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"{name}: expected real numbers, got dtype {a.dtype}")
    a = a.reshape(a.shape[0], -1).astype(np.float64, copy=False)
    if a.shape[0] < min_rows:
        raise ValueError(f"{name}: {a.shape[0]} rows (shape {list(a.shape)}), need at least {min_rows}")
    if a.shape[1] == 0:
        raise ValueError(f"{name}: rows are empty (shape {list(a.shape)})")
    if not np.isfinite(a).all():
        bad = int(np.argwhere(~np.isfinite(a))[0, 0])
        raise ValueError(f"{name}: non-finite values (first in row {bad}); features must be finite")
    return a


def check_same_width(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Both sets must live in the same feature space."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} has {a.shape[1]} features per row but {name_b} has {b.shape[1]}: both sets must "
                         f"come from the same feature extractor")


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}")
    return int(value)

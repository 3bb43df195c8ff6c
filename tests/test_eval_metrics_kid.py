"""PKID / IKID (mars_dist.eval.metrics.kernel_distance): torchmetrics' KID, brute-force MMD^2, subsets, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.image.kid import poly_mmd

from mars_dist.eval.metrics.kernel_distance import (
    imq_kernel,
    kernel_distance,
    kernel_distances,
    kid_imq,
    kid_poly,
    mmd2_unbiased,
    polynomial_kernel,
)


def brute_force_mmd2(x, y, k):
    """The unbiased estimator written out pair by pair (x, y: lists of rows; k: a function of two rows)."""
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2 * xy


def poly_pair(a, b, degree=3, coef0=1.0):
    return (sum(u * v for u, v in zip(a, b)) / len(a) + coef0) ** degree


def imq_pair(a, b, c=16.0):
    return c / (c + sum((u - v) ** 2 for u, v in zip(a, b)))


def test_kid_poly_equals_torchmetrics_kid_on_equal_sets():
    rng = np.random.default_rng(0)
    for d in (11, 128):
        x, y = rng.standard_normal((200, d)), 0.5 + rng.standard_normal((200, d))
        expected = float(poly_mmd(torch.from_numpy(x), torch.from_numpy(y)))  # degree 3, gamma 1/d, coef 1
        assert kid_poly(x, y)["mean"] == pytest.approx(expected, rel=1e-10)


def test_both_kernels_equal_the_pairwise_estimator_on_unequal_sets():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((9, 5)), 2.0 * rng.standard_normal((6, 5)) + 1.0
    xl, yl = x.tolist(), y.tolist()
    assert kid_poly(x, y)["mean"] == pytest.approx(brute_force_mmd2(xl, yl, poly_pair), rel=1e-10)
    assert kid_poly(x, y, degree=2, coef0=0.5)["mean"] == pytest.approx(
        brute_force_mmd2(xl, yl, lambda a, b: poly_pair(a, b, degree=2, coef0=0.5)), rel=1e-10)
    assert kid_imq(x, y)["mean"] == pytest.approx(brute_force_mmd2(xl, yl, imq_pair), rel=1e-10)
    assert kid_imq(x, y, c=2.5)["mean"] == pytest.approx(
        brute_force_mmd2(xl, yl, lambda a, b: imq_pair(a, b, c=2.5)), rel=1e-10)


def test_chunking_does_not_change_the_value():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((37, 8)), rng.standard_normal((23, 8)) + 0.3
    values = [mmd2_unbiased(x, y, imq_kernel, chunk=c) for c in (1, 3, 10, 1000)]
    assert max(values) - min(values) < 1e-14
    values = [mmd2_unbiased(x, y, polynomial_kernel, chunk=c) for c in (1, 7, 1000)]
    assert max(values) - min(values) < 1e-12


def test_nistal_code_keeps_the_diagonal_which_adds_two_over_m_minus_one():
    """docs/eval.md: their mmd() sums k(x_i, x_i) = 1 into the within-set terms; ours leaves it out."""
    rng = np.random.default_rng(3)
    m = 50
    x, y = rng.standard_normal((m, 6)), rng.standard_normal((m, 6)) + 0.2
    within = (imq_kernel(x, x).sum() + imq_kernel(y, y).sum()) / (m * (m - 1))
    with_diagonal = within - 2 * imq_kernel(x, y).sum() / m**2
    assert kid_imq(x, y)["mean"] + 2 / (m - 1) == pytest.approx(with_diagonal, rel=1e-12)


def test_distance_grows_with_the_shift_and_is_near_zero_for_one_distribution():
    rng = np.random.default_rng(4)
    x, x2 = rng.standard_normal((400, 11)), rng.standard_normal((400, 11))
    for fn in (kid_poly, kid_imq):
        same = abs(fn(x, x2)["mean"])
        small, large = fn(x, x2 + 0.5)["mean"], fn(x, x2 + 2.0)["mean"]
        assert 10 * same < small < large, (fn.__name__, same, small, large)


def test_subsets_are_seeded_draws_without_replacement():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((60, 4)), rng.standard_normal((60, 4)) + 0.5
    full = kid_imq(x, y)["mean"]
    whole = kid_imq(x, y, subsets=4, subset_size=60)  # every subset a permutation of the full sets
    assert whole["mean"] == pytest.approx(full, rel=1e-12) and whole["std"] == pytest.approx(0.0, abs=1e-12)
    a = kid_imq(x, y, subsets=5, subset_size=20, seed=7)
    assert a == kid_imq(x, y, subsets=5, subset_size=20, seed=7)
    assert a["mean"] != kid_imq(x, y, subsets=5, subset_size=20, seed=8)["mean"]
    assert a["std"] > 0 and a["subsets"] == 5 and a["subset_size"] == 20
    assert kid_imq(x, y, subsets=1, subset_size=20)["std"] is None


def test_kernel_distances_reports_both_kernels_on_the_same_subsets():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((40, 11)), rng.standard_normal((30, 11))
    both = kernel_distances(x, y, subsets=3, subset_size=25, seed=1)
    assert set(both) == {"kid_poly", "kid_poly_std", "kid_imq", "kid_imq_std", "subsets", "subset_size"}
    assert both["kid_poly"] == kid_poly(x, y, subsets=3, subset_size=25, seed=1)["mean"]
    assert both["kid_imq_std"] == kid_imq(x, y, subsets=3, subset_size=25, seed=1)["std"]


def test_kernel_distance_errors_say_what_is_expected():
    x = np.zeros((10, 3))
    with pytest.raises(ValueError, match=r"subsets=3 needs a subset_size"):
        kid_poly(x, x, subsets=3)
    with pytest.raises(ValueError, match=r"subset_size=11 exceeds the smaller set \(x_ref_ND has 10 rows, "
                                         r"x_gen_MD has 12\)"):
        kid_poly(x, np.zeros((12, 3)), subsets=2, subset_size=11)
    with pytest.raises(ValueError, match=r"subset_size=1: expected an integer >= 2"):
        kid_imq(x, x, subset_size=1)
    with pytest.raises(ValueError, match=r"x_gen_MD: 1 rows \(shape \[1, 3\]\), need at least 2"):
        kid_imq(x, np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"x_ref_ND has 3 features per row but x_gen_MD has 4"):
        kernel_distances(x, np.zeros((10, 4)))
    with pytest.raises(ValueError, match=r"c=0.0: .* must be > 0"):
        kid_imq(x, x, c=0.0)
    with pytest.raises(ValueError, match=r"chunk=0: expected an integer >= 1"):
        kernel_distance(x, x, imq_kernel, chunk=0)

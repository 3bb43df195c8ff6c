"""FAD (mars_dist.eval.metrics.frechet): torchmetrics' FID formula, analytic Gaussian distances, errors."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torchmetrics.image.fid import _compute_fid

from mars_dist.eval.metrics.frechet import fit_gaussian, frechet_distance, frechet_distance_from_stats


def random_covariance(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d


def samples_with_exact_moments(rng, n, mu_D, sigma_DD):
    """n rows whose sample mean is mu and whose (1/(n-1)) sample covariance is sigma, exactly (up to rounding)."""
    z = rng.standard_normal((n, len(mu_D)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample covariance now I
    return z @ np.linalg.cholesky(sigma_DD).T + mu_D


def test_fad_equals_torchmetrics_fid_formula_on_non_commuting_covariances():
    rng = np.random.default_rng(0)
    for d in (1, 5, 64):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = random_covariance(rng, d), random_covariance(rng, d)
        expected = float(_compute_fid(*(torch.from_numpy(v) for v in (mu1, s1, mu2, s2))))
        assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_fad_of_embedding_sets_equals_torchmetrics_on_their_statistics():
    rng = np.random.default_rng(1)
    ref, gen = rng.standard_normal((300, 16)), 0.7 * rng.standard_normal((200, 16)) @ rng.standard_normal((16, 16))
    stats = [torch.from_numpy(v) for v in (ref.mean(0), np.cov(ref, rowvar=False),
                                           gen.mean(0), np.cov(gen, rowvar=False))]
    assert frechet_distance(ref, gen) == pytest.approx(float(_compute_fid(*stats)), rel=1e-9)
    from_torch = frechet_distance(torch.from_numpy(ref).float(), gen)  # CPU tensors are accepted too
    assert from_torch == pytest.approx(frechet_distance(ref.astype(np.float32), gen), rel=1e-12)


def test_fad_of_two_gaussians_is_the_analytic_frechet_distance():
    rng = np.random.default_rng(2)
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2
    assert frechet_distance_from_stats([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9.0 + 1.0, rel=1e-12)
    # commuting (diagonal) covariances: ||dmu||^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = rng.uniform(0.1, 3.0, 32), rng.uniform(0.1, 3.0, 32)
    mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)
    closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(closed, rel=1e-10)
    # general covariances: tr(S1 + S2 - 2 (S1 S2)^1/2) with scipy's (Schur-based) sqrtm of the product
    s1, s2 = random_covariance(rng, 12), random_covariance(rng, 12)
    reference = ((mu1[:12] - mu2[:12]) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance_from_stats(mu1[:12], s1, mu2[:12], s2) == pytest.approx(reference, rel=1e-8)


def test_fad_from_samples_with_known_moments_is_the_population_distance():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.5, 2.0, 8), rng.uniform(0.5, 2.0, 8)
    mu1, mu2 = np.zeros(8), np.full(8, 0.5)
    ref = samples_with_exact_moments(rng, 500, mu1, np.diag(a))
    gen = samples_with_exact_moments(rng, 700, mu2, np.diag(b))
    closed = 8 * 0.25 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(ref, gen) == pytest.approx(closed, rel=1e-9)


def test_identical_sets_have_zero_distance_and_the_distance_is_never_negative():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((400, 128))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(x, x + 1e-3) == pytest.approx(128 * 1e-6, rel=1e-6)  # a pure mean shift
    assert frechet_distance(x, x[::-1]) >= 0.0


def test_singular_covariances_warn_but_still_match_the_formula():
    rng = np.random.default_rng(5)
    ref, gen = rng.standard_normal((10, 32)), rng.standard_normal((12, 32))
    with pytest.warns(RuntimeWarning) as caught:
        value = frechet_distance(ref, gen)
        mu1, s1 = fit_gaussian(ref)
        mu2, s2 = fit_gaussian(gen)
    messages = [str(w.message) for w in caught]
    assert messages[0].startswith("x_ref_ND: 10 samples of dimension 32: the covariance is singular (rank <= 9 < 32)")
    assert messages[1].startswith("x_gen_MD: 12 samples of dimension 32")
    reference = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert value == pytest.approx(reference, rel=1e-6)


def test_fad_input_errors_name_the_argument_and_the_expected_shape():
    x = np.zeros((5, 4))
    with pytest.raises(ValueError, match=r"x_gen_MD: 1 rows \(shape \[1, 4\]\), need at least 2"):
        frechet_distance(x, np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"x_ref_ND has 4 features per row but x_gen_MD has 3"):
        frechet_distance(x, np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"x_ref_ND: expected an array of shape \[N, D\].*got shape \[5\]"):
        frechet_distance(np.zeros(5), x)
    with pytest.raises(ValueError, match="x_gen_MD: non-finite values"):
        frechet_distance(x, np.full((5, 4), np.nan))
    with pytest.raises(ValueError, match=r"sigma2_DD has shape \[3, 3\], expected \[4, 4\]"):
        frechet_distance_from_stats(np.zeros(4), np.eye(4), np.zeros(4), np.eye(3))
    with pytest.raises(ValueError, match="sigma1_DD is not symmetric"):
        frechet_distance_from_stats(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2))

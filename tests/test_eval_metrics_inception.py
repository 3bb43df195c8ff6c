"""PIS / IIS (mars_dist.eval.metrics.inception_score): closed forms, torchmetrics, brute-force splits, errors."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.special
import torch
from torchmetrics.image.inception import InceptionScore

from mars_dist.eval.metrics.inception_score import inception_score, softmax


def brute_force_is(rows):
    """exp(mean_x sum_y p(y|x) log(p(y|x) / p(y))) with explicit loops and math.log (0 log 0 = 0)."""
    k = len(rows[0])
    marginal = [sum(r[y] for r in rows) / len(rows) for y in range(k)]
    kl = [sum(r[y] * math.log(r[y] / marginal[y]) for y in range(k) if r[y] > 0) for r in rows]
    return math.exp(sum(kl) / len(kl))


def test_uniform_predictions_score_one():
    assert inception_score(np.full((50, 11), 1 / 11))["mean"] == pytest.approx(1.0, abs=1e-12)


def test_confident_balanced_predictions_over_k_classes_score_k():
    for k in (2, 11, 128):
        one_hot = np.eye(k)[np.arange(4 * k) % k]  # exact zeros: the 0 log 0 guard is exercised
        result = inception_score(one_hot, splits=4)
        assert result["mean"] == pytest.approx(k, rel=1e-12) and result["std"] == pytest.approx(0.0, abs=1e-9)


def test_confident_predictions_on_one_class_score_one():
    assert inception_score(np.eye(5)[np.zeros(20, dtype=int)])["mean"] == pytest.approx(1.0, abs=1e-12)


def test_single_split_equals_torchmetrics_inception_score():
    rng = np.random.default_rng(0)
    probs = softmax(3.0 * rng.standard_normal((257, 128)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns that it buffers features
        metric = InceptionScore(feature=torch.nn.Identity(), splits=1)
    metric.update(torch.from_numpy(np.log(probs)))  # softmax(log p) = p: torchmetrics applies the softmax
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the std of one split is NaN there
        expected = float(metric.compute()[0])
    assert inception_score(probs)["mean"] == pytest.approx(expected, rel=1e-10)


def test_splits_are_consecutive_parts_with_population_std():
    rng = np.random.default_rng(1)
    probs = softmax(2.0 * rng.standard_normal((103, 7)))
    bounds = [0, 11, 22, 33, 43, 53, 63, 73, 83, 93, 103]  # 103 rows into 10 parts: three of 11, then 10s
    scores = [brute_force_is(probs[a:b].tolist()) for a, b in zip(bounds[:-1], bounds[1:])]
    mean = sum(scores) / 10
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / 10)
    result = inception_score(probs, splits=10)
    assert result["splits"] == 10
    assert result["mean"] == pytest.approx(mean, rel=1e-12) and result["std"] == pytest.approx(std, rel=1e-9)
    assert inception_score(probs)["mean"] == pytest.approx(brute_force_is(probs.tolist()), rel=1e-12)
    assert inception_score(probs)["std"] is None


def test_softmax_is_float64_and_overflow_safe():
    logits = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]], dtype=np.float32)
    p = softmax(logits)
    assert p.dtype == np.float64
    np.testing.assert_allclose(p, scipy.special.softmax(logits.astype(np.float64), axis=1), rtol=1e-12)
    np.testing.assert_allclose(softmax(torch.from_numpy(logits)), p)


def test_inception_score_rejects_non_probabilities_and_bad_splits():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((10, 4))
    with pytest.raises(ValueError, match=r"probs_NK: negative entries .* not logits \(use softmax\(logits_NK\)\)"):
        inception_score(logits)
    with pytest.raises(ValueError, match=r"probs_NK: row 3 sums to 2, expected 1"):
        p = np.full((10, 4), 0.25)
        p[3] *= 2
        inception_score(p)
    with pytest.raises(ValueError, match=r"splits=11 exceeds the 10 rows of probs_NK \(shape \[10, 4\]\)"):
        inception_score(softmax(logits), splits=11)
    with pytest.raises(ValueError, match=r"splits=0: expected an integer >= 1"):
        inception_score(softmax(logits), splits=0)
    with pytest.raises(ValueError, match=r"probs_NK: expected an array of shape \[N, D\]"):
        inception_score(np.full(4, 0.25))

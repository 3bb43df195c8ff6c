"""NDB/k (mars_dist.eval.metrics.ndb) and its k-means: scipy's Lloyd, brute-force bins and z-tests, closed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.cluster.vq import kmeans2
from scipy.stats import norm

from mars_dist.eval.metrics.kmeans import kmeans, kmeans_plus_plus
from mars_dist.eval.metrics.ndb import ndb_k, two_proportion_z_test


def blobs(rng, centers_KD, n, which=None):
    """n points around the given centers (unit noise), evenly over `which` centers (default: all)."""
    which = np.arange(len(centers_KD)) if which is None else np.asarray(which)
    labels = which[np.arange(n) % len(which)]
    return centers_KD[labels] + rng.standard_normal((n, centers_KD.shape[1])), labels


@pytest.fixture(scope="module")
def centers():
    return 8.0 * np.random.default_rng(100).standard_normal((10, 30))


def test_kmeans_recovers_well_separated_blobs(centers):
    rng = np.random.default_rng(0)
    x, truth = blobs(rng, centers, 1000)
    result = kmeans(x, 10, seed=0)
    assert result.converged
    # one cluster per blob: the labels are the true ones up to a renaming
    pairs = set(zip(truth.tolist(), result.labels_N.tolist()))
    assert len(pairs) == 10 and len({p[1] for p in pairs}) == 10
    assert result.inertia == pytest.approx(((x - centers[truth]) ** 2).sum(), rel=0.05)


def test_lloyd_iterations_match_scipy_kmeans2_from_the_same_seeding():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 5))
    init = kmeans_plus_plus(x, 8, np.random.default_rng(3))
    ours = kmeans(x, 8, seed=3, max_iter=300)
    theirs, labels = kmeans2(x, init.copy(), iter=300, minit="matrix")
    assert ours.converged
    np.testing.assert_allclose(ours.centers_KD, theirs, rtol=1e-10, atol=1e-12)
    assert np.array_equal(ours.labels_N, labels)


def test_a_cluster_emptied_by_lloyd_is_reseeded_so_no_bin_ends_empty():
    x = np.random.default_rng(63).standard_normal((30, 2))  # with seed 63, an update empties a cluster
    result = kmeans(x, 12, seed=63)
    assert result.converged and np.bincount(result.labels_N, minlength=12).min() >= 1


def test_kmeans_plus_plus_picks_distinct_rows_and_is_seeded():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 3))
    a = kmeans_plus_plus(x, 12, np.random.default_rng(0))
    rows = {tuple(r) for r in x.tolist()}
    assert len({tuple(r) for r in a.tolist()}) == 12 and all(tuple(r) in rows for r in a.tolist())
    np.testing.assert_array_equal(a, kmeans_plus_plus(x, 12, np.random.default_rng(0)))
    assert not np.array_equal(a, kmeans_plus_plus(x, 12, np.random.default_rng(1)))


def test_two_proportion_z_test_matches_the_textbook_formula():
    # 50/100 vs 60/100: pooled 0.55, se = sqrt(0.55 * 0.45 * 0.02) = 0.070356, z = -1.4213, p = 0.1552
    z, p = two_proportion_z_test([0.5], 100, [0.6], 100)
    assert z[0] == pytest.approx(-0.1 / math.sqrt(0.55 * 0.45 * 0.02), rel=1e-12)
    assert p[0] == pytest.approx(0.15520, abs=5e-5)
    assert p[0] == pytest.approx(2 * norm.sf(abs(z[0])), rel=1e-12)
    z, p = two_proportion_z_test([0.0, 1.0], 10, [0.0, 1.0], 30)  # no spread: no evidence
    assert z.tolist() == [0.0, 0.0] and p.tolist() == [1.0, 1.0]


def test_ndb_equals_a_brute_force_binning_and_test(centers):
    rng = np.random.default_rng(3)
    ref, _ = blobs(rng, centers, 600)
    gen, _ = blobs(rng, centers, 450, which=[0, 0, 0, 1, 2, 3, 4, 5, 6])  # blob 0 over-, 7-9 not represented
    gen = gen + 0.3 * rng.standard_normal(gen.shape)
    result = ndb_k(ref, gen, k=12, seed=5)
    centers_found = kmeans(ref, 12, seed=5).centers_KD

    def counts(rows):
        c = [0] * 12
        for r in rows:
            dists = [sum((a - b) ** 2 for a, b in zip(r, center)) for center in centers_found.tolist()]
            c[dists.index(min(dists))] += 1
        return c

    ref_counts, gen_counts = counts(ref.tolist()), counts(gen.tolist())
    order = sorted(range(12), key=lambda j: -ref_counts[j])  # stable: ties keep bin order
    different = 0
    for position, j in enumerate(order):
        p1, p2 = ref_counts[j] / 600, gen_counts[j] / 450
        pooled = (ref_counts[j] + gen_counts[j]) / 1050
        z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / 600 + 1 / 450))
        p_value = 2 * norm.sf(abs(z))
        different += p_value < 0.05
        assert result["reference_proportions"][position] == pytest.approx(p1, abs=1e-15)
        assert result["generated_proportions"][position] == pytest.approx(p2, abs=1e-15)
        assert result["p_values"][position] == pytest.approx(p_value, rel=1e-9, abs=1e-300)
        assert result["different_bins"][position] == (p_value < 0.05)
    assert result["ndb"] == different and result["ndb_k"] == different / 12
    assert different >= 4  # the three missing blobs and the over-represented one at least


def test_a_second_sample_of_the_reference_has_few_different_bins_and_collapse_has_all(centers):
    rng = np.random.default_rng(4)
    ref, _ = blobs(rng, centers, 2000)
    same, _ = blobs(rng, centers, 2000)
    result = ndb_k(ref, same, k=10)
    assert result["ndb"] <= 1 and result["ndb_k"] == result["ndb"] / 10  # false positives at rate alpha
    assert ndb_k(ref, ref, k=10)["p_values"] == [1.0] * 10
    collapsed, _ = blobs(rng, centers, 500, which=[3])
    assert ndb_k(ref, collapsed, k=10)["ndb_k"] == 1.0
    assert sum(result["reference_proportions"]) == pytest.approx(1.0)
    assert result["reference_proportions"] == sorted(result["reference_proportions"], reverse=True)


def test_ndb_is_deterministic_for_a_seed(centers):
    rng = np.random.default_rng(5)
    ref, gen = rng.standard_normal((400, 20)), rng.standard_normal((300, 20)) * 1.2
    assert ndb_k(ref, gen, k=20, seed=3) == ndb_k(ref.copy(), gen.copy(), k=20, seed=3)


def test_ndb_errors_name_the_argument():
    rng = np.random.default_rng(6)
    ref = rng.standard_normal((30, 4))
    with pytest.raises(ValueError, match=r"k=50 bins but ref_ND has only 30 rows \(shape \[30, 4\]\)"):
        ndb_k(ref, ref)
    with pytest.raises(ValueError, match=r"ref_ND has 4 features per row but gen_MD has 5"):
        ndb_k(ref, rng.standard_normal((30, 5)), k=5)
    with pytest.raises(ValueError, match=r"alpha=1.5: the significance level must lie in \(0, 1\)"):
        ndb_k(ref, ref, k=5, alpha=1.5)
    with pytest.raises(ValueError, match=r"k=0: expected an integer >= 1"):
        ndb_k(ref, ref, k=0)
    with pytest.raises(ValueError, match=r"the 30 rows hold only 3 distinct points, fewer than k=5"):
        kmeans(np.repeat(ref[:3], 10, axis=0), 5)

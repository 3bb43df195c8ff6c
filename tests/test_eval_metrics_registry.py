"""mars_dist.eval.metrics.METRICS / compute_metrics: every metric from a dict of feature arrays, JSON-ready."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mars_dist.eval.metrics import METRICS, available_metrics, compute_metrics
from mars_dist.eval.metrics.frechet import frechet_distance
from mars_dist.eval.metrics.inception_score import inception_score, softmax
from mars_dist.eval.metrics.kernel_distance import kid_imq, kid_poly
from mars_dist.eval.metrics.mel_error import nearest_mel_error
from mars_dist.eval.metrics.ndb import ndb_k


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    n, m = 60, 40
    return {
        "ndb_features_ref": rng.standard_normal((n, 24)), "ndb_features_gen": rng.standard_normal((m, 24)),
        "pitch_logits_ref": rng.standard_normal((n, 128)), "pitch_logits_gen": rng.standard_normal((m, 128)),
        "instrument_logits_ref": rng.standard_normal((n, 11)), "instrument_logits_gen": rng.standard_normal((m, 11)),
        "mel_ref": rng.random((n, 8, 5)), "mel_recon": rng.random((n, 8, 5)), "mel_gen": rng.random((m, 8, 5)),
        "embedding_ref": rng.standard_normal((4 * n, 16)), "embedding_gen": rng.standard_normal((4 * m, 16)),
    }


def test_every_metric_is_computed_and_equals_its_function(features):
    before = {k: v.copy() for k, v in features.items()}
    results = compute_metrics(features, options={"ndb_k": {"k": 6}, "pis": {"splits": 4}})
    for key, value in before.items():  # float64 inputs reach the metrics without a copy: none may write to them
        assert np.array_equal(features[key], value), key
    assert list(results) == list(METRICS)
    json.dumps(results)  # JSON-ready: floats, ints, lists, None
    assert results["ndb_k"] == ndb_k(features["ndb_features_ref"], features["ndb_features_gen"], k=6)
    assert results["pis"] == inception_score(softmax(features["pitch_logits_gen"]), splits=4)
    assert results["iis"]["mean"] == inception_score(softmax(features["instrument_logits_gen"]))["mean"]
    assert results["pkid"]["kid_poly"] == kid_poly(features["pitch_logits_ref"], features["pitch_logits_gen"])["mean"]
    assert results["ikid"]["kid_imq"] == kid_imq(features["instrument_logits_ref"],
                                                 features["instrument_logits_gen"])["mean"]
    assert results["mel_nearest"] == nearest_mel_error(features["mel_gen"], features["mel_ref"])
    assert results["mel_paired"]["notes"] == 60
    assert results["fad"] == {"fad": frechet_distance(features["embedding_ref"], features["embedding_gen"])}


def test_only_metrics_with_all_their_features_are_available(features):
    assert available_metrics(["pitch_logits_gen", "mel_ref", "mel_gen"]) == ("pis", "mel_nearest")
    subset = {k: features[k] for k in ("instrument_logits_ref", "instrument_logits_gen")}
    assert list(compute_metrics(subset)) == ["iis", "ikid"]


def test_registry_errors_name_the_metric_the_feature_or_the_option(features):
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['nbd_k'\]"):
        compute_metrics(features, names=["nbd_k"])
    with pytest.raises(ValueError, match=r"metric 'fad' needs feature array\(s\) \['embedding_gen'\]"):
        compute_metrics({"embedding_ref": features["embedding_ref"]}, names=["fad"])
    with pytest.raises(ValueError, match=r"metric 'pis' has no option\(s\) \['split'\]; its options: \['splits'\]"):
        compute_metrics(features, names=["pis"], options={"pis": {"split": 10}})
    with pytest.raises(ValueError, match=r"options given for \['fad'\], which are not being computed"):
        compute_metrics(features, names=["pis"], options={"fad": {}})

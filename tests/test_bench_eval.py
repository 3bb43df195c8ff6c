"""mars-bench-eval on tiny exports: every part runs and reports what it says it does."""
from __future__ import annotations

import json

import pytest

from mars_dist.bench.eval import PER_NOTE, STAGES, main
from tests.ar_exports import ar_export, tokenizer_export
from tests.classifier_exports import classifier_export

pytestmark = pytest.mark.filterwarnings("ignore:.*the covariance is singular:RuntimeWarning")


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_shards):
    root = tmp_path_factory.mktemp("bench_eval")
    tok = tokenizer_export(root / "tokenizer", seed=1)
    return ["--tokenizer", str(tok), "--model", str(ar_export(root / "next_scale", tok, seed=2)),
            "--classifier", str(classifier_export(root / "classifier", seed=3)), "--reference", tiny_shards["valid"],
            "--floor", tiny_shards["train"], "--notes", "6", "--batch-size", "3", "--gl-iters", "2"]


@pytest.mark.slow
@pytest.mark.distributed
def test_speed_parts_report_rates_growth_and_scaling(exports, tmp_path, capsys):
    assert main(exports + ["--sizes", "8", "16", "--worlds", "1", "2", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "bench.json").read_text())
    rates = results["extract_notes_per_s"]
    assert set(STAGES) <= set(rates) and all(v > 0 for v in rates.values())
    per_note = rates[PER_NOTE]  # measured end to end, not derived from the stages
    assert per_note < min(rates[s] for s in STAGES), "the whole costs more than any stage"
    times = results["metric_seconds"]
    assert set(times) == {"ndb_k", "pis", "iis", "pkid", "ikid", "mel_nearest", "mel_paired", "fad"}
    assert all(set(t) == {"8", "16"} and min(t.values()) > 0 for t in times.values())
    scaling = results["scaling"]
    assert set(scaling) == {"1", "2"} and scaling["1"]["extract_speedup"] == 1.0
    assert all(r["wall_s"] > r["extract_s"] > 0 for r in scaling.values())
    printed = capsys.readouterr().out
    assert "growth x16/8" in printed and "extraction speed-up" in printed


@pytest.mark.slow
def test_sanity_table_scores_a_repeated_note_as_less_diverse_than_real_notes(exports, tmp_path):
    assert main(exports + ["--sanity", "--out", str(tmp_path)]) == 0
    sanity = json.loads((tmp_path / "bench.json").read_text())["sanity"]
    cells = sanity["cells"]
    assert list(cells) == ["reference", "reconstruction", "floor", "generated", "noise (random tokens)",
                           "one repeated note"]
    # the same token maps for every note (only Griffin-Lim's random initial phase differs per batch position):
    # the classifier's predictions barely vary, so the Inception Scores sit below those of real notes
    for column in ("PIS", "IIS"):
        assert cells["one repeated note"][column] < min(cells["reference"][column], cells["floor"][column]), column
    assert "| noise (random tokens) |" in sanity["table"]

"""The tokenizer benchmark's quality run end to end on a tiny config (mars_dist.bench.tokenizer)."""
import json

import pytest

from mars_dist.bench import tokenizer as bench


@pytest.mark.slow
def test_quality_run_fits_the_schedule_to_the_budget_and_reports_every_metric(tmp_path):
    work = tmp_path / "bench"
    rc = bench.main(["--config", "configs/tokenizer/tiny.yaml", "--minutes", "0.1", "--train-notes", "6",
                     "--valid-notes", "3", "--skip-cmx", "--work", str(work), "optim.decay=cosine",
                     "tokenizer.disc.start_step=3"])
    assert rc == 0
    q = json.loads((work / "report.json").read_text())["quality"]
    timing = q["step_timing"]
    assert timing["generator_step_s"] > 0 and timing["gan_step_s"] > 0, "both phases are timed when the GAN starts in budget"
    expected = int(3 + (6.0 - 3 * timing["generator_step_s"]) / timing["gan_step_s"])
    assert q["max_steps"] == expected
    assert 0 < q["steps"] <= q["max_steps"]
    for weights in ("live", "ema"):
        r = q[weights]
        assert 0 <= r["mel_mse"] < 1 and 0 <= r["mel_mae"] < 1 and r["gl_floor_mel_mse"] < r["mel_mse"]
        assert len(r["codebook_usage_per_scale"]) == 3


def test_budget_before_the_gan_starts_counts_generator_steps_only(monkeypatch):
    calls = []

    def fake_measure(cfg, shape, data, adversarial, steps=4):
        calls.append(adversarial)
        return 0.5 if not adversarial else 2.0

    monkeypatch.setattr(bench, "measure_step_seconds", fake_measure)

    class Cfg:
        class tokenizer:
            class disc:
                start_step = 100

    assert bench.steps_in_budget(Cfg, (2, 8, 8), None, 30.0) == (60, {"generator_step_s": 0.5})
    assert calls == [False]
    steps, timing = bench.steps_in_budget(Cfg, (2, 8, 8), None, 70.0)
    assert steps == 100 + int((70.0 - 50.0) / 2.0) and timing == {"generator_step_s": 0.5, "gan_step_s": 2.0}

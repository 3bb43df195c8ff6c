"""The one lr multiplier every task uses (mars_dist.engine.schedule)."""
import math

import pytest

from mars_dist.config import load_config
from mars_dist.engine.schedule import from_config, lr_multiplier


def test_warmup_then_constant():
    f = lr_multiplier(4)
    assert [f(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_multiplier(0)(0) == 1.0


def test_cosine_decays_from_peak_to_min_ratio_at_max_steps():
    f = lr_multiplier(10, "cosine", max_steps=110, min_lr_ratio=0.1)
    assert f(9) == 1.0 and f(10) == 1.0
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5), "half-way through the decay is half-way between peak and floor"
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1), "stays at the floor past max_steps"
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:])), "monotone after warm-up"
    assert f(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(decay="linear"), "optim.decay='linear'"),
    (dict(decay="cosine", max_steps=10), r"train.max_steps \(10\) > optim.warmup_steps \(10\)"),
    (dict(min_lr_ratio=1.5), "optim.min_lr_ratio=1.5"),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lr_multiplier(10, **kwargs)


def test_from_config_reads_optim_and_train(tmp_path):
    cfg = load_config(None, ["task=tokenizer", "optim.warmup_steps=2", "optim.decay=cosine", "optim.min_lr_ratio=0.0",
                             "train.max_steps=12"])
    f = from_config(cfg)
    assert f(0) == 0.5 and f(2) == 1.0 and f(12) == pytest.approx(0.0)

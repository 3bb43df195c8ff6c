"""The next-scale AR transformer: masking, KV-cache equivalence, guidance, conditioning, sampling."""
from __future__ import annotations

import pytest
import torch

from mars_dist.labels import CONDITION_CLASSES, velocity_level
from mars_dist.models.generators.conditioning import ConditionEmbedding
from mars_dist.models.generators.family import family
from mars_dist.models.generators.next_scale.config import NextScaleConfig
from mars_dist.models.generators.next_scale.model import NextScaleAR, block_causal_mask
from mars_dist.models.generators.sampling import filter_logits, guidance_schedule, guided_logits, sample_logits
from mars_dist.models.tokenizer.quantizer import MultiScaleQuantizer

SCALES = [(1, 1), (1, 2), (2, 3), (3, 4)]  # rectangular on purpose
V, CVAE = 32, 8


def _randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere: the zero-initialised gates would otherwise hide the condition."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


@pytest.fixture(scope="module")
def quantizer() -> MultiScaleQuantizer:
    torch.manual_seed(0)
    return MultiScaleQuantizer(V, CVAE, SCALES, phi_shared=2).eval()


def tiny(**overrides) -> NextScaleConfig:
    return family("next_scale").preset("tiny", **overrides)


def _model(seed: int = 0, **overrides) -> NextScaleAR:
    torch.manual_seed(seed)
    model = NextScaleAR(tiny(**overrides), SCALES, V, CVAE)
    _randomize(model, seed)
    return model.eval()


def _random_pyramid(batch: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (batch, h, w), generator=gen) for h, w in SCALES]


LABELS = {
    "pitch": torch.tensor([60, 72, 40]),
    "instrument_family": torch.tensor([0, 3, 10]),
    "instrument_source": torch.tensor([2, 0, 1]),
    "velocity": torch.tensor([127, 25, 90]),
}


def test_mask_is_exactly_block_causal():
    mask = block_causal_mask(SCALES)
    level = [k for k, (h, w) in enumerate(SCALES) for _ in range(h * w)]
    expected = torch.tensor([[level[j] <= level[i] for j in range(len(level))] for i in range(len(level))])
    assert mask.dtype == torch.bool and torch.equal(mask, expected)


def test_forward_never_lets_a_scale_see_a_finer_one(quantizer):
    """Changing scale k's inputs changes the logits of scales >= k only."""
    model = _model()
    x_BLC = quantizer.teacher_forcing_inputs(_random_pyramid(2))
    labels = {k: v[:2] for k, v in LABELS.items()}
    base = model(labels, x_BLC)
    starts, lengths = model.scale_starts, model.scale_lengths
    for k in range(1, len(SCALES)):
        x2 = x_BLC.clone()
        lo = starts[k] - lengths[0]  # x_BLC holds scales[1:]
        x2[:, lo:lo + lengths[k]] += 1.0
        out = model(labels, x2)
        assert torch.equal(out[:, :starts[k]], base[:, :starts[k]]), f"scales < {k} saw scale {k}"
        assert not torch.allclose(out[:, starts[k]:], base[:, starts[k]:]), f"scale {k} ignored its own input"


def test_training_logits_equal_kv_cached_inference_logits(quantizer):
    model = _model()
    idx_list = _random_pyramid(3)
    x_BLC = quantizer.teacher_forcing_inputs(idx_list)
    with torch.no_grad():
        full_BLV = model(LABELS, x_BLC)
        c = model.condition(model.cond(LABELS, 3))
        cache = model.new_cache()
        fhat, x_BlC, stepped = None, None, []
        for si, idx_Bhw in enumerate(idx_list):
            stepped.append(model.step(si, c, x_BlC, cache))
            fhat, nxt = quantizer.next_scale_input(si, fhat, idx_Bhw)
            x_BlC = None if nxt is None else nxt.flatten(2).transpose(1, 2)
    assert cache[0].k_BHlc.shape[2] == model.num_tokens
    torch.testing.assert_close(torch.cat(stepped, dim=1), full_BLV, rtol=1e-4, atol=1e-4)


def test_guidance_formula_endpoints():
    cond, uncond = torch.randn(2, 5, V), torch.randn(2, 5, V)
    assert torch.equal(guided_logits(cond, uncond, 0.0), uncond)
    assert torch.equal(guided_logits(cond, uncond, 1.0), cond)
    torch.testing.assert_close(guided_logits(cond, uncond, 3.0), uncond + 3 * (cond - uncond))


def test_guidance_ramp_is_linear_from_one_to_cfg():
    assert guidance_schedule(4.0, 4) == [1.0, 2.0, 3.0, 4.0]
    assert guidance_schedule(1.0, 9) == [1.0] * 9


def test_generate_with_t0_is_unconditional_and_t1_is_conditional(quantizer):
    model = _model()
    K = len(SCALES)
    greedy = dict(batch=3, temperature=0.0)
    uncond = model.generate(quantizer, {}, **greedy)
    cond = model.generate(quantizer, LABELS, **greedy)
    at_t0 = model.generate(quantizer, LABELS, cfg_schedule=[0.0] * K, **greedy)
    at_t1 = model.generate(quantizer, LABELS, cfg_schedule=[1.0] * K, **greedy)
    at_t3 = model.generate(quantizer, LABELS, cfg_scale=3.0, **greedy)
    assert any(not torch.equal(a, b) for a, b in zip(uncond, cond)), "labels had no effect: test is vacuous"
    assert all(torch.equal(a, b) for a, b in zip(at_t0, uncond))
    assert all(torch.equal(a, b) for a, b in zip(at_t1, cond))
    assert any(not torch.equal(a, b) for a, b in zip(at_t3, cond)), "guidance 3 changed nothing"


def test_label_dropout_yields_the_null_embedding():
    torch.manual_seed(0)
    emb = ConditionEmbedding(16, cond_drop_prob=1.0, label_drop_prob=0.0, init_std=0.1).train()
    torch.testing.assert_close(emb(LABELS, 3), emb.null(3))
    emb.cond_drop_prob, emb.label_drop_prob = 0.0, 1.0
    torch.testing.assert_close(emb(LABELS, 3), emb.null(3))
    emb.label_drop_prob = 0.0
    assert not torch.allclose(emb(LABELS, 3), emb.null(3))
    # A missing label and an explicit -1 both mean null; eval mode never drops.
    emb.cond_drop_prob = 1.0
    emb.eval()
    only_pitch = {"pitch": LABELS["pitch"]}
    with_nulls = {"pitch": LABELS["pitch"], "velocity": torch.full((3,), -1)}
    torch.testing.assert_close(emb(only_pitch, 3), emb(with_nulls, 3))
    null_rows = {name: torch.full((3,), n) for name, n in CONDITION_CLASSES.items()}
    torch.testing.assert_close(emb.null(3), emb.embed(null_rows))


def test_label_dropout_rate_is_what_config_says():
    emb = ConditionEmbedding(4, cond_drop_prob=0.1, label_drop_prob=0.2, init_std=0.1)
    rows = emb.class_indices({"pitch": torch.zeros(20000, dtype=torch.long)}, 20000, torch.device("cpu"))
    dropped = emb.drop(rows, torch.Generator().manual_seed(0))["pitch"] == CONDITION_CLASSES["pitch"]
    # P(null) = 1 - (1 - 0.1) * (1 - 0.2) = 0.28
    assert abs(dropped.float().mean().item() - 0.28) < 0.015


def test_velocity_maps_to_nearest_nsynth_level():
    raw = torch.tensor([25, 50, 75, 100, 127, 0, 37, 38, 88, 120, -1])
    assert velocity_level(raw).tolist() == [0, 1, 2, 3, 4, 0, 0, 1, 3, 4, -1]


@pytest.mark.parametrize("labels,message", [
    ({"pitch": torch.tensor([128, 0, 0])}, "label 'pitch' has value 128"),
    ({"instrument_family": torch.tensor([11, 0, 0])}, "label 'instrument_family' has value 11"),
    ({"colour": torch.tensor([1, 1, 1])}, "unknown label 'colour'"),
    ({"pitch": torch.tensor([60, 61])}, "expected (3,)"),
])
def test_bad_labels_are_named(labels, message):
    emb = ConditionEmbedding(4, 0.0, 0.0, 0.1)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        emb(labels, 3)


def test_sampling_is_deterministic_for_a_seed_and_has_the_tokenizer_shapes(quantizer):
    model = _model()
    kwargs = dict(batch=3, cfg_scale=2.0, top_k=10, top_p=0.9, temperature=1.0)
    a = model.generate(quantizer, LABELS, generator=torch.Generator().manual_seed(7), **kwargs)
    b = model.generate(quantizer, LABELS, generator=torch.Generator().manual_seed(7), **kwargs)
    c = model.generate(quantizer, LABELS, generator=torch.Generator().manual_seed(8), **kwargs)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert any(not torch.equal(x, y) for x, y in zip(a, c))
    assert [tuple(t.shape) for t in a] == [(3, h, w) for h, w in SCALES]
    assert all(t.dtype == torch.long and 0 <= int(t.min()) and int(t.max()) < V for t in a)
    assert quantizer.decode(a).shape == (3, CVAE, *SCALES[-1])


def test_any_subset_of_labels_generates(quantizer):
    model = _model()
    for labels in ({}, {"pitch": torch.tensor([60])}, {"instrument_family": torch.tensor([2]), "velocity": torch.tensor([-1])}):
        out = model.generate(quantizer, labels, batch=1, cfg_scale=3.0, generator=torch.Generator().manual_seed(0))
        assert [tuple(t.shape) for t in out] == [(1, h, w) for h, w in SCALES]


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[[True, True, False, False]]]
    # The nucleus is the smallest prefix reaching p: 0.5 + 0.3 >= 0.7.
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [[[True, True, False, False]]]
    assert torch.isfinite(filter_logits(logits, top_p=0.4)).tolist() == [[[True, False, False, False]]]
    assert torch.isfinite(filter_logits(logits)).all()
    gen = torch.Generator().manual_seed(0)
    draws = sample_logits(logits.expand(1, 2000, 4), top_p=0.7, generator=gen)
    assert set(draws.unique().tolist()) == {0, 1}
    assert sample_logits(logits, temperature=0.0).item() == 0


def test_wrong_teacher_forcing_shape_is_an_error():
    model = _model()
    with pytest.raises(ValueError, match="teacher-forcing input has shape"):
        model({}, torch.zeros(2, 5, CVAE))


def test_gradients_reach_every_parameter(quantizer):
    torch.manual_seed(0)
    model = NextScaleAR(tiny(cond_drop_prob=0.0, label_drop_prob=0.0), SCALES, V, CVAE).train()
    idx_list = _random_pyramid(2)
    logits = model({k: v[:2] for k, v in LABELS.items()}, quantizer.teacher_forcing_inputs(idx_list))
    target = torch.cat([i.flatten(1) for i in idx_list], dim=1)
    torch.nn.functional.cross_entropy(logits.transpose(1, 2), target).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters outside the graph: {missing}"


@pytest.mark.parametrize("name", ["tiny", "small", "d12", "d16", "d20", "d24"])
def test_preset_yaml_matches_the_python_preset(name):
    from pathlib import Path

    from mars_dist.config import load_config
    from mars_dist.models.generators.presets import TRUNK_PRESETS

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "next_scale" / f"{name}.yaml")
    assert cfg.task == "next_scale"
    assert {k: getattr(cfg.next_scale, k) for k in ("depth", "width", "heads")} == TRUNK_PRESETS[name]


def test_flop_count_uses_the_mask_pairs():
    model = _model()
    assert model.attention_pairs() == int(model.attn_mask_LL.sum())

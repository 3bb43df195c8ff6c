"""MaskGIT over the token pyramid: the cosine training masks, bidirectional attention, the decoding
schedule (how many tokens stay masked after each iteration), editing and guidance."""
from __future__ import annotations

import math

import pytest
import torch

from mars_dist.models.generators.family import family
from mars_dist.models.generators.maskgit.model import MaskGIT
from mars_dist.models.generators.next_scale.model import NextScaleAR
from mars_dist.models.generators.trunk import code_vectors
from mars_dist.models.tokenizer.quantizer import MultiScaleQuantizer

SCALES = [(1, 1), (2, 2), (3, 4), (4, 6)]  # L = 1 + 4 + 12 + 24 = 41
V, CVAE = 32, 8
LABELS = {"pitch": torch.tensor([60, 72, 40]), "instrument_family": torch.tensor([0, 3, 10])}


@pytest.fixture(scope="module")
def quantizer() -> MultiScaleQuantizer:
    torch.manual_seed(0)
    return MultiScaleQuantizer(V, CVAE, SCALES, phi_shared=2).eval()


def _model(seed: int = 0, **overrides) -> MaskGIT:
    torch.manual_seed(seed)
    model = MaskGIT(family("maskgit").preset("tiny", **overrides), SCALES, V, CVAE)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


class MaskRecorder:
    """Wraps a model's _logits to record the mask of every decoding pass (first half of a CFG batch)."""

    def __init__(self, model: MaskGIT, batch: int):
        self.masks, inner = [], model._logits

        def recording(c, x_BLC, masked_BL):
            self.masks.append(masked_BL[:batch].clone())
            return inner(c, x_BLC, masked_BL)

        model._logits = recording


def test_training_masks_follow_the_cosine_schedule():
    model = _model()
    torch.manual_seed(1)
    masked = model.training_mask(20000, torch.device("cpu"))
    L = model.num_tokens
    counts = masked.sum(1).float()
    assert counts.min() >= 1 and counts.max() <= L
    # E[ceil(cos(pi u / 2) L)] ~ (2 / pi) L + 1/2; the arccos density puts more mass near "all masked"
    assert abs(counts.mean().item() - (2 / math.pi * L + 0.5)) < 0.3
    assert (counts > L / 2).float().mean().item() == pytest.approx(2 / 3, abs=0.02)  # P(cos(pi u/2) > 1/2) = 2/3
    # uniform positions: every position masked about equally often
    per_position = masked.float().mean(0)
    assert (per_position - per_position.mean()).abs().max() < 0.03


def test_every_position_sees_every_unmasked_token_and_no_masked_one(quantizer):
    model = _model()
    gen = torch.Generator().manual_seed(2)
    idx_BL = torch.randint(0, V, (2, model.num_tokens), generator=gen)
    masked_BL = torch.zeros(2, model.num_tokens, dtype=torch.bool)
    masked_BL[:, ::3] = True
    x_BLC = code_vectors(quantizer.codebook, idx_BL)
    labels = {k: v[:2] for k, v in LABELS.items()}
    base = model(labels, x_BLC, masked_BL)
    hidden = x_BLC.clone()
    hidden[masked_BL] = 7.0
    assert torch.equal(model(labels, hidden, masked_BL), base), "a masked position's token leaked into the logits"
    moved = x_BLC.clone()
    moved[:, -1] = -moved[:, -1]  # the last position is unmasked: a bidirectional model lets every position see it
    out = model(labels, moved, masked_BL)
    assert not torch.isclose(out, base).all(dim=-1).any(), "some position did not see the last token"


@pytest.mark.parametrize("iterations", [1, 4, 16])
def test_decoding_unmasks_on_the_cosine_schedule_in_the_given_number_of_passes(quantizer, iterations):
    model = _model()
    recorder = MaskRecorder(model, 3)
    out = model.generate(quantizer, LABELS, 3, cfg_scale=2.0, top_p=0.9, iterations=iterations,
                         generator=torch.Generator().manual_seed(0))
    L = model.num_tokens
    assert len(recorder.masks) == iterations == model.sequential_steps(iterations)
    still_masked = [int(m[0].sum()) for m in recorder.masks]
    expected = [L]
    for t in range(iterations - 1):
        expected.append(min(math.floor(L * math.cos(math.pi / 2 * (t + 1) / iterations)), expected[-1] - 1))
    assert still_masked == expected
    assert [tuple(m.shape) for m in out] == [(3, h, w) for h, w in SCALES]
    for before, after in zip(recorder.masks, recorder.masks[1:]):
        assert not (after & ~before).any(), "a token fixed in an earlier pass was masked again"


def test_editing_keeps_the_given_tokens_and_decodes_only_the_rest(quantizer):
    model = _model()
    gen = torch.Generator().manual_seed(3)
    known = [torch.randint(0, V, (3, h, w), generator=gen) for h, w in SCALES]
    keep = [torch.rand(3, h, w, generator=gen) < 0.6 for h, w in SCALES]
    recorder = MaskRecorder(model, 3)
    out = model.generate(quantizer, LABELS, 3, cfg_scale=2.0, known=known, keep=keep, generator=gen)
    assert all(torch.equal(o[k], n[k]) for o, n, k in zip(out, known, keep))
    keep_BL = model.layout.flatten(keep)
    assert torch.equal(recorder.masks[0], ~keep_BL), "the first pass masks exactly the tokens to regenerate"
    assert all(not (m & keep_BL).any() for m in recorder.masks)
    assert any(not torch.equal(o[~k], n[~k]) for o, n, k in zip(out, known, keep)), "nothing regenerated"


def test_guidance_endpoints_and_seeded_sampling(quantizer):
    model = _model()
    greedy = dict(batch=3, temperature=0.0, gumbel_temperature=0.0, iterations=4)
    uncond = model.generate(quantizer, {}, **greedy)
    cond = model.generate(quantizer, LABELS, **greedy)
    assert any(not torch.equal(a, b) for a, b in zip(uncond, cond)), "labels had no effect: test is vacuous"
    assert all(torch.equal(a, b) for a, b in zip(model.generate(quantizer, LABELS, cfg_schedule=[0.0] * 4, **greedy), uncond))
    assert all(torch.equal(a, b) for a, b in zip(model.generate(quantizer, LABELS, cfg_schedule=[1.0] * 4, **greedy), cond))
    kwargs = dict(batch=3, cfg_scale=2.0, top_k=10, top_p=0.9)
    a = model.generate(quantizer, LABELS, generator=torch.Generator().manual_seed(7), **kwargs)
    b = model.generate(quantizer, LABELS, generator=torch.Generator().manual_seed(7), **kwargs)
    c = model.generate(quantizer, LABELS, generator=torch.Generator().manual_seed(8), **kwargs)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and any(not torch.equal(x, y) for x, y in zip(a, c))


def test_same_preset_same_parameter_count_as_the_next_scale_ar_and_bad_settings():
    ns = NextScaleAR(family("next_scale").preset("small"), SCALES, V, CVAE)
    mg = MaskGIT(family("maskgit").preset("small"), SCALES, V, CVAE)
    assert sum(p.numel() for p in mg.parameters()) == sum(p.numel() for p in ns.parameters())
    assert mg.sequential_steps() == 16 and mg.flops_per_sample(training=False) == 16 * mg.forward_flops(41, 41 * 41)
    with pytest.raises(ValueError, match="maskgit.iterations=0"):
        MaskGIT(family("maskgit").preset("tiny", iterations=0), SCALES, V, CVAE)
    with pytest.raises(ValueError, match="maskgit.width=64 is not divisible by maskgit.heads=3"):
        MaskGIT(family("maskgit").preset("tiny", heads=3), SCALES, V, CVAE)

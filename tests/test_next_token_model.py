"""The next-token AR over the token pyramid: causality, KV-cached sampling = training logits, guidance,
editing by teacher forcing, and the parameter count matched to the next-scale AR."""
from __future__ import annotations

import pytest
import torch

from mars_dist.models.generators.family import family
from mars_dist.models.generators.next_scale.model import NextScaleAR
from mars_dist.models.generators.next_token.model import NextTokenAR
from mars_dist.models.generators.trunk import code_vectors
from mars_dist.models.tokenizer.quantizer import MultiScaleQuantizer

SCALES = [(1, 1), (1, 2), (2, 3), (3, 4)]
V, CVAE = 32, 8
LABELS = {"pitch": torch.tensor([60, 72, 40]), "instrument_family": torch.tensor([0, 3, 10])}


@pytest.fixture(scope="module")
def quantizer() -> MultiScaleQuantizer:
    torch.manual_seed(0)
    return MultiScaleQuantizer(V, CVAE, SCALES, phi_shared=2).eval()


def _model(order: str = "time", seed: int = 0) -> NextTokenAR:
    torch.manual_seed(seed)
    model = NextTokenAR(family("next_token").preset("tiny", order=order), SCALES, V, CVAE)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random weights everywhere: the zero-initialised gates would hide the inputs
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def _tokens(batch: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (batch, sum(h * w for h, w in SCALES)), generator=gen)


def test_position_i_sees_only_tokens_before_it(quantizer):
    model = _model()
    idx_BL = _tokens(2)
    labels = {k: v[:2] for k, v in LABELS.items()}
    x_BLC = code_vectors(quantizer.codebook, idx_BL)
    base = model(labels, x_BLC)
    for j in (0, 5, model.num_tokens - 2):
        changed = x_BLC.clone()
        changed[:, j] = -changed[:, j]
        out = model(labels, changed)
        assert torch.equal(out[:, :j + 1], base[:, :j + 1]), f"positions <= {j} saw token {j}"
        assert not torch.allclose(out[:, j + 1], base[:, j + 1]), f"position {j + 1} ignored token {j}"
    last = x_BLC.clone()
    last[:, -1] += 1.0
    assert torch.equal(model(labels, last), base), "the last token is never an input"


@pytest.mark.parametrize("order", ["time", "frequency"])
def test_greedy_sampling_with_the_kv_cache_reproduces_the_training_logits(quantizer, order):
    """Greedy tokens fed back through the (causal, whole-sequence) training forward are its argmax
    at every position, and the cached step logits equal the training logits."""
    model = _model(order)
    maps = model.generate(quantizer, LABELS, 3, temperature=0.0)
    assert [tuple(m.shape) for m in maps] == [(3, h, w) for h, w in SCALES]
    idx_BL = model.layout.flatten(maps)
    with torch.no_grad():
        full_BLV = model(LABELS, code_vectors(quantizer.codebook, idx_BL))
        c = model.condition(model.cond(LABELS, 3))
        cache = model.new_cache()
        stepped = [model.step(0, c, None, cache)]
        for i in range(1, model.num_tokens):
            stepped.append(model.step(i, c, code_vectors(quantizer.codebook, idx_BL[:, i - 1:i]), cache))
    assert torch.equal(full_BLV.argmax(-1), idx_BL)
    torch.testing.assert_close(torch.cat(stepped, dim=1), full_BLV, rtol=1e-4, atol=1e-4)


def test_guidance_endpoints_and_seeded_sampling(quantizer):
    model = _model()
    K = len(SCALES)
    greedy = dict(batch=3, temperature=0.0)
    uncond = model.generate(quantizer, {}, **greedy)
    cond = model.generate(quantizer, LABELS, **greedy)
    assert any(not torch.equal(a, b) for a, b in zip(uncond, cond)), "labels had no effect: test is vacuous"
    assert all(torch.equal(a, b) for a, b in zip(model.generate(quantizer, LABELS, cfg_schedule=[0.0] * K, **greedy), uncond))
    assert all(torch.equal(a, b) for a, b in zip(model.generate(quantizer, LABELS, cfg_schedule=[1.0] * K, **greedy), cond))
    kwargs = dict(batch=3, cfg_scale=2.0, top_k=10, top_p=0.9)
    a = model.generate(quantizer, LABELS, generator=torch.Generator().manual_seed(7), **kwargs)
    b = model.generate(quantizer, LABELS, generator=torch.Generator().manual_seed(7), **kwargs)
    c = model.generate(quantizer, LABELS, generator=torch.Generator().manual_seed(8), **kwargs)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and any(not torch.equal(x, y) for x, y in zip(a, c))


def test_editing_teacher_forces_the_kept_tokens(quantizer):
    model = _model()
    known = [torch.randint(0, V, (3, h, w), generator=torch.Generator().manual_seed(3)) for h, w in SCALES]
    keep = [torch.rand(3, h, w, generator=torch.Generator().manual_seed(4)) < 0.5 for h, w in SCALES]
    out = model.generate(quantizer, LABELS, 3, temperature=0.0, known=known, keep=keep)
    assert all(torch.equal(o[k], n[k]) for o, n, k in zip(out, known, keep))
    # a regenerated token is the greedy choice given the kept ones before it: the training forward agrees
    idx_BL, keep_BL = model.layout.flatten(out), model.layout.flatten(keep)
    with torch.no_grad():
        argmax_BL = model(LABELS, code_vectors(quantizer.codebook, idx_BL)).argmax(-1)
    assert torch.equal(argmax_BL[~keep_BL], idx_BL[~keep_BL])
    assert not torch.equal(argmax_BL[keep_BL], idx_BL[keep_BL]), "nothing was forced: test is vacuous"


def test_same_preset_same_parameter_count_as_the_next_scale_ar():
    for name in ("tiny", "small"):
        ns = NextScaleAR(family("next_scale").preset(name), SCALES, V, CVAE)
        nt = NextTokenAR(family("next_token").preset(name), SCALES, V, CVAE)
        assert sum(p.numel() for p in nt.parameters()) == sum(p.numel() for p in ns.parameters())


def test_accounting_and_bad_inputs():
    model = _model()
    L = model.num_tokens
    assert model.sequential_steps() == L and model.attention_pairs() == L * (L + 1) // 2
    assert model.flops_per_sample(training=True) == 3 * model.flops_per_sample(training=False)
    with pytest.raises(ValueError, match=r"token vectors have shape \(2, 5, 8\)"):
        model({}, torch.zeros(2, 5, CVAE))
    with pytest.raises(ValueError, match="next_token.order='zigzag'"):
        NextTokenAR(family("next_token").preset("tiny", order="zigzag"), SCALES, V, CVAE)

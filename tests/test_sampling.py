"""The sort-free sampler draws from exactly the distribution of sort-cut-renormalise top-k / top-p."""
from __future__ import annotations

import math

import pytest
import torch

from mars_dist.models.generators import sampling
from mars_dist.models.generators.sampling import draw_tokens, filter_logits, sample_logits

DRAWS = 200_000


def _frequencies(logits_V: torch.Tensor, draws: int = DRAWS, **kwargs) -> torch.Tensor:
    idx = sample_logits(logits_V.expand(1, draws, -1), generator=torch.Generator().manual_seed(0), **kwargs)
    return torch.bincount(idx.flatten(), minlength=logits_V.shape[-1]).double() / draws


def _assert_matches(freq: torch.Tensor, probs: torch.Tensor, draws: int = DRAWS) -> None:
    sigma = (probs * (1 - probs) / draws).sqrt().clamp_min(1e-9)
    z = ((freq - probs).abs() / sigma).max().item()
    assert z < 5, f"empirical frequencies {freq.tolist()} vs {probs.tolist()} (max z {z:.1f})"
    assert (freq[probs == 0] == 0).all(), "drew a token outside the nucleus"


def _nucleus(logits_V: torch.Tensor, top_p: float) -> torch.Tensor:
    """Reference: token j is in the nucleus iff the mass of strictly more likely tokens is < top_p."""
    p = logits_V.double().softmax(-1)
    above = torch.stack([p[p > pj].sum() for pj in p])
    kept = torch.where(above < top_p, p, torch.zeros_like(p))
    return kept / kept.sum()


LOGITS = torch.log(torch.tensor([0.4, 0.2, 0.2, 0.1, 0.06, 0.04]))  # a tie (0.2, 0.2) inside the nucleus


@pytest.mark.parametrize("top_p", [0.0, 0.5, 0.7, 0.85, 0.95])
def test_top_p_draws_follow_the_renormalised_nucleus(top_p):
    expected = _nucleus(LOGITS, top_p) if top_p else LOGITS.double().softmax(-1)
    _assert_matches(_frequencies(LOGITS, top_p=top_p), expected)


def test_the_sort_based_cut_agrees_away_from_ties_and_top_k_combines():
    distinct = torch.log(torch.tensor([0.35, 0.25, 0.2, 0.1, 0.06, 0.04]))
    for top_p in (0.5, 0.7, 0.9):
        by_sort = filter_logits(distinct, top_p=top_p).softmax(-1).double()
        torch.testing.assert_close(by_sort, _nucleus(distinct, top_p))
    expected = filter_logits(distinct, top_k=4).double().softmax(-1)
    expected = _nucleus(torch.where(torch.isfinite(expected.log()), distinct, float("-inf")), 0.8)
    _assert_matches(_frequencies(distinct, top_k=4, top_p=0.8), expected)


def test_temperature_and_the_low_acceptance_fallback():
    flat = torch.randn(100, generator=torch.Generator().manual_seed(1)) * 0.05
    # top-p 0.04 over a near-flat distribution accepts ~4% of draws: most positions take the sort-based cut
    freq = _frequencies(flat, draws=20_000, top_p=0.04)
    nucleus = _nucleus(flat, 0.04)
    assert set(freq.nonzero().flatten().tolist()) <= set(nucleus.nonzero().flatten().tolist())
    _assert_matches(freq, nucleus, draws=20_000)
    _assert_matches(_frequencies(LOGITS, temperature=2.0), (LOGITS.double() / 2).softmax(-1))


def test_draws_are_seeded_and_log_probs_are_the_models():
    logits = torch.randn(2, 50, 30, generator=torch.Generator().manual_seed(2))
    a, logp = draw_tokens(logits, top_k=10, top_p=0.9, temperature=0.8, generator=torch.Generator().manual_seed(3))
    b, _ = draw_tokens(logits, top_k=10, top_p=0.9, temperature=0.8, generator=torch.Generator().manual_seed(3))
    c, _ = draw_tokens(logits, top_k=10, top_p=0.9, temperature=0.8, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    expected = filter_logits(logits / 0.8, top_k=10).log_softmax(-1).gather(-1, a.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logp, expected)
    greedy, logp0 = draw_tokens(logits, temperature=0.0)
    assert torch.equal(greedy, logits.argmax(-1))
    torch.testing.assert_close(logp0, logits.log_softmax(-1).amax(-1))
    assert sampling.REJECTION_ROUNDS * math.log(0.05) < math.log(1e-7), "rounds too few for top-p 0.95"

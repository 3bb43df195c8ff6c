"""Turning AR logits into token indices: classifier-free guidance, temperature, top-k, top-p.

Guidance is written as logits = uncond + t * (cond - uncond): t = 0 is the unconditional model,
t = 1 the conditional one, t > 1 extrapolates away from the unconditional prediction.

Drawing (`draw_tokens`) needs no sort of the vocabulary: a token is drawn from the softmax by
inverse CDF (one uniform number per position) and, under top-p, accepted when the probability
mass of the strictly more likely tokens is below p, i.e. when it lies in the nucleus; otherwise it
is drawn again. Rejection sampling from p restricted to the nucleus gives exactly p / mass(nucleus)
on it: the distribution of sorting, cutting and renormalising, at the cost of a few passes over
the logits instead of a sort and a draw per vocabulary entry (at 16,384 codes the two were ~30% of
the next-scale AR's sampling time on a CPU). Ties at the nucleus boundary are kept whole (a sort
would keep some of them in its arbitrary order). `filter_logits` is the sort-based cut, used where
the acceptance rate is low (a small top-p over a flat distribution) and for inspection.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch


def guidance_schedule(cfg_scale: float, num_scales: int) -> List[float]:
    """Per-scale guidance t_k = 1 + (cfg_scale - 1) * k / (K - 1): linear from 1 to cfg_scale.

    The coarsest scale is sampled purely conditionally (t = 1) and guidance grows towards the
    finest. Starting at t = 0 instead (t_k = cfg * k / (K - 1)) would sample the first scale, which
    fixes the note's overall energy layout and so most of its pitch, from the unconditional model.
    VAR's own ramp, (1 + r) * cond - r * uncond with r = cfg * k / (K - 1), is this one with
    cfg_scale = 1 + cfg. cfg_scale = 1 means no guidance (and skips the unconditional pass).
    """
    if num_scales == 1:
        return [float(cfg_scale)]
    return [1.0 + (cfg_scale - 1.0) * k / (num_scales - 1) for k in range(num_scales)]


def guided_logits(cond_BlV: torch.Tensor, uncond_BlV: torch.Tensor, t: float) -> torch.Tensor:
    """uncond + t * (cond - uncond), as a lerp so that t = 0 and t = 1 give the branches bit for bit."""
    return torch.lerp(uncond_BlV, cond_BlV, t)


def filter_logits(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Sets logits outside the top-k and outside the top-p nucleus to -inf (0 disables either).

    The most likely token always survives, so a row never ends up all -inf.
    """
    if top_k < 0 or not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_k={top_k}, top_p={top_p}: expected top_k >= 0 and top_p in [0, 1]")
    V = logits_BlV.shape[-1]
    if 0 < top_k < V:
        kth = logits_BlV.topk(top_k, dim=-1).values[..., -1:]
        logits_BlV = logits_BlV.masked_fill(logits_BlV < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, order = logits_BlV.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens ranked above it already cover top_p.
        drop_sorted = (cum - sorted_logits.softmax(dim=-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits_BlV = logits_BlV.masked_fill(drop, float("-inf"))
    return logits_BlV


def sample_logits(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0, temperature: float = 1.0,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Draws one index per position -> idx_Bl. temperature 0 is greedy (argmax)."""
    return draw_tokens(logits_BlV, top_k, top_p, temperature, generator)[0]


# Rejection rounds before the remaining positions take the sort-based cut: each round accepts with
# probability mass(nucleus) >= top_p, so at top_p 0.95 a position is left after 6 rounds w.p. ~1e-8.
REJECTION_ROUNDS = 6


def draw_tokens(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0, temperature: float = 1.0,
                generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(idx_Bl, log-prob of each drawn index): temperature, then top-k, then the top-p nucleus (see
    the module docstring). The log-prob is under the tempered, top-k-filtered softmax before the
    nucleus cut (the model's own belief in the token; MaskGIT ranks its drawn tokens by it).
    temperature 0 is greedy."""
    if temperature < 0:
        raise ValueError(f"temperature={temperature}: expected >= 0")
    if top_k < 0 or not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_k={top_k}, top_p={top_p}: expected top_k >= 0 and top_p in [0, 1]")
    B, l, V = logits_BlV.shape
    if temperature == 0:
        idx_Bl = logits_BlV.argmax(dim=-1)
        logp_Bl = logits_BlV.float().log_softmax(dim=-1).gather(-1, idx_Bl.unsqueeze(-1)).squeeze(-1)
        return idx_Bl, logp_Bl
    logits_NV = logits_BlV.float().reshape(B * l, V)
    logits_NV = filter_logits(logits_NV if temperature == 1.0 else logits_NV / temperature, top_k)
    probs_NV = logits_NV.softmax(dim=-1)
    cdf_NV = probs_NV.cumsum(dim=-1)
    idx_N = _inverse_cdf(cdf_NV, torch.rand(B * l, 1, device=cdf_NV.device, generator=generator))
    if 0.0 < top_p < 1.0:
        pending_n = torch.arange(B * l, device=idx_N.device)
        for _ in range(REJECTION_ROUNDS):
            outside_n = _mass_above(probs_NV[pending_n], idx_N[pending_n]) >= top_p
            pending_n = pending_n[outside_n]
            if not len(pending_n):
                break
            u_n1 = torch.rand(len(pending_n), 1, device=cdf_NV.device, generator=generator)
            idx_N[pending_n] = _inverse_cdf(cdf_NV[pending_n], u_n1)
        if len(pending_n):
            outside_n = _mass_above(probs_NV[pending_n], idx_N[pending_n]) >= top_p
            pending_n = pending_n[outside_n]
        if len(pending_n):  # a flat distribution under a small top-p: cut by sorting
            nucleus_nV = filter_logits(logits_NV[pending_n], 0, top_p).softmax(dim=-1).cumsum(dim=-1)
            u_n1 = torch.rand(len(pending_n), 1, device=cdf_NV.device, generator=generator)
            idx_N[pending_n] = _inverse_cdf(nucleus_nV, u_n1)
    logp_N = probs_NV.gather(-1, idx_N.unsqueeze(-1)).squeeze(-1).log()
    return idx_N.view(B, l), logp_N.view(B, l)


def _inverse_cdf(cdf_NV: torch.Tensor, u_N1: torch.Tensor) -> torch.Tensor:
    """The first index whose cumulative probability exceeds u * total (u in [0, 1)): a draw from the row."""
    idx_N1 = torch.searchsorted(cdf_NV, u_N1 * cdf_NV[:, -1:], right=True)
    return idx_N1.squeeze(1).clamp_(max=cdf_NV.shape[-1] - 1)


def _mass_above(probs_NV: torch.Tensor, idx_N: torch.Tensor) -> torch.Tensor:
    """Per row, the probability mass of the tokens strictly more likely than token idx_N."""
    p_N1 = probs_NV.gather(-1, idx_N.unsqueeze(-1))
    return torch.where(probs_NV > p_N1, probs_NV, 0.0).sum(dim=-1)

"""Turning AR logits into token indices: classifier-free guidance, temperature, top-k, top-p.

Guidance is written as logits = uncond + t * (cond - uncond): t = 0 is the unconditional model,
t = 1 the conditional one, t > 1 extrapolates away from the unconditional prediction.
"""
from __future__ import annotations

from typing import List, Optional

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
    if temperature < 0:
        raise ValueError(f"temperature={temperature}: expected >= 0")
    if temperature == 0:
        return logits_BlV.argmax(dim=-1)
    logits_BlV = filter_logits(logits_BlV.float() / temperature, top_k, top_p)
    B, l, V = logits_BlV.shape
    probs = logits_BlV.softmax(dim=-1).view(B * l, V)
    return torch.multinomial(probs, 1, generator=generator).view(B, l)

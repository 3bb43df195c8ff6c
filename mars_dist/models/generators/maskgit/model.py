"""MaskGIT over the tokenizer's token pyramid: a bidirectional transformer that predicts masked tokens.

Positions are every token of every scale (the next-scale AR's own flattening; the order does not
matter to a bidirectional model), L = sum of h*w. A masked position holds a learned mask vector,
any other position its token's code vector; the condition enters through AdaLN in every block.

Training (MaskGIT, Chang et al. 2022): per sample a mask ratio r = cos(pi/2 * u), u ~ U(0, 1) (the
cosine schedule; r then has the arccos density (2/pi) / sqrt(1 - r^2)), ceil(r * L) positions masked
uniformly at random, cross-entropy on the masked positions only.

Sampling (SpecMaskGIT's recipe): start fully masked (or, for editing, with the kept tokens given
and the rest masked); at iteration t of T draw every masked token, then re-mask the
floor(N * cos(pi/2 * (t+1)/T)) least confident of the newly drawn ones (N = tokens to generate),
confidence = log-prob of the drawn token + gumbel_temperature * (1 - (t+1)/T) * Gumbel noise, and
guidance ramped linearly over the iterations. Each iteration is one full forward: T sequential
passes per note, whatever the pyramid's size.
"""
from __future__ import annotations

import math
from typing import List, Mapping, Optional, Sequence

import torch
from torch import nn

from mars_dist.models.generators.layout import FREQUENCY_MAJOR, PyramidLayout
from mars_dist.models.generators.maskgit.config import MaskGITConfig
from mars_dist.models.generators.sampling import draw_tokens, guidance_schedule
from mars_dist.models.generators.trunk import AdaLNTrunk, Conditioning, code_vectors


def cosine_schedule(progress: torch.Tensor) -> torch.Tensor:
    """Fraction of the tokens to generate that is (still) masked at `progress` in [0, 1]: cos(pi/2 * progress)."""
    return torch.cos(0.5 * math.pi * progress)


class MaskGIT(AdaLNTrunk):
    def __init__(self, cfg: MaskGITConfig, scales: Sequence[Sequence[int]], codebook_size: int, codebook_dim: int):
        if not scales:
            raise ValueError("MaskGIT needs a non-empty scale schedule")
        super().__init__(cfg, codebook_size, codebook_dim)
        self.layout = PyramidLayout(scales, FREQUENCY_MAJOR)
        self.scales = self.layout.scales
        self.num_tokens = self.layout.num_tokens
        C = cfg.width

        self.mask_11C = nn.Parameter(torch.empty(1, 1, C))
        self.pos_1LC = nn.Parameter(torch.empty(1, self.num_tokens, C))
        self.level_embed = nn.Embedding(len(self.scales), C)
        self._init_tables(self.mask_11C, self.pos_1LC, self.level_embed.weight)
        self._build_blocks()
        self.register_buffer("level_L", self.layout.level_L.clone(), persistent=False)

    # --- forward ---------------------------------------------------------------------------------
    def _logits(self, c: Conditioning, x_BLC: torch.Tensor, masked_BL: torch.Tensor) -> torch.Tensor:
        tokens_BLC = torch.where(masked_BL.unsqueeze(-1), self.mask_11C.to(x_BLC.dtype), self.word_embed(x_BLC))
        h_BLC = tokens_BLC + self.pos_1LC + self.level_embed(self.level_L).unsqueeze(0)
        return self.run_blocks(h_BLC, c)

    def forward(self, labels: Mapping[str, torch.Tensor], x_BLC: torch.Tensor, masked_BL: torch.Tensor) -> torch.Tensor:
        """Logits [B, L, V] at every position; `x_BLC` the code vectors (`code_vectors`) of the pyramid's
        tokens in layout order (ignored where `masked_BL` is True), labels as in ConditionEmbedding."""
        if x_BLC.dim() != 3 or x_BLC.shape[1:] != (self.num_tokens, self.codebook_dim) or masked_BL.shape != x_BLC.shape[:2]:
            raise ValueError(f"token vectors {tuple(x_BLC.shape)} / mask {tuple(masked_BL.shape)}; expected "
                             f"[B, {self.num_tokens}, {self.codebook_dim}] / [B, {self.num_tokens}]")
        return self._logits(self.condition(self.cond(labels, x_BLC.shape[0])), x_BLC, masked_BL)

    def training_mask(self, batch: int, device: torch.device) -> torch.Tensor:
        """[B, L] bool: per sample ceil(cos(pi/2 * u) * L) positions (at least one), chosen uniformly."""
        L = self.num_tokens
        ratio_B = cosine_schedule(torch.rand(batch, device=device))
        count_B = torch.ceil(ratio_B * L).long().clamp(1, L)
        rank_BL = torch.rand(batch, L, device=device).argsort(dim=1).argsort(dim=1)
        return rank_BL < count_B.unsqueeze(1)

    # --- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, quantizer: nn.Module, labels: Mapping[str, torch.Tensor], batch: int, cfg_scale: float = 1.0,
                 top_k: int = 0, top_p: float = 0.0, temperature: float = 1.0,
                 generator: Optional[torch.Generator] = None,
                 cfg_schedule: Optional[Sequence[float]] = None,
                 known: Optional[Sequence[torch.Tensor]] = None,
                 keep: Optional[Sequence[torch.Tensor]] = None,
                 iterations: Optional[int] = None,
                 gumbel_temperature: Optional[float] = None) -> List[torch.Tensor]:
        """Samples `batch` token pyramids in `iterations` (default `cfg.iterations`) parallel steps ->
        list of idx_Bhw, one per scale. Guidance t_j = `guidance_schedule(cfg_scale, T)` at iteration j
        (or `cfg_schedule`, one value per iteration). Editing: where `keep` is True the token comes from
        `known` and is never re-masked; only the other tokens are generated (zero-shot inpainting)."""
        T = self.cfg.iterations if iterations is None else int(iterations)
        if T < 1:
            raise ValueError(f"iterations={T}: must be >= 1")
        choice_t = self.cfg.gumbel_temperature if gumbel_temperature is None else float(gumbel_temperature)
        schedule = list(cfg_schedule) if cfg_schedule is not None else guidance_schedule(cfg_scale, T)
        if len(schedule) != T:
            raise ValueError(f"cfg_schedule has {len(schedule)} entries; expected one per iteration ({T})")
        device, L = self.pos_1LC.device, self.num_tokens
        c, guided = self.guided_condition(labels, batch, schedule)
        if keep is not None:
            idx_BL = self.layout.flatten(known).to(device).clone()
            masked_BL = ~self.layout.flatten(keep).to(device)
        else:
            idx_BL = torch.zeros(batch, L, dtype=torch.long, device=device)
            masked_BL = torch.ones(batch, L, dtype=torch.bool, device=device)
        to_generate_B = masked_BL.sum(dim=1)
        for t in range(T):
            if not masked_BL.any():
                break
            x_BLC = code_vectors(quantizer.codebook, idx_BL).to(self.word_embed.weight.dtype)
            m_BL = masked_BL
            if guided:
                x_BLC, m_BL = torch.cat((x_BLC, x_BLC)), torch.cat((m_BL, m_BL))
            logits_BLV = self.guide(self._logits(c, x_BLC, m_BL), batch, guided, schedule[t])
            drawn_BL, logp_BL = draw_tokens(logits_BLV, top_k, top_p, temperature, generator)
            idx_BL = torch.where(masked_BL, drawn_BL, idx_BL)
            progress = (t + 1) / T
            remask_B = torch.floor(to_generate_B * cosine_schedule(torch.tensor(progress))).long()
            # every iteration fixes at least one of the tokens still masked (MaskGIT's rule)
            remask_B = torch.minimum(remask_B, (masked_BL.sum(dim=1) - 1).clamp_min(0))
            uniform_BL = torch.rand(batch, L, device=device, generator=generator).clamp_(1e-20, 1.0 - 1e-7)
            gumbel_BL = -torch.log(-torch.log(uniform_BL))
            confidence_BL = logp_BL + choice_t * (1.0 - progress) * gumbel_BL
            confidence_BL = confidence_BL.masked_fill(~masked_BL, float("inf"))
            rank_BL = confidence_BL.argsort(dim=1).argsort(dim=1)
            masked_BL = rank_BL < remask_B.unsqueeze(1)
        return self.layout.unflatten(idx_BL)

    # --- accounting ------------------------------------------------------------------------------
    def attention_pairs(self) -> int:
        return self.num_tokens * self.num_tokens

    def sequential_steps(self, iterations: Optional[int] = None) -> int:
        """Forward passes that must run one after the other to sample a note: one per iteration."""
        return self.cfg.iterations if iterations is None else int(iterations)

    def flops_per_sample(self, training: bool = True) -> float:
        """Training: forward + backward of one pass over the pyramid. Sampling: `iterations` forwards."""
        forward = self.forward_flops(self.num_tokens, self.attention_pairs())
        return 3.0 * forward if training else forward * self.cfg.iterations

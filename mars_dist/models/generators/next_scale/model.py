"""The next-scale autoregressive transformer (VAR's scheme) over the tokenizer's scale schedule.

Sequence layout: scale 0's tokens, then scale 1's, ... (each scale's h x w map row-major). Scale 0
is made from the condition token alone; scale k > 0 is fed the tokenizer's teacher-forcing input
for scale k (the reconstruction from scales < k, resized to scale k's grid), so the model predicts
every token of scale k at once from all coarser scales. Training sees the whole pyramid at once
under a block-causal mask; inference runs scale by scale with a KV cache and needs no mask.
"""
from __future__ import annotations

from typing import List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from mars_dist.models.generators.blocks import LayerKVCache
from mars_dist.models.generators.next_scale.config import NextScaleConfig
from mars_dist.models.generators.sampling import guidance_schedule, sample_logits
from mars_dist.models.generators.trunk import AdaLNTrunk, Conditioning


def block_causal_mask(scales: Sequence[Tuple[int, int]]) -> torch.Tensor:
    """[L, L] bool, True where query token i may attend to key token j: j's scale <= i's scale."""
    level_L = torch.cat([torch.full((h * w,), k) for k, (h, w) in enumerate(scales)])
    return level_L.unsqueeze(1) >= level_L.unsqueeze(0)


class NextScaleAR(AdaLNTrunk):
    def __init__(self, cfg: NextScaleConfig, scales: Sequence[Sequence[int]], codebook_size: int, codebook_dim: int):
        if not scales:
            raise ValueError("NextScaleAR needs a non-empty scale schedule")
        super().__init__(cfg, codebook_size, codebook_dim)
        self.scales: List[Tuple[int, int]] = [(int(h), int(w)) for h, w in scales]
        self.scale_lengths = [h * w for h, w in self.scales]
        self.scale_starts = [sum(self.scale_lengths[:k]) for k in range(len(self.scales))]
        self.num_tokens = sum(self.scale_lengths)
        C = cfg.width

        self.pos_start_1lC = nn.Parameter(torch.empty(1, self.scale_lengths[0], C))
        self.pos_1LC = nn.Parameter(torch.empty(1, self.num_tokens, C))
        self.level_embed = nn.Embedding(len(self.scales), C)
        self._init_tables(self.pos_start_1lC, self.pos_1LC, self.level_embed.weight)
        self._build_blocks()

        level_L = torch.cat([torch.full((n,), k) for k, n in enumerate(self.scale_lengths)])
        self.register_buffer("level_L", level_L, persistent=False)
        self.register_buffer("attn_mask_LL", block_causal_mask(self.scales), persistent=False)

    # --- embeddings ------------------------------------------------------------------------------
    def _position(self, start: int, end: int) -> torch.Tensor:
        return self.pos_1LC[:, start:end] + self.level_embed(self.level_L[start:end]).unsqueeze(0)

    def _first_scale_tokens(self, cond_BD: torch.Tensor) -> torch.Tensor:
        return cond_BD.unsqueeze(1) + self.pos_start_1lC

    def _check_inputs(self, x_BLC: torch.Tensor) -> None:
        expected = self.num_tokens - self.scale_lengths[0]
        if x_BLC.dim() != 3 or x_BLC.shape[1:] != (expected, self.codebook_dim):
            raise ValueError(
                f"teacher-forcing input has shape {tuple(x_BLC.shape)}; expected [B, {expected}, {self.codebook_dim}] "
                f"(tokens of scales[1:] of {self.scales}, codebook dim {self.codebook_dim})"
            )

    # --- training --------------------------------------------------------------------------------
    def forward(self, labels: Mapping[str, torch.Tensor], x_BLC: torch.Tensor) -> torch.Tensor:
        """Logits for every token of every scale, [B, L, V] with L = sum of h*w over all scales.

        `x_BLC` is the quantizer's teacher_forcing_inputs (scales[1:]); labels as in
        ConditionEmbedding (missing = null; label dropout applies in training mode).
        """
        self._check_inputs(x_BLC)
        B = x_BLC.shape[0]
        c = self.condition(self.cond(labels, B))
        h_BLC = torch.cat((self._first_scale_tokens(c.cond_BD), self.word_embed(x_BLC)), dim=1)
        h_BLC = h_BLC + self._position(0, self.num_tokens)
        return self.run_blocks(h_BLC, c, self.attn_mask_LL)

    # --- inference -------------------------------------------------------------------------------
    def step(self, si: int, c: Conditioning, x_BlC: Optional[torch.Tensor], cache: List[LayerKVCache]) -> torch.Tensor:
        """Logits of scale `si` ([B, h*w, V]) given scales < si already in `cache`.

        `x_BlC` is scale si's input (None for si = 0): the quantizer's next_scale_input, flattened.
        """
        start, length = self.scale_starts[si], self.scale_lengths[si]
        tokens = self._first_scale_tokens(c.cond_BD) if si == 0 else self.word_embed(x_BlC)
        return self.run_blocks(tokens + self._position(start, start + length), c, cache=cache)

    @torch.no_grad()
    def generate(self, quantizer: nn.Module, labels: Mapping[str, torch.Tensor], batch: int, cfg_scale: float = 1.0,
                 top_k: int = 0, top_p: float = 0.0, temperature: float = 1.0,
                 generator: Optional[torch.Generator] = None,
                 cfg_schedule: Optional[Sequence[float]] = None,
                 known: Optional[Sequence[torch.Tensor]] = None,
                 keep: Optional[Sequence[torch.Tensor]] = None) -> List[torch.Tensor]:
        """Samples `batch` token pyramids -> list of idx_Bhw, one per scale (the tokenizer's shapes).

        Labels are raw NSynth values ([batch] LongTensors; missing or -1 = null). Each scale's logits
        are guided as uncond + t_k * (cond - uncond) with t_k from `guidance_schedule(cfg_scale, K)`,
        or from `cfg_schedule` (one t per scale) when given; the unconditional branch rides along as
        the second half of the batch and is skipped when every t_k is 1 or no label is given.

        Editing: with `known` (token maps) and `keep` (bool maps, one per scale), the tokens where
        `keep` is True are taken from `known` instead of sampled (teacher-forced), so every later
        scale is predicted from the kept tokens of the coarser ones.
        """
        schedule = list(cfg_schedule) if cfg_schedule is not None else guidance_schedule(cfg_scale, len(self.scales))
        if len(schedule) != len(self.scales):
            raise ValueError(f"cfg_schedule has {len(schedule)} entries; expected one per scale ({len(self.scales)})")
        c, guided = self.guided_condition(labels, batch, schedule)
        cache = self.new_cache()
        fhat_BChw: Optional[torch.Tensor] = None
        x_BlC: Optional[torch.Tensor] = None
        idx_list: List[torch.Tensor] = []
        for si, (h, w) in enumerate(self.scales):
            logits_BlV = self.guide(self.step(si, c, x_BlC, cache), batch, guided, schedule[si])
            idx_Bhw = sample_logits(logits_BlV, top_k, top_p, temperature, generator).view(batch, h, w)
            if keep is not None:
                idx_Bhw = torch.where(keep[si], known[si], idx_Bhw)
            idx_list.append(idx_Bhw)
            fhat_BChw, next_BChw = quantizer.next_scale_input(si, fhat_BChw, idx_Bhw)
            if next_BChw is not None:
                x_BlC = next_BChw.flatten(2).transpose(1, 2).to(self.word_embed.weight.dtype)
                if guided:
                    x_BlC = torch.cat((x_BlC, x_BlC))
        return idx_list

    # --- accounting ------------------------------------------------------------------------------
    def attention_pairs(self) -> int:
        """Number of (query, key) pairs the block-causal mask allows."""
        return sum(n * (start + n) for start, n in zip(self.scale_starts, self.scale_lengths))

    def sequential_steps(self) -> int:
        """Forward passes that must run one after the other to sample a note: one per scale."""
        return len(self.scales)

    def flops_per_sample(self, training: bool = True) -> float:
        """Matmul FLOPs of one forward over the whole pyramid (x3 for forward + backward)."""
        forward = self.forward_flops(self.num_tokens, self.attention_pairs())
        return 3.0 * forward if training else forward

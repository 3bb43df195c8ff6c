"""The next-token autoregressive transformer over the tokenizer's token pyramid.

Sequence (mars_dist/models/generators/layout.py): every token of every scale, scale-major, raster
order inside a scale, L = sum of h*w tokens (655 for the paper schedule): the same tokens the
next-scale AR models, decoded by the same tokenizer path, so a comparison of the two isolates the
factorisation (one token per step vs one scale per step). Position 0 is the condition token and
predicts token 0; position i > 0 is fed token i-1 (its code vector) and predicts token i. Training
runs the whole sequence under a causal mask; sampling runs one token at a time with a KV cache.
"""
from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

import torch
from torch import nn

from mars_dist.models.generators.layout import PyramidLayout
from mars_dist.models.generators.next_token.config import NextTokenConfig
from mars_dist.models.generators.sampling import guidance_schedule, sample_logits
from mars_dist.models.generators.trunk import AdaLNTrunk, Conditioning, code_vectors


class NextTokenAR(AdaLNTrunk):
    def __init__(self, cfg: NextTokenConfig, scales: Sequence[Sequence[int]], codebook_size: int, codebook_dim: int):
        if not scales:
            raise ValueError("NextTokenAR needs a non-empty scale schedule")
        super().__init__(cfg, codebook_size, codebook_dim)
        self.layout = PyramidLayout(scales, cfg.order)
        self.scales = self.layout.scales
        self.num_tokens = self.layout.num_tokens
        C = cfg.width

        self.pos_start_11C = nn.Parameter(torch.empty(1, 1, C))
        self.pos_1LC = nn.Parameter(torch.empty(1, self.num_tokens, C))
        self.level_embed = nn.Embedding(len(self.scales), C)
        self._init_tables(self.pos_start_11C, self.pos_1LC, self.level_embed.weight)
        self._build_blocks()
        self.register_buffer("level_L", self.layout.level_L.clone(), persistent=False)

    def _position(self, start: int, end: int) -> torch.Tensor:
        """Embedding of positions start..end-1: learned position + the scale of the token predicted there."""
        return self.pos_1LC[:, start:end] + self.level_embed(self.level_L[start:end]).unsqueeze(0)

    # --- training --------------------------------------------------------------------------------
    def forward(self, labels: Mapping[str, torch.Tensor], x_BLC: torch.Tensor) -> torch.Tensor:
        """Logits [B, L, V]: position i predicts sequence token i from the condition and tokens < i.

        `x_BLC` holds the code vectors (`code_vectors`) of all L sequence tokens; the last one is
        never an input. Labels as in ConditionEmbedding (label dropout applies in training mode).
        """
        if x_BLC.dim() != 3 or x_BLC.shape[1:] != (self.num_tokens, self.codebook_dim):
            raise ValueError(f"token vectors have shape {tuple(x_BLC.shape)}; expected [B, {self.num_tokens}, "
                             f"{self.codebook_dim}] (the pyramid of {self.scales}, codebook dim {self.codebook_dim})")
        B = x_BLC.shape[0]
        c = self.condition(self.cond(labels, B))
        start_B1C = c.cond_BD.unsqueeze(1) + self.pos_start_11C
        h_BLC = torch.cat((start_B1C, self.word_embed(x_BLC[:, :-1])), dim=1) + self._position(0, self.num_tokens)
        return self.run_blocks(h_BLC, c, causal=True)

    # --- inference -------------------------------------------------------------------------------
    def step(self, i: int, c: Conditioning, x_B1C: Optional[torch.Tensor], cache) -> torch.Tensor:
        """Logits [B, 1, V] of sequence position i, given positions < i in `cache`; `x_B1C` is the code
        vector of token i-1 (None for i = 0)."""
        tokens = c.cond_BD.unsqueeze(1) + self.pos_start_11C if i == 0 else self.word_embed(x_B1C)
        return self.run_blocks(tokens + self._position(i, i + 1), c, cache=cache)

    @torch.no_grad()
    def generate(self, quantizer: nn.Module, labels: Mapping[str, torch.Tensor], batch: int, cfg_scale: float = 1.0,
                 top_k: int = 0, top_p: float = 0.0, temperature: float = 1.0,
                 generator: Optional[torch.Generator] = None,
                 cfg_schedule: Optional[Sequence[float]] = None,
                 known: Optional[Sequence[torch.Tensor]] = None,
                 keep: Optional[Sequence[torch.Tensor]] = None) -> List[torch.Tensor]:
        """Samples `batch` token pyramids -> list of idx_Bhw, one per scale (the tokenizer's shapes).

        Guidance as in the next-scale AR: t_k = `guidance_schedule(cfg_scale, K)` (or `cfg_schedule`)
        indexed by the scale of the token being drawn, so both families guide each scale alike.
        Editing: where `keep` is True the token is taken from `known` (teacher-forced) instead of
        drawn; a drawn token sees only the kept tokens before it in the sequence.
        """
        schedule = list(cfg_schedule) if cfg_schedule is not None else guidance_schedule(cfg_scale, len(self.scales))
        if len(schedule) != len(self.scales):
            raise ValueError(f"cfg_schedule has {len(schedule)} entries; expected one per scale ({len(self.scales)})")
        c, guided = self.guided_condition(labels, batch, schedule)
        known_BL = self.layout.flatten(known) if keep is not None else None
        keep_BL = self.layout.flatten(keep) if keep is not None else None
        level = self.layout.level_L.tolist()
        cache = self.new_cache()
        seq_BL = torch.empty(batch, self.num_tokens, dtype=torch.long, device=self.pos_1LC.device)
        x_B1C: Optional[torch.Tensor] = None
        for i in range(self.num_tokens):
            logits_B1V = self.guide(self.step(i, c, x_B1C, cache), batch, guided, schedule[level[i]])
            tok_B = sample_logits(logits_B1V, top_k, top_p, temperature, generator).view(batch)
            if keep_BL is not None:
                tok_B = torch.where(keep_BL[:, i], known_BL[:, i], tok_B)
            seq_BL[:, i] = tok_B
            x_B1C = code_vectors(quantizer.codebook, tok_B).unsqueeze(1).to(self.word_embed.weight.dtype)
            if guided:
                x_B1C = torch.cat((x_B1C, x_B1C))
        return self.layout.unflatten(seq_BL)

    # --- accounting ------------------------------------------------------------------------------
    def attention_pairs(self) -> int:
        """(query, key) pairs of causal attention over L tokens."""
        return self.num_tokens * (self.num_tokens + 1) // 2

    def sequential_steps(self) -> int:
        """Forward passes that must run one after the other to sample a note: one per token."""
        return self.num_tokens

    def flops_per_sample(self, training: bool = True) -> float:
        """Matmul FLOPs of one forward over the sequence (sampling with the KV cache costs the same);
        x3 for forward + backward."""
        forward = self.forward_flops(self.num_tokens, self.attention_pairs())
        return 3.0 * forward if training else forward

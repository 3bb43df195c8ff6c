"""The trunk every generator family is built on: label condition -> AdaLN blocks -> codebook logits.

The families differ only in what a position of their sequence holds and what it may attend to
(next-scale: a scale at a time, block-causal; next-token: one token at a time, causal; MaskGIT: all
tokens, bidirectional). Everything else is this class: the condition embedding and its null entries
for guidance, the AdaLN modulation computed once per condition, the blocks and head, their
initialisation, KV caches and the matmul accounting. Equal depth and width therefore mean equal
parameter counts up to the position tables, which is what lets the families be compared at
matched sizes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mars_dist.models.generators.blocks import EAGER_STAGES, AdaLNBlock, AdaLNHead, LayerKVCache, compiled_stages
from mars_dist.models.generators.conditioning import ConditionEmbedding
from mars_dist.models.generators.sampling import guided_logits
from mars_dist.models.generators.trunk_config import TrunkConfig
from mars_dist.models.int8 import Int8Linear, quantize_linears
from mars_dist.parallel.sharding import ShardingPlan


def code_vectors(codebook: nn.Embedding, idx: torch.Tensor) -> torch.Tensor:
    """Tokens -> their l2-normalised code vectors [..., codebook_dim], the input the token-by-token
    families embed. The tokenizer looks codes up by cosine similarity, so a code's direction is what
    identifies it; its norm (tiny at the tokenizer's init, anything after training) is dropped so the
    input's scale does not depend on how far the tokenizer's training moved it."""
    return F.normalize(codebook(idx).float(), dim=-1)


@dataclass
class Conditioning:
    """Everything the blocks need from the condition, computed once per forward / generated batch."""

    cond_BD: torch.Tensor
    block_mods: List[torch.Tensor]  # per block [B, 6, C]
    head_mod: torch.Tensor  # [B, 2, C]


class AdaLNTrunk(nn.Module):
    """Base class: builds `cond` and `word_embed` first; the family then adds its position tables
    and calls `_build_blocks()` (the order fixes which random numbers each parameter is drawn from)."""

    num_tokens: int  # positions of the family's sequence (set by the subclass)
    stages = EAGER_STAGES  # how the blocks and the head run their tensor code (compile_stages)

    def __init__(self, cfg: TrunkConfig, codebook_size: int, codebook_dim: int):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.codebook_size, self.codebook_dim = codebook_size, codebook_dim
        self.init_std = math.sqrt(1.0 / cfg.width / 3.0)
        self.cond = ConditionEmbedding(cfg.width, cfg.cond_drop_prob, cfg.label_drop_prob, self.init_std)
        self.word_embed = nn.Linear(codebook_dim, cfg.width)

    @classmethod
    def for_quantizer(cls, cfg: TrunkConfig, quantizer: nn.Module) -> "AdaLNTrunk":
        """The family's model over a tokenizer's scales and codebook."""
        return cls(cfg, quantizer.scales, quantizer.codebook_size, quantizer.codebook_dim)

    def _init_tables(self, *tables: torch.Tensor) -> None:
        for table in tables:
            nn.init.trunc_normal_(table, std=self.init_std)

    def _build_blocks(self) -> None:
        cfg, C = self.cfg, self.cfg.width
        self.blocks = nn.ModuleList(
            AdaLNBlock(C, cfg.heads, cfg.mlp_ratio, cfg.dropout, cfg.attn_l2_norm, cfg.norm_eps, cfg.allow_math_attention)
            for _ in range(cfg.depth)
        )
        self.head = AdaLNHead(C, self.codebook_size, cfg.norm_eps)
        for block in self.blocks:
            for lin in (block.attn.qkv, block.attn.proj, block.ffn.fc1, block.ffn.fc2):
                nn.init.trunc_normal_(lin.weight, std=self.init_std)
                nn.init.zeros_(lin.bias)
            # Scale residual-branch outputs down with depth so the residual stream's variance stays put.
            for lin in (block.attn.proj, block.ffn.fc2):
                lin.weight.data.div_(math.sqrt(2 * cfg.depth))
        nn.init.trunc_normal_(self.word_embed.weight, std=self.init_std)
        nn.init.zeros_(self.word_embed.bias)
        nn.init.trunc_normal_(self.head.out.weight, std=0.02 * self.init_std)
        nn.init.zeros_(self.head.out.bias)

    def sharding_plan(self) -> ShardingPlan:
        """Each block is a unit, entered through `forward` and through `modulation` (the trunk computes
        every block's AdaLN modulation once per condition, outside the block's forward)."""
        return ShardingPlan(tuple(self.blocks), unit_methods=("modulation",))

    # --- condition -------------------------------------------------------------------------------
    def condition(self, cond_BD: torch.Tensor) -> Conditioning:
        return Conditioning(cond_BD, [b.modulation(cond_BD) for b in self.blocks], self.head.modulation(cond_BD))

    def guided_condition(self, labels: Mapping[str, torch.Tensor], batch: int,
                         schedule: Sequence[float]) -> Tuple[Conditioning, bool]:
        """The sampling condition for raw labels, and whether guidance is on. With guidance the
        unconditional branch rides along as the second half of the batch; it is skipped when every
        guidance value is 1 or no label is given (both branches would be the same)."""
        device = self.word_embed.weight.device
        cond_BD = self.cond.embed(self.cond.class_indices(labels, batch, device))
        null_BD = self.cond.null(batch)
        guided = any(t != 1.0 for t in schedule) and not torch.equal(cond_BD, null_BD)
        return self.condition(torch.cat((cond_BD, null_BD)) if guided else cond_BD), guided

    @staticmethod
    def guide(logits_BlV: torch.Tensor, batch: int, guided: bool, t: float) -> torch.Tensor:
        """The guided logits of the first `batch` rows (cond) against the second half (uncond)."""
        return guided_logits(logits_BlV[:batch], logits_BlV[batch:], t) if guided else logits_BlV

    # --- blocks ----------------------------------------------------------------------------------
    def run_blocks(self, h_BLC: torch.Tensor, c: Conditioning, attn_mask_LL: Optional[torch.Tensor] = None,
                   cache: Optional[List[LayerKVCache]] = None, causal: bool = False) -> torch.Tensor:
        """Embedded tokens -> float32 logits [B, L, V] through every block and the head."""
        for i, (block, mod) in enumerate(zip(self.blocks, c.block_mods)):
            h_BLC = block(h_BLC, mod, attn_mask_LL, None if cache is None else cache[i], causal)
        if self.stages.head is None:
            return self.head(h_BLC, c.head_mod)
        return self.stages.head(self.head, h_BLC, c.head_mod)

    def compile_stages(self, enabled: bool = True) -> "AdaLNTrunk":
        """Runs the blocks' and the head's tensor code through torch.compile (blocks.compiled_stages),
        or back through the plain methods. For generation: one compile per process serves every
        scale / step, and the tokens are those of the plain code up to float rounding (docs/ar.md)."""
        self.stages = compiled_stages() if enabled else EAGER_STAGES
        for block in self.blocks:
            block.stages = self.stages
        return self

    def quantize_int8(self) -> "AdaLNTrunk":
        """Int8 weights and per-token int8 activations in every matmul that runs once per token
        (attention's qkv and output projections, the feed-forward, the head's logits; models/int8.py),
        in place, for CPU inference. The per-condition AdaLN modulation and the embeddings stay in
        float: they run once per batch, so quantizing them would cost precision and save nothing."""
        for block in self.blocks:
            quantize_linears(block.attn)
            block.ffn.quantize_int8()
        self.head.out = Int8Linear.from_linear(self.head.out)
        return self

    def new_cache(self, capacity: Optional[int] = None) -> List[LayerKVCache]:
        """One empty KV cache per block, each holding up to `capacity` tokens (default: the family's
        whole sequence, `num_tokens`)."""
        return [LayerKVCache(self.num_tokens if capacity is None else capacity) for _ in self.blocks]

    # --- accounting ------------------------------------------------------------------------------
    def forward_flops(self, tokens: int, attention_pairs: int) -> float:
        """Matmul FLOPs of one forward over `tokens` positions whose attention spans `attention_pairs`
        (query, key) pairs, plus the once-per-sample AdaLN modulation."""
        C = self.cfg.width
        hidden = round(C * self.cfg.mlp_ratio)
        per_token = self.cfg.depth * (4 * C * C + 2 * C * hidden) + C * self.codebook_size + self.codebook_dim * C
        attention = self.cfg.depth * 2 * C * attention_pairs
        per_sample_cond = (self.cfg.depth * 6 + 2) * C * C
        return 2.0 * (per_token * tokens + attention + per_sample_cond)

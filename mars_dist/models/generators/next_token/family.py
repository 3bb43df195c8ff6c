"""The next-token AR's spec (the AAR paper's baseline): the token pyramid as one sequence, a token
per step; guidance ramped over the scales as in the next-scale AR; editing teacher-forces the kept
tokens (a drawn token sees only the kept tokens before it)."""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn

from mars_dist.models.generators.family import GeneratorFamily, TokenBatch, register_family
from mars_dist.models.generators.next_token.config import NextTokenConfig
from mars_dist.models.generators.next_token.model import NextTokenAR
from mars_dist.models.generators.objectives import every_token_loss, pyramid_sequence


@register_family
class NextTokenFamily(GeneratorFamily):
    name = "next_token"
    description = "next-token AR (AAR's baseline): one token per step over the pyramid, causal, KV cache"
    model_class = NextTokenAR
    config_class = NextTokenConfig

    def loss(self, net: nn.Module, model: nn.Module, tokens: TokenBatch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Cross-entropy of every token of the pyramid given the condition and the tokens before it."""
        idx_BL, x_BLC = pyramid_sequence(model.layout, tokens.quantizer.codebook, tokens.idx_list)
        return every_token_loss(net(tokens.labels, x_BLC), idx_BL, model.level_L, len(model.scales))

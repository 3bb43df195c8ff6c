"""The next-scale AR's spec (MARS/VAR): scale k's token map predicted from the coarser ones, a scale
per step; guidance ramped over the scales; editing teacher-forces the kept tokens at every scale."""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn

from mars_dist.models.generators.family import GeneratorFamily, TokenBatch, register_family
from mars_dist.models.generators.next_scale.config import NextScaleConfig
from mars_dist.models.generators.next_scale.model import NextScaleAR
from mars_dist.models.generators.objectives import every_token_loss


@register_family
class NextScaleFamily(GeneratorFamily):
    name = "next_scale"
    description = "next-scale AR (MARS/VAR): one scale per step, block-causal attention, KV cache"
    model_class = NextScaleAR
    config_class = NextScaleConfig

    def loss(self, net: nn.Module, model: nn.Module, tokens: TokenBatch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Cross-entropy of every scale's tokens given the coarser scales (teacher forcing)."""
        with torch.no_grad():
            x_BLC = tokens.quantizer.teacher_forcing_inputs(tokens.idx_list)
        target_BL = torch.cat([idx.flatten(1) for idx in tokens.idx_list], dim=1)
        return every_token_loss(net(tokens.labels, x_BLC), target_BL, model.level_L, len(model.scales))

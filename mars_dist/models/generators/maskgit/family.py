"""MaskGIT's spec (SpecMaskGIT's recipe): masked tokens of the pyramid predicted from the unmasked
ones; iterative parallel decoding whose iterations and Gumbel temperature are MaskGIT's own sampling
options; editing is native (kept tokens are given and never re-masked)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from mars_dist.models.generators.family import GeneratorFamily, TokenBatch, register_family
from mars_dist.models.generators.maskgit.config import MaskGITConfig
from mars_dist.models.generators.maskgit.model import MaskGIT
from mars_dist.models.generators.objectives import cross_entropy_BL, pyramid_sequence
from mars_dist.models.generators.options import SamplingOptions, at_least, option


@dataclass
class MaskGITOptions(SamplingOptions):
    iterations: Optional[int] = option(None, "MaskGIT: parallel decoding passes per note (default: the export's, 16)",
                                       check=at_least(1))
    gumbel_temperature: Optional[float] = option(None, "MaskGIT: Gumbel noise on the re-masking confidence, annealed "
                                                 "to 0 (default: the export's, 4.5)", check=at_least(0.0))


@register_family
class MaskGITFamily(GeneratorFamily):
    name = "maskgit"
    description = "MaskGIT (SpecMaskGIT): iterative parallel decoding, cosine schedule, native editing"
    model_class = MaskGIT
    config_class = MaskGITConfig
    options_class = MaskGITOptions

    def loss(self, net: nn.Module, model: nn.Module, tokens: TokenBatch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Cross-entropy of the masked tokens (a cosine-schedule fraction per sample) given the others."""
        idx_BL, x_BLC = pyramid_sequence(model.layout, tokens.quantizer.codebook, tokens.idx_list)
        masked_BL = model.training_mask(idx_BL.shape[0], idx_BL.device)
        logits_BLV = net(tokens.labels, x_BLC, masked_BL)
        weight_BL = masked_BL.float()
        loss = (cross_entropy_BL(logits_BLV, idx_BL) * weight_BL).sum() / weight_BL.sum()
        with torch.no_grad():
            correct_BL = (logits_BLV.argmax(dim=-1) == idx_BL).float()
            logs = {"loss/ce": loss.detach(), "loss/acc": (correct_BL * weight_BL).sum() / weight_BL.sum(),
                    "loss/mask_ratio": weight_BL.mean()}
        return loss, logs

    def sequential_steps(self, model: nn.Module, options: MaskGITOptions) -> int:
        return model.sequential_steps(options.iterations)

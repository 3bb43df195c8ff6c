"""A toy generator family defined entirely outside the library, as a user project would add one:
this spec, its model (model.py) and one run config (toy.yaml), and nothing else anywhere.

Run configs name it `task: tests.toy_generator.spec:toy` (its settings are the `toy:` section);
its exports name it as their builder; `mars-sample --model EXPORT --help` lists its own sampling
flag (--toy-spread), and MARS_DIST_FAMILIES=tests.toy_generator.spec:toy makes every command's
--help and the benchmarks' comparison know it too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mars_dist.models.generators.family import GeneratorFamily, TokenBatch, TokenGeometry, register_family
from mars_dist.models.generators.options import SamplingOptions, at_least, option
from tests.toy_generator.model import BagOfTokens


@dataclass
class ToyConfig:
    width: int = 16

    def validate(self) -> None:
        if self.width < 1:
            raise ValueError(f"toy.width={self.width}: must be >= 1")


@dataclass
class ToyOptions(SamplingOptions):
    spread: float = option(1.0, "toy: scale of the logits before drawing", flag="--toy-spread", check=at_least(0.0))


@register_family
class ToyFamily(GeneratorFamily):
    name = "toy"
    description = "every token at once from the labels (a test family defined outside the library)"
    model_class = BagOfTokens
    config_class = ToyConfig
    options_class = ToyOptions
    presets = {"tiny": {"width": 8}, "small": {"width": 32}, "d12": {"width": 64}}

    def build(self, config: ToyConfig, geometry: TokenGeometry) -> nn.Module:
        return BagOfTokens(config.width, geometry.scales, geometry.codebook_size)

    def loss(self, net: nn.Module, model: nn.Module, tokens: TokenBatch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        target_BL = torch.cat([idx.flatten(1) for idx in tokens.idx_list], dim=1)
        logits_BLV = net(tokens.labels, target_BL.shape[0])
        loss = F.cross_entropy(logits_BLV.flatten(0, 1).float(), target_BL.flatten())
        return loss, {"loss/ce": loss.detach()}

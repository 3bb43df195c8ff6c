"""A toy generator family defined entirely outside the library, as a user project would add one.

It proves that adding a generator touches no library file: a model, a task with its own config
section, and a Generator, each registered where it is defined. The model predicts every token of
every scale independently from the label condition (no autoregression): enough to train, export
and sample through the real engine, export and generation paths.

Run configs name it `task: tests.toy_generator:toy_gen`; its settings are the `toy_gen:` section.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from mars_dist.engine.optim import adamw_factory
from mars_dist.engine.task import ModelSpec, Models, Task
from mars_dist.generation.generator import Generator, SamplingSettings
from mars_dist.generation.loaders import register_generator
from mars_dist.labels import CONDITION_CLASSES
from mars_dist.models.generators.conditioning import ConditionEmbedding
from mars_dist.models.generators.sampling import sample_logits
from mars_dist.tasks.registry import register_task
from mars_dist.tasks.shared.exported import load_weights
from mars_dist.tasks.shared.frozen_tokenizer import load_frozen_tokenizer


@dataclass
class ToyGenConfig:
    tokenizer_path: str = ""
    width: int = 16


class BagOfTokens(nn.Module):
    """labels -> logits [B, L, V] for all L tokens of the pyramid at once."""

    def __init__(self, width: int, scales, vocab: int):
        super().__init__()
        self.scales = [tuple(s) for s in scales]
        self.num_tokens, self.vocab = sum(h * w for h, w in self.scales), vocab
        self.cond = ConditionEmbedding(width, cond_drop_prob=0.1, label_drop_prob=0.1, init_std=0.02)
        self.head = nn.Linear(width, self.num_tokens * vocab)

    def forward(self, labels: Dict[str, torch.Tensor], batch: int) -> torch.Tensor:
        return self.head(self.cond(labels, batch)).view(batch, self.num_tokens, self.vocab)


@register_task("toy_gen", config=ToyGenConfig)
class ToyGeneratorTask(Task):
    def build_models(self) -> Dict[str, ModelSpec]:
        tokenizer = load_frozen_tokenizer(self.settings.tokenizer_path, "toy_gen.tokenizer_path",
                                          self.data_info.get("cmx_shape"))
        q = tokenizer.quantizer
        return {"toy": ModelSpec(BagOfTokens(self.settings.width, q.scales, q.codebook_size), adamw_factory(self.cfg.optim)),
                "tokenizer": ModelSpec(tokenizer)}

    def micro_step(self, batch: Dict[str, Any], models: Models, step: int, backward) -> Dict[str, torch.Tensor]:
        with torch.no_grad():
            target_BL = torch.cat([idx.flatten(1) for idx in models.unwrap("tokenizer").encode(batch["cmx"])], dim=1)
        labels = {n: batch[n] for n in CONDITION_CLASSES}
        logits_BLV = models["toy"](labels, len(target_BL))
        loss = F.cross_entropy(logits_BLV.flatten(0, 1).float(), target_BL.flatten())
        backward("toy", loss)
        return {"loss/ce": loss.detach()}


@register_generator(ToyGeneratorTask)
class ToyGenerator(Generator):
    def __init__(self, model: BagOfTokens, tokenizer, frontend, device, dtype=torch.float32):
        super().__init__(tokenizer, frontend, device, dtype)
        self.model = model.to(device).eval()

    @classmethod
    def from_export(cls, weights, config, tokenizer, device, dtype, path) -> "ToyGenerator":
        q = tokenizer.module.quantizer
        model = BagOfTokens(config["run_config"]["toy_gen"]["width"], q.scales, q.codebook_size)
        load_weights(model, weights, f"{path} does not fit the tokenizer")
        return cls(model, tokenizer.module, tokenizer.frontend, device, dtype)

    @torch.no_grad()
    def tokens(self, labels, batch: int, settings: SamplingSettings, generator) -> List[torch.Tensor]:
        logits_BLV = self.model(labels, batch)
        idx_BL = sample_logits(logits_BLV, settings.top_k, settings.top_p, settings.temperature, generator)
        maps, start = [], 0
        for h, w in self.model.scales:
            maps.append(idx_BL[:, start:start + h * w].reshape(batch, h, w))
            start += h * w
        return maps

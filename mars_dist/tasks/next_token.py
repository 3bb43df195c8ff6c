"""Training task of the next-token AR: cross-entropy of every token of the pyramid given the ones before it.

The frozen tokenizer (`next_token.tokenizer_path`) turns each batch into its token pyramid, laid out
as one sequence (scale-major, raster order `next_token.order` inside a scale); the model predicts
each token from the condition and all earlier tokens. The module also registers the family's
Generator, so `python -m mars_dist.sample --model EXPORT` samples and edits any exported model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch
import torch.nn.functional as F

from mars_dist.engine.task import Models
from mars_dist.generation.loaders import register_generator
from mars_dist.generation.model_generator import ModelGenerator
from mars_dist.generation.training import condition_labels
from mars_dist.models.generators.next_token.config import NextTokenConfig
from mars_dist.models.generators.next_token.model import NextTokenAR
from mars_dist.tasks.registry import register_task
from mars_dist.tasks.shared.pyramid_task import PyramidSequenceTask


@dataclass
class NextTokenTaskConfig(NextTokenConfig):
    """The `next_token:` section: the model's architecture plus the tokenizer it trains on and its media."""

    tokenizer_path: str = ""  # exported tokenizer (model.safetensors + config.json) the model trains on
    media_notes: int = 4
    media_cfg_scale: float = 3.0
    media_top_p: float = 0.95


@register_task("next_token", config=NextTokenTaskConfig)
class NextTokenTask(PyramidSequenceTask):
    """models: "next_token" (trained) and "tokenizer" (frozen)."""

    MODEL = "next_token"
    model_class = NextTokenAR

    def micro_step(self, batch: Dict[str, Any], models: Models, step: int, backward) -> Dict[str, torch.Tensor]:
        idx_BL, x_BLC = self.targets(models, batch)
        logits_BLV = models[self.MODEL](condition_labels(batch), x_BLC)
        B, L, V = logits_BLV.shape
        ce_BL = F.cross_entropy(logits_BLV.float().view(B * L, V), idx_BL.view(B * L), reduction="none").view(B, L)
        loss = ce_BL.mean()
        backward(self.MODEL, loss)
        with torch.no_grad():
            correct_BL = (logits_BLV.argmax(dim=-1) == idx_BL).float()
            logs = {"loss/ce": loss.detach(), "loss/acc": correct_BL.mean()}
            level_L = models.unwrap(self.MODEL).level_L
            for k in range(len(self.geometry().scales)):
                at_k = level_L == k
                logs[f"scale/ce_s{k}"] = ce_BL[:, at_k].mean()
                logs[f"scale/acc_s{k}"] = correct_BL[:, at_k].mean()
        return logs


@register_generator(NextTokenTask)
class NextTokenGenerator(ModelGenerator):
    """One token per step with a KV cache, guidance ramped over the scales as in the next-scale AR.
    Editing teacher-forces the kept tokens; a regenerated token sees only the kept tokens before it."""

    build_model = staticmethod(NextTokenAR.for_quantizer)


NextTokenTask.generator_class = NextTokenGenerator

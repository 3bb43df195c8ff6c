"""Training task of MaskGIT: cross-entropy of the masked tokens of the pyramid given the unmasked ones.

The frozen tokenizer (`maskgit.tokenizer_path`) turns each batch into its token pyramid; per sample a
cosine-schedule fraction of the positions is masked (MaskGIT.training_mask) and the bidirectional
model predicts them; label dropout trains the unconditional branch for guidance. The module also
registers the family's Generator (iterative parallel decoding; zero-shot editing).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch
import torch.nn.functional as F

from mars_dist.engine.task import Models
from mars_dist.generation.generator import SamplingSettings
from mars_dist.generation.loaders import register_generator
from mars_dist.generation.model_generator import ModelGenerator
from mars_dist.generation.training import condition_labels
from mars_dist.models.generators.maskgit.config import MaskGITConfig
from mars_dist.models.generators.maskgit.model import MaskGIT
from mars_dist.tasks.registry import register_task
from mars_dist.tasks.shared.pyramid_task import PyramidSequenceTask


@dataclass
class MaskGITTaskConfig(MaskGITConfig):
    """The `maskgit:` section: the model's architecture and decoding defaults, the tokenizer, media."""

    tokenizer_path: str = ""  # exported tokenizer (model.safetensors + config.json) the model trains on
    media_notes: int = 4
    media_cfg_scale: float = 3.0
    media_top_p: float = 0.95


@register_task("maskgit", config=MaskGITTaskConfig)
class MaskGITTask(PyramidSequenceTask):
    """models: "maskgit" (trained) and "tokenizer" (frozen)."""

    MODEL = "maskgit"
    model_class = MaskGIT

    def micro_step(self, batch: Dict[str, Any], models: Models, step: int, backward) -> Dict[str, torch.Tensor]:
        idx_BL, x_BLC = self.targets(models, batch)
        masked_BL = models.unwrap(self.MODEL).training_mask(idx_BL.shape[0], idx_BL.device)
        logits_BLV = models[self.MODEL](condition_labels(batch), x_BLC, masked_BL)
        B, L, V = logits_BLV.shape
        ce_BL = F.cross_entropy(logits_BLV.float().view(B * L, V), idx_BL.view(B * L), reduction="none").view(B, L)
        weight_BL = masked_BL.float()
        loss = (ce_BL * weight_BL).sum() / weight_BL.sum()
        backward(self.MODEL, loss)
        with torch.no_grad():
            correct_BL = (logits_BLV.argmax(dim=-1) == idx_BL).float()
            logs = {"loss/ce": loss.detach(), "loss/acc": (correct_BL * weight_BL).sum() / weight_BL.sum(),
                    "loss/mask_ratio": weight_BL.mean()}
        return logs


@register_generator(MaskGITTask)
class MaskGITGenerator(ModelGenerator):
    """Iterative parallel decoding (cosine schedule, Gumbel-noised confidence re-masking, guidance ramped
    over the iterations). Editing is native: kept tokens are given and never masked."""

    build_model = staticmethod(MaskGIT.for_quantizer)

    def sampling_kwargs(self, settings: SamplingSettings) -> Dict[str, Any]:
        return {**super().sampling_kwargs(settings), "iterations": settings.iterations}

    def sequential_steps(self, settings: SamplingSettings) -> int:
        return self.model.sequential_steps(settings.iterations)


MaskGITTask.generator_class = MaskGITGenerator

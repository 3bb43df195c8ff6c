"""What the tasks of the families that model the token pyramid as one sequence (next-token AR,
MaskGIT) share: the frozen tokenizer that makes the targets, the model over its pyramid, AdamW on
the shared lr schedule, token and FLOP accounting, and media notes from the family's Generator.
A family's task says only how its loss is made from the targets (`micro_step`)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from mars_dist.audio.frontend import AudioFrontend
from mars_dist.engine import schedule as lr_schedule
from mars_dist.engine.optim import adamw_factory
from mars_dist.engine.task import Models, ModelSpec, Task
from mars_dist.generation.generator import SamplingSettings
from mars_dist.generation.training import log_generated_notes
from mars_dist.models.generators.trunk import code_vectors
from mars_dist.tasks.shared.frozen_tokenizer import load_frozen_tokenizer, tokenizer_geometry


class PyramidSequenceTask(Task):
    """models: MODEL (trained) and "tokenizer" (frozen). Subclasses set MODEL, `model_class` and
    `generator_class` (for media), and implement micro_step with `targets`."""

    MODEL = ""
    model_class: type = nn.Module  # an AdaLNTrunk family (mars_dist/models/generators/)
    generator_class: Optional[type] = None

    def __init__(self, cfg: Any, data_info: Dict[str, Any]):
        super().__init__(cfg, data_info)
        self._shape_model: Optional[nn.Module] = None

    @property
    def tokenizer_key(self) -> str:
        return f"{self.section}.tokenizer_path"

    def build_for(self, quantizer: nn.Module) -> nn.Module:
        """The family's model over `quantizer`'s scales and codebook."""
        return self.model_class.for_quantizer(self.settings, quantizer)

    def geometry(self) -> nn.Module:
        """A weightless (meta-device) model of the right shape: token counts and FLOPs before build_models."""
        if self._shape_model is None:
            g = tokenizer_geometry(self.settings.tokenizer_path, self.tokenizer_key)
            with torch.device("meta"):
                self._shape_model = self.model_class(self.settings, g.scales, g.codebook_size, g.codebook_dim)
        return self._shape_model

    def build_models(self) -> Dict[str, ModelSpec]:
        tokenizer = load_frozen_tokenizer(self.settings.tokenizer_path, self.tokenizer_key, self.data_info.get("cmx_shape"))
        return {
            self.MODEL: ModelSpec(self.build_for(tokenizer.quantizer), optimizer=adamw_factory(self.cfg.optim),
                                  lr_multiplier=lr_schedule.from_config(self.cfg)),
            "tokenizer": ModelSpec(tokenizer, optimizer=None),
        }

    @torch.no_grad()
    def targets(self, models: Models, batch: Dict[str, Any]) -> Tuple[torch.Tensor, torch.Tensor]:
        """(idx_BL, x_BLC): the batch's token pyramid in the model's sequence order, and the tokens'
        code vectors (the model's inputs), both from the frozen tokenizer."""
        tokenizer = models.unwrap("tokenizer")
        idx_BL = models.unwrap(self.MODEL).layout.flatten(tokenizer.encode(batch["cmx"]))
        return idx_BL, code_vectors(tokenizer.quantizer.codebook, idx_BL)

    def flops_per_sample(self) -> float:
        """The model's forward + backward matmul FLOPs (the frozen tokenizer's encode is not counted)."""
        return self.geometry().flops_per_sample(training=True)

    def tokens_per_sample(self) -> int:
        return self.geometry().num_tokens

    @torch.no_grad()
    def log_media(self, step: int, models: Models, batch: Dict[str, Any], out_dir) -> Dict[str, Any]:
        """Notes for the first `media_notes` label sets of `batch` (fixed seed) -> wav + PNG."""
        tokenizer = models.unwrap("tokenizer")
        settings = SamplingSettings(cfg_scale=self.settings.media_cfg_scale, top_p=self.settings.media_top_p)
        return log_generated_notes(models.unwrap(self.MODEL), lambda: self.build_for(tokenizer.quantizer),
                                   self.generator_class, tokenizer, AudioFrontend(self.cfg.audio), batch, out_dir,
                                   f"{self.MODEL}-step{step:08d}", settings, self.settings.media_notes,
                                   self.cfg.seed, step)

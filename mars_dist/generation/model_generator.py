"""A Generator around a generator model with the families' common sampling call.

Every model in mars_dist/models/generators/ samples with `generate(quantizer, labels, batch,
cfg_scale, top_k, top_p, temperature, generator, known=None, keep=None)` and returns the
tokenizer's token maps; `known`/`keep` give it tokens to keep (teacher-forced or, for MaskGIT,
never masked). So loading an export, sampling and editing are the same code for every family, and
a family's Generator only says how its model is built from the export's settings.
"""
from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn

from mars_dist.audio.frontend import AudioFrontend
from mars_dist.config import run_config_from_dict
from mars_dist.errors import UserValueError
from mars_dist.generation.generator import Generator, SamplingSettings, check_cpp_compiler


class ModelGenerator(Generator):
    """Subclasses implement `build_model(settings, quantizer)` (settings: the task's config section)."""

    def __init__(self, model: nn.Module, tokenizer: nn.Module, frontend: AudioFrontend, device: torch.device,
                 dtype: torch.dtype = torch.float32):
        super().__init__(tokenizer, frontend, device, dtype)
        self.model = model.to(device=device, dtype=dtype).eval()

    @staticmethod
    @abstractmethod
    def build_model(settings: Any, quantizer: nn.Module) -> nn.Module:
        """The family's model for an export's task settings over the tokenizer's quantizer."""

    @classmethod
    def from_export(cls, weights: Dict[str, torch.Tensor], config: Dict[str, Any], tokenizer, device: torch.device,
                    dtype: torch.dtype, path: Path) -> "ModelGenerator":
        from mars_dist.tasks.shared.exported import load_weights

        q = tokenizer.module.quantizer
        model = cls.build_model(run_config_from_dict(config["run_config"]).task_settings(), q)
        load_weights(model, weights, f"--model {path} does not fit the tokenizer (scales {q.scales}, codebook "
                                     f"{q.codebook_size} x {q.codebook_dim})")
        return cls(model, tokenizer.module, tokenizer.frontend, device, dtype)

    def sampling_kwargs(self, settings: SamplingSettings) -> Dict[str, Any]:
        """The model's generate() arguments for these settings (iterative families add theirs)."""
        return {"cfg_scale": settings.cfg_scale, "top_k": settings.top_k, "top_p": settings.top_p,
                "temperature": settings.temperature}

    def tokens(self, labels: Mapping[str, torch.Tensor], batch: int, settings: SamplingSettings,
               generator: Optional[torch.Generator]) -> List[torch.Tensor]:
        return self.model.generate(self.tokenizer.quantizer, labels, batch, generator=generator,
                                   **self.sampling_kwargs(settings))

    def edit(self, idx_list: Sequence[torch.Tensor], keep_masks: Sequence[torch.Tensor],
             labels: Mapping[str, torch.Tensor], settings: SamplingSettings,
             generator: Optional[torch.Generator]) -> List[torch.Tensor]:
        scales = self.tokenizer.quantizer.scales
        shapes = [tuple(t.shape[1:]) for t in idx_list]
        if shapes != [tuple(s) for s in scales] or [tuple(m.shape) for m in keep_masks] != [tuple(t.shape) for t in idx_list]:
            raise UserValueError(f"edit: token maps {[tuple(t.shape) for t in idx_list]} and keep masks "
                                 f"{[tuple(m.shape) for m in keep_masks]} must both be [B, h, w] for the scales {scales}")
        batch = idx_list[0].shape[0]
        return self.model.generate(self.tokenizer.quantizer, labels, batch, generator=generator,
                                   known=[t.to(self.device) for t in idx_list],
                                   keep=[m.to(self.device, torch.bool) for m in keep_masks],
                                   **self.sampling_kwargs(settings))

    def sequential_steps(self, settings: SamplingSettings) -> int:
        return self.model.sequential_steps()

    def compile(self) -> "ModelGenerator":
        if self.device.type == "cpu":
            check_cpp_compiler("--compile")
        self.model.compile_stages()
        return self

    def int8(self) -> "ModelGenerator":
        super().int8()
        self.model.quantize_int8()
        return self


"""Randomly initialised generators of any family at a size preset, for the benchmarks (timing does
not depend on the weights' values), over the tokenizer config each preset is used with."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from mars_dist.audio.config import AudioConfig
from mars_dist.audio.frontend import AudioFrontend
from mars_dist.config import load_config
from mars_dist.generation.generator import FamilyGenerator
from mars_dist.models.generators.family import GeneratorFamily, TokenGeometry
from mars_dist.models.tokenizer.model import SpectrogramTokenizer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TOKENIZER_OF_PRESET = {"tiny": "tiny", "small": "small"}  # every other preset: the paper tokenizer


def tokenizer_config_for(preset: str):
    """The tokenizer settings a preset is used with (configs/tokenizer/{tiny,small,paper}.yaml)."""
    return tokenizer_config(TOKENIZER_OF_PRESET.get(preset, "paper"))


def tokenizer_config(name: str):
    path = CONFIGS / "tokenizer" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the benchmark reads the repository's tokenizer configs")
    return load_config(path).tokenizer


def random_generator(family: GeneratorFamily, preset: str, audio_cfg: AudioConfig, dtype: torch.dtype,
                     device: torch.device, tokenizer: Optional[SpectrogramTokenizer] = None) -> FamilyGenerator:
    """A randomly initialised generator of `family` at `preset` over the preset's tokenizer (or the
    given one, so the families of a comparison share one)."""
    frontend = AudioFrontend(audio_cfg)
    if tokenizer is None:
        tokenizer = SpectrogramTokenizer(tokenizer_config_for(preset), frontend.cmx_shape)
    model = family.build(family.preset(preset), TokenGeometry.of(tokenizer.quantizer))
    return FamilyGenerator(family, model, tokenizer, frontend, device, dtype)

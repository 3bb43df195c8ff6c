"""The generator families as the benchmarks build them: model class, architecture dataclass,
Generator and task of each, the tokenizer config a preset is used with, and randomly initialised
generators (timing does not depend on the weights' values)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from mars_dist.audio.config import AudioConfig
from mars_dist.audio.frontend import AudioFrontend
from mars_dist.config import load_config
from mars_dist.generation.generator import Generator
from mars_dist.models.generators.maskgit.config import MaskGITConfig
from mars_dist.models.generators.maskgit.model import MaskGIT
from mars_dist.models.generators.next_scale.config import NextScaleConfig, preset
from mars_dist.models.generators.next_scale.model import NextScaleAR
from mars_dist.models.generators.next_token.config import NextTokenConfig
from mars_dist.models.generators.next_token.model import NextTokenAR
from mars_dist.models.tokenizer.model import SpectrogramTokenizer
from mars_dist.tasks.ar import NextScaleGenerator
from mars_dist.tasks.maskgit import MaskGITGenerator
from mars_dist.tasks.next_token import NextTokenGenerator

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TOKENIZER_OF_PRESET = {"tiny": "tiny", "small": "small"}  # every other preset: the paper tokenizer
# family -> (model class, its architecture dataclass, its Generator, its task)
FAMILIES = {
    "next_scale": (NextScaleAR, NextScaleConfig, NextScaleGenerator, "ar"),
    "next_token": (NextTokenAR, NextTokenConfig, NextTokenGenerator, "next_token"),
    "maskgit": (MaskGIT, MaskGITConfig, MaskGITGenerator, "maskgit"),
}


def tokenizer_config_for(preset: str):
    """The tokenizer settings a preset is used with (configs/tokenizer/{tiny,small,paper}.yaml)."""
    return tokenizer_config(TOKENIZER_OF_PRESET.get(preset, "paper"))


def tokenizer_config(name: str):
    path = CONFIGS / "tokenizer" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the benchmark reads the repository's tokenizer configs")
    return load_config(path).tokenizer


def build_generator(preset_name: str, audio_cfg: AudioConfig, dtype: torch.dtype, device: torch.device,
                    family: str = "next_scale", tokenizer: Optional[SpectrogramTokenizer] = None) -> Generator:
    """A randomly initialised generator of `family` at `preset_name` over the preset's tokenizer
    (or the given one, so the families of a comparison share one)."""
    model_class, config_class, generator_class, _ = FAMILIES[family]
    frontend = AudioFrontend(audio_cfg)
    if tokenizer is None:
        tokenizer = SpectrogramTokenizer(tokenizer_config_for(preset_name), frontend.cmx_shape)
    model = model_class.for_quantizer(preset(config_class, preset_name), tokenizer.quantizer)
    return generator_class(model, tokenizer, frontend, device, dtype)

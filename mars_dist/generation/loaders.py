"""Exported tokenizers and generators, loaded for inference through mars_dist/models/builders.py.

An export names its builder (the tokenizer, or a generator family) and stores its architecture;
nothing of the training run is rebuilt. A generator is always rebuilt around the tokenizer it is
GIVEN (not the path it was trained with), so exports can be moved; its weights must then fit that
tokenizer's scales and codebook, or the error says how they differ.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

from mars_dist.audio.config import AudioConfig
from mars_dist.audio.frontend import AudioFrontend
from mars_dist.errors import UserValueError
from mars_dist.generation.generator import FamilyGenerator
from mars_dist.io.exports import read_export, read_export_config
from mars_dist.io.structured import from_dict
from mars_dist.models.builders import build_model, load_model, load_weights
from mars_dist.models.generators.family import FamilyNameError, GeneratorFamily, TokenGeometry, family


@dataclass
class ExportedTokenizer:
    module: nn.Module        # SpectrogramTokenizer on CPU, eval mode
    config: Dict[str, Any]   # the export's config.json (current format)
    frontend: AudioFrontend  # the audio settings it was trained with


def export_audio(config: Dict[str, Any], path: Path) -> AudioConfig:
    """The audio settings an export stores, typed and checked."""
    return from_dict(AudioConfig, config["audio"], f"{path}/config.json audio")


def load_tokenizer(path: Path) -> ExportedTokenizer:
    """An exported tokenizer (the tokenizer task's `tokenizer_ema` or `tokenizer` model)."""
    path = Path(path)
    module, config = load_model(path, expected=("tokenizer",), what="--tokenizer",
                                hint="the tokenizer task's run exports its tokenizer_ema to RUN_DIR/export")
    return ExportedTokenizer(module, config, AudioFrontend(export_audio(config, path)))


def family_of_export(path: Path) -> Optional[GeneratorFamily]:
    """The generator family an export's builder names (None when it is not a generator)."""
    try:
        return family(read_export_config(Path(path))["builder"])
    except FamilyNameError:
        return None


def load_generator(path: Path, tokenizer: ExportedTokenizer, device: torch.device, dtype: torch.dtype = torch.float32,
                   compile: bool = False, int8: bool = False) -> FamilyGenerator:
    """The Generator of an exported generator model, around `tokenizer`, on `device`; with `int8`, its
    matmuls run in int8 (Generator.int8, --int8); with `compile`, through torch.compile (--compile)."""
    path = Path(path)
    weights, config = read_export(path)
    spec = family_of_export(path)
    if spec is None:
        raise UserValueError(f"--model {path}: exports a {config['builder']} model ({config['task']}/{config['model']}), "
                             f"not a generator")
    q = tokenizer.module.quantizer
    model = build_model(spec.key, config["architecture"], TokenGeometry.of(q).to_dict(), f"{path}/config.json")
    load_weights(model, weights, f"--model {path} does not fit the tokenizer (scales {q.scales}, codebook "
                                 f"{q.codebook_size} x {q.codebook_dim})")
    gen = FamilyGenerator(spec, model, tokenizer.module, tokenizer.frontend, device, dtype)
    if int8:
        gen.int8()
    return gen.compile() if compile else gen

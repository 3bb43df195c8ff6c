"""The exported tokenizer every generator task trains on: checked and frozen.

A generator task names the export in its `tokenizer_path` setting. Its geometry (scale schedule,
codebook) comes from the export's config.json alone, so a task can size its model (FLOPs, token
counts) before any weights are read; the weights are loaded once, when the models are built.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from torch import nn

from mars_dist.errors import UserFileNotFoundError, UserValueError
from mars_dist.generation.loaders import load_tokenizer
from mars_dist.io.exports import ExportSpec, read_export_config
from mars_dist.models.generators.family import TokenGeometry

TOKENIZER_MODEL = "tokenizer"  # the frozen tokenizer's name among a generator task's models


def check_tokenizer_path(path: str, key: str) -> Path:
    if not path:
        raise UserValueError(f"{key} is empty: point it at an exported tokenizer folder (mars-export, or the tokenizer "
                             "run's export/ folder)")
    if not Path(path).is_dir():
        raise UserFileNotFoundError(f"{key}={path!r}: no such folder (expected model.safetensors + config.json)")
    return Path(path)


def tokenizer_config(path: str, key: str) -> Dict[str, Any]:
    """The config.json of the tokenizer export `key` names, checked to be a tokenizer."""
    config = read_export_config(check_tokenizer_path(path, key))
    if config["builder"] != "tokenizer":
        raise UserValueError(f"{key}={path!r}: exports a {config['builder']} model ({config['task']}/{config['model']}), "
                             "expected a tokenizer (export the tokenizer task's tokenizer_ema model)")
    return config


def tokenizer_geometry(path: str, key: str) -> TokenGeometry:
    """Scales and codebook of an exported tokenizer, from its config.json (no weights read)."""
    arch = tokenizer_config(path, key)["architecture"]
    return TokenGeometry.from_dict({"scales": arch["scales"], "codebook_size": arch["codebook_size"],
                                    "codebook_dim": arch["codebook_dim"]})


def tokenizer_export_spec(path: str, key: str) -> ExportSpec:
    """How the frozen tokenizer is rebuilt: as its own export says."""
    config = tokenizer_config(path, key)
    return ExportSpec(config["builder"], config["architecture"], config["inputs"])


def load_frozen_tokenizer(path: str, key: str, cmx_shape: Optional[Sequence[int]]) -> nn.Module:
    """The exported tokenizer, checked against the data's CMX shape (None: not checked)."""
    tokenizer_config(path, key)
    tokenizer = load_tokenizer(Path(path)).module
    if cmx_shape is not None and tuple(tokenizer.in_shape) != tuple(cmx_shape):
        raise UserValueError(f"{key}={path!r} was trained on CMX {tuple(tokenizer.in_shape)}, the shards hold "
                             f"{tuple(cmx_shape)}")
    return tokenizer

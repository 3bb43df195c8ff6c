"""The exported tokenizer every generator task trains on: checked and frozen.

A generator task names the export in its `tokenizer_path` setting. Its geometry (scale schedule,
codebook) comes from the export's config.json alone, so a task can size its model (FLOPs, token
counts) before any weights are read; the weights are loaded once, when the models are built.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from torch import nn

from mars_dist.errors import UserFileNotFoundError, UserValueError
from mars_dist.io.exports import read_export_config


@dataclass(frozen=True)
class TokenizerGeometry:
    scales: List[Tuple[int, int]]
    codebook_size: int
    codebook_dim: int


def check_tokenizer_path(path: str, key: str) -> Path:
    if not path:
        raise UserValueError(f"{key} is empty: point it at an exported tokenizer folder (python -m mars_dist.export)")
    if not Path(path).is_dir():
        raise UserFileNotFoundError(f"{key}={path!r}: no such folder (expected model.safetensors + config.json)")
    return Path(path)


def tokenizer_geometry(path: str, key: str) -> TokenizerGeometry:
    """Scales and codebook of an exported tokenizer, from its config.json (no weights read)."""
    tok = read_export_config(check_tokenizer_path(path, key))["run_config"]["tokenizer"]
    return TokenizerGeometry([tuple(s) for s in tok["scales"]], int(tok["codebook_size"]), int(tok["codebook_dim"]))


def load_frozen_tokenizer(path: str, key: str, cmx_shape: Optional[Sequence[int]]) -> nn.Module:
    """The exported tokenizer, checked against the data's CMX shape (None: not checked)."""
    from mars_dist.generation.loaders import load_tokenizer

    tokenizer = load_tokenizer(check_tokenizer_path(path, key)).module
    if cmx_shape is not None and tuple(tokenizer.in_shape) != tuple(cmx_shape):
        raise UserValueError(f"{key}={path!r} was trained on CMX {tuple(tokenizer.in_shape)}, the shards hold "
                             f"{tuple(cmx_shape)}")
    return tokenizer


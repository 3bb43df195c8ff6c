"""The export format: one model's consolidated fp32 weights + what rebuilds it, and nothing of training.

    EXPORT/model.safetensors    the weights (safetensors: no code runs when loading untrusted files)
    EXPORT/config.json          written last, so its presence means the export is complete:
        format        "mars_dist.export/3"
        builder       which builder rebuilds the module: "tokenizer", "patchgan", "classifier", a
                      generator family ("next_scale", ..., or "package.module:NAME")
        architecture  the builder's architecture dataclass, as a dict
        inputs        what the builder needs besides it (CMX shape, spectrogram shape, the token
                      geometry a generator was trained on)
        audio         the audio settings of the run (the front-end inference decodes with)
        model, task, step, checkpoint, backend, shapes, num_parameters, data_info: provenance

Loading needs only this file: mars_dist/models/builders.py turns (builder, architecture, inputs)
into the module, so sampling, editing, encoding and evaluation never rebuild a training run.
Older formats are upgraded on reading (mars_dist/io/export_migrations.py); anything else names the
formats it reads.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from safetensors.torch import load_file, save_file

from mars_dist.errors import UserFileNotFoundError
from mars_dist.io.atomic import atomic_write, atomic_write_text
from mars_dist.io.export_migrations import CURRENT_FORMAT, READABLE_FORMATS, ExportError, upgrade

WEIGHTS_FILE = "model.safetensors"
CONFIG_JSON = "config.json"
EXPORT_FORMAT = CURRENT_FORMAT
__all__ = ["CONFIG_JSON", "EXPORT_FORMAT", "ExportError", "ExportSpec", "WEIGHTS_FILE", "read_export",
           "read_export_config", "write_export"]


@dataclass(frozen=True)
class ExportSpec:
    """How a task's model is rebuilt from an export: the builder key, its architecture (a plain dict
    of the builder's dataclass) and the builder's other inputs."""

    builder: str
    architecture: Dict[str, Any]
    inputs: Dict[str, Any] = field(default_factory=dict)


def write_export(out_dir: Path, weights: Dict[str, torch.Tensor], spec: ExportSpec, audio: Dict[str, Any],
                 provenance: Dict[str, Any]) -> Path:
    """Weights first, config.json last (each atomic): a reader never sees a half-written export."""
    out_dir = Path(out_dir)
    atomic_write(out_dir / WEIGHTS_FILE, lambda tmp: save_file({k: v.contiguous() for k, v in weights.items()}, tmp))
    config = {"format": EXPORT_FORMAT, "builder": spec.builder, "architecture": spec.architecture,
              "inputs": spec.inputs, "audio": audio, **provenance,
              "shapes": {k: list(v.shape) for k, v in weights.items()},
              "num_parameters": sum(v.numel() for v in weights.values())}
    atomic_write_text(out_dir / CONFIG_JSON, json.dumps(config, indent=1))
    return out_dir


def read_export_config(path: Path) -> Dict[str, Any]:
    """config.json of a finished export (format checked, older formats upgraded), without the weights."""
    path = Path(path)
    config_path = path / CONFIG_JSON
    if not path.is_dir():
        raise UserFileNotFoundError(f"{path}: no such export folder (expected {WEIGHTS_FILE} + {CONFIG_JSON}, "
                                    "written by mars-export or a run's export stage)")
    if not config_path.is_file():
        raise ExportError(f"{path}: no {CONFIG_JSON}; not a finished mars_dist export")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ExportError(f"{config_path}: not valid JSON ({err})") from None
    if not isinstance(config, dict) or config.get("format") not in READABLE_FORMATS:
        found = config.get("format") if isinstance(config, dict) else None
        raise ExportError(f"{config_path}: export format {found!r}; this mars_dist reads "
                          f"{', '.join(READABLE_FORMATS)} (re-export the checkpoint with mars-export)")
    return upgrade(config, str(config_path))


def read_export(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(fp32 state dict on CPU, config dict) of an export folder."""
    config = read_export_config(path)
    weights_path = Path(path) / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ExportError(f"{path}: {CONFIG_JSON} but no {WEIGHTS_FILE}; the export is damaged, re-export it")
    return load_file(str(weights_path), device="cpu"), config

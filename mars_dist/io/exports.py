"""The export format: one model's consolidated fp32 weights + the config that rebuilds it.

    EXPORT/model.safetensors    the weights (safetensors: no code runs when loading untrusted files)
    EXPORT/config.json          format, task, model name, step, data_info, the resolved run config;
                                written last, so its presence means the export is complete

`mars_dist.export` writes exports from checkpoints; tasks, generation, evaluation and encoding
read them through `read_export`. Exports of format 1 (run configs from before tasks owned their
settings) are upgraded on reading; anything else names the format it expected.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from safetensors.torch import load_file, save_file

from mars_dist.errors import UserFileNotFoundError, UserValueError
from mars_dist.io.atomic import atomic_write, atomic_write_text

WEIGHTS_FILE = "model.safetensors"
CONFIG_JSON = "config.json"
EXPORT_FORMAT = "mars_dist.export/2"
READABLE_FORMATS = ("mars_dist.export/1", EXPORT_FORMAT)


class ExportError(UserValueError):
    """A folder that is not a finished export of a readable format."""


def write_export(out_dir: Path, weights: Dict[str, torch.Tensor], config: Dict[str, Any]) -> Path:
    """Weights first, config.json last (each atomic): a reader never sees a half-written export."""
    out_dir = Path(out_dir)
    atomic_write(out_dir / WEIGHTS_FILE, lambda tmp: save_file({k: v.contiguous() for k, v in weights.items()}, tmp))
    atomic_write_text(out_dir / CONFIG_JSON, json.dumps({"format": EXPORT_FORMAT, **config}, indent=1))
    return out_dir


def read_export_config(path: Path) -> Dict[str, Any]:
    """config.json of a finished export (format checked, format 1 upgraded), without the weights."""
    path = Path(path)
    config_path = path / CONFIG_JSON
    if not path.is_dir():
        raise UserFileNotFoundError(f"{path}: no such export folder (expected {WEIGHTS_FILE} + {CONFIG_JSON}, "
                                    "written by python -m mars_dist.export)")
    if not config_path.is_file():
        raise ExportError(f"{path}: no {CONFIG_JSON}; not a finished mars_dist export")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ExportError(f"{config_path}: not valid JSON ({err})") from None
    if config.get("format") not in READABLE_FORMATS:
        raise ExportError(f"{config_path}: export format {config.get('format')!r}; this mars_dist reads "
                          f"{' and '.join(READABLE_FORMATS)} (re-export the checkpoint with python -m mars_dist.export)")
    if config["format"] != EXPORT_FORMAT:
        config = {**config, "format": EXPORT_FORMAT, "run_config": upgrade_run_config(config["run_config"])}
    return config


def read_export(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(fp32 state dict on CPU, config dict) of an export folder."""
    config = read_export_config(path)
    weights_path = Path(path) / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ExportError(f"{path}: {CONFIG_JSON} but no {WEIGHTS_FILE}; the export is damaged, re-export it")
    return load_file(str(weights_path), device="cpu"), config


def upgrade_run_config(values: Dict[str, Any]) -> Dict[str, Any]:
    """A run config stored before tasks owned their settings (exports of format 1, and checkpoints of
    that time) -> today's layout: only the task's own section is kept, and the discriminator's lr
    moves from optim.disc_lr to tokenizer.disc.lr. A current config is returned unchanged."""
    if "disc_lr" not in values.get("optim", {}):
        return values
    upgraded = copy.deepcopy(values)
    disc_lr = upgraded["optim"].pop("disc_lr")
    task = upgraded.get("task", "tokenizer")
    for section in ("tokenizer", "ar"):
        if section != task:
            upgraded.pop(section, None)
    if task == "tokenizer":
        upgraded.setdefault("tokenizer", {}).setdefault("disc", {})["lr"] = disc_lr
    return upgraded

"""Rebuild an exported model through the task that trained it (its registered Task builds the module)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from torch import nn

from mars_dist.config import run_config_from_dict
from mars_dist.io.exports import ExportError, read_export
from mars_dist.tasks.registry import resolve


def task_of_export(config: Dict[str, Any]):
    """The Task instance (config and data info as at export time) behind an export's config.json."""
    cfg = run_config_from_dict(config["run_config"])
    return resolve(cfg.task).task_class(cfg, config["data_info"])


def load_weights(module: nn.Module, weights: Dict[str, torch.Tensor], what: str) -> nn.Module:
    """module.load_state_dict(weights), or an ExportError naming the parameters that do not fit."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    mismatched = {k: (tuple(v.shape), expected[k]) for k, v in weights.items()
                  if k in expected and tuple(v.shape) != expected[k]}
    missing, unexpected = sorted(expected.keys() - weights.keys()), sorted(weights.keys() - expected.keys())
    if mismatched or missing or unexpected:
        raise ExportError(f"{what}: (saved, expected) shapes {dict(list(mismatched.items())[:4])}, "
                          f"missing {missing[:4]}, unexpected {unexpected[:4]}")
    module.load_state_dict(weights)
    return module


def load_exported(path: Path) -> Tuple[nn.Module, Dict[str, Any]]:
    """(the exported model on CPU in eval mode, the export's config); only that one model is built."""
    weights, config = read_export(path)
    module = task_of_export(config).build_model(config["model"])
    what = f"{path}: the weights do not fit the {config['task']}/{config['model']} model its config describes"
    return load_weights(module, weights, what).eval(), config

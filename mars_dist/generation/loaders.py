"""Exported tokenizers and generators, loaded by the task that trained them.

`load_generator(model_dir, tokenizer)` reads the export's task and hands it to the Generator class
that task's module registered (`@register_generator("ar")`), so sampling, evaluation and the
benchmarks work with every generator family without knowing them. A generator is always rebuilt
around the tokenizer it is GIVEN (not the path it was trained with), so exports can be moved; its
weights must then fit that tokenizer's scales and codebook, or the error says how they differ.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict

import torch
from torch import nn

from mars_dist.audio.frontend import AudioFrontend
from mars_dist.config import run_config_from_dict
from mars_dist.errors import UserValueError
from mars_dist.io.exports import read_export, read_export_config

_GENERATORS: Dict[str, type] = {}


def register_generator(task_class: type) -> Callable[[type], type]:
    """Class decorator for a Generator subclass that loads the exports of the (registered) `task_class`."""
    def decorate(cls: type) -> type:
        cls.task = task_class.task_name
        _GENERATORS[task_class.task_name] = cls
        return cls

    return decorate


@dataclass
class ExportedTokenizer:
    module: nn.Module        # SpectrogramTokenizer on CPU, eval mode
    config: Dict[str, Any]   # the export's config.json
    frontend: AudioFrontend  # the audio settings it was trained with


def load_tokenizer(path: Path) -> ExportedTokenizer:
    """An exported tokenizer (the tokenizer task's `tokenizer_ema` or `tokenizer` model)."""
    from mars_dist.tasks.shared.exported import load_exported

    module, config = load_exported(Path(path))
    if not hasattr(module, "quantizer") or not hasattr(module, "decode_indices"):
        raise UserValueError(f"{path}: exports {config['task']}/{config['model']} ({type(module).__name__}), "
                             "expected a tokenizer (export the tokenizer task's tokenizer_ema model)")
    return ExportedTokenizer(module, config, AudioFrontend(run_config_from_dict(config["run_config"]).audio))


def load_generator(path: Path, tokenizer: ExportedTokenizer, device: torch.device, dtype: torch.dtype = torch.float32,
                   compile: bool = False, int8: bool = False):
    """The Generator for an exported generator model, around `tokenizer`, on `device`; with `int8`, its
    transformer and decoder matmuls run in int8 (Generator.int8, --int8); with `compile`, its
    transformer runs through torch.compile (Generator.compile, the commands' --compile)."""
    from mars_dist.tasks.registry import resolve

    path = Path(path)
    config = read_export_config(path)
    entry = resolve(config["run_config"]["task"])
    cls = _GENERATORS.get(entry.name)
    if cls is None:
        raise UserValueError(f"{path}: exported from the {entry.name!r} task, which is not a generator "
                             f"(generator tasks: {', '.join(generator_tasks())})")
    weights, config = read_export(path)
    gen = cls.from_export(weights, config, tokenizer, device, dtype, path)
    if int8:
        gen.int8()
    return gen.compile() if compile else gen


def generator_tasks() -> list:
    """Every built-in task with a Generator (imports the task modules to let them register)."""
    from mars_dist.tasks.registry import builtin_names, resolve

    for name in builtin_names():
        resolve(name)
    return sorted(_GENERATORS)

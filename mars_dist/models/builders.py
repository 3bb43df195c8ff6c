"""From an export's (builder, architecture, inputs) to the module, and its weights into it.

The one place that knows how every exportable model is constructed: the tokenizer, its PatchGAN
discriminator, the evaluation's note classifier, and every generator family (through its spec,
mars_dist/models/generators/family.py). Loading for sampling, editing, encoding and evaluation goes
through here, so inference never rebuilds a training task (as audiocraft's loaders/builders).
A builder defined outside the package registers itself with `register_builder("module:NAME", ...)`
in its module; an export naming that key imports the module.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from mars_dist.errors import UserValueError
from mars_dist.io.exports import ExportError, read_export
from mars_dist.io.structured import from_dict
from mars_dist.models.classifier.config import ClassifierConfig
from mars_dist.models.classifier.model import NoteClassifier
from mars_dist.models.generators.family import FamilyNameError, TokenGeometry, family
from mars_dist.models.tokenizer.config import DiscriminatorConfig, TokenizerConfig
from mars_dist.models.tokenizer.model import SpectrogramTokenizer
from mars_dist.models.tokenizer.patchgan import PatchGANDiscriminator


@dataclass(frozen=True)
class Builder:
    key: str
    config_class: type  # the architecture dataclass
    build: Callable[[Any, Mapping[str, Any]], nn.Module]  # (architecture, inputs) -> module


_BUILDERS: Dict[str, Builder] = {}


def register_builder(key: str, config_class: type, build: Callable[[Any, Mapping[str, Any]], nn.Module]) -> None:
    _BUILDERS[key] = Builder(key, config_class, build)


register_builder("tokenizer", TokenizerConfig, lambda cfg, inputs: SpectrogramTokenizer(cfg, inputs["cmx_shape"]))
register_builder("patchgan", DiscriminatorConfig, lambda cfg, inputs: PatchGANDiscriminator(int(inputs["in_channels"]), cfg))
register_builder("classifier", ClassifierConfig, lambda cfg, inputs: NoteClassifier(cfg, tuple(inputs["spec_shape"])))


def builder(key: str) -> Builder:
    """The builder of `key`: a model above, a generator family, or one registered by `package.module`."""
    if key in _BUILDERS:
        return _BUILDERS[key]
    module, outside, _ = key.partition(":")
    if outside:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name is None or not module.startswith(err.name):
                raise
            raise UserValueError(f"builder {key!r}: no module {module}") from None
        if key in _BUILDERS:
            return _BUILDERS[key]
    try:
        spec = family(key)
    except FamilyNameError as err:
        raise UserValueError(f"builder {key!r}: not one of {', '.join(_BUILDERS)} and not a generator family "
                             f"({err})") from None
    return Builder(key, spec.config_class, lambda cfg, inputs: spec.build(cfg, TokenGeometry.from_dict(inputs)))


def architecture(key: str, values: Mapping[str, Any], where: str) -> Any:
    """The builder's architecture dataclass from a stored dict, checked (unknown keys, types, validate())."""
    return from_dict(builder(key).config_class, dict(values), f"{where} architecture")


def build_model(key: str, values: Mapping[str, Any], inputs: Mapping[str, Any], where: str) -> nn.Module:
    return builder(key).build(architecture(key, values, where), inputs)


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


def load_model(path: Path, expected: Optional[Sequence[str]] = None, what: str = "",
               hint: str = "") -> Tuple[nn.Module, Dict[str, Any]]:
    """(the exported module on CPU in eval mode, the export's config). `expected`: the builders the
    caller can use (anything else is a user error saying what the folder holds, and `hint`: how to
    get the right one)."""
    weights, config = read_export(Path(path))
    key = config["builder"]
    if expected is not None and key not in expected:
        raise UserValueError(f"{what or path}: {path} exports a {key} model ({config['task']}/{config['model']}), "
                             f"expected {' or '.join(expected)}{f' ({hint})' if hint else ''}")
    module = build_model(key, config["architecture"], config["inputs"], f"{path}/config.json")
    load_weights(module, weights, f"{path}: the weights do not fit the {key} model its config.json describes")
    return module.eval(), config

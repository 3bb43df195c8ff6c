"""A generator family as ONE spec, declared beside its model, and the one registry of families.

A family is everything the rest of mars_dist needs to train, export, load, sample, edit and
benchmark a generator over the tokenizer's token maps (in the spirit of torchtitan's TrainSpec):

- `model_class` and `config_class` (its architecture dataclass; the run config's section of the
  family's name holds it, and an export stores it);
- `presets`: named sizes (`preset(name)` -> the architecture at that size);
- `build(config, geometry)`: the model over a tokenizer's scales and codebook;
- `loss(net, model, tokens)`: the training objective on a batch of token maps;
- `options_class`: its sampling options (a SamplingOptions subclass: command-line flags are made
  from it) and `sample(...)`, which also edits when `can_edit` (kept tokens given);
- accounting (sequential passes, FLOPs) and the optional speed-ups (compile, int8) its model offers.

The generic generator task (mars_dist/tasks/generator.py), the loaders (mars_dist/generation/),
the export builders (mars_dist/models/builders.py) and the benchmarks read only this spec, so adding
a family is a spec module, a model module and its configs. Built-in families live in
mars_dist/models/generators/<name>/family.py and are named by <name>; a family defined elsewhere is
named `package.module:NAME` (the module that registers it, and its `name`), as run configs and
exports write it. Families listed in the environment variable MARS_DIST_FAMILIES (comma-separated
such names) are known to every command's --help and to the benchmarks' defaults.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from mars_dist.errors import UserValueError
from mars_dist.models.generators.options import SamplingOptions
from mars_dist.models.generators.presets import TRUNK_PRESETS

BUILTIN_PACKAGE = "mars_dist.models.generators"
SPEC_MODULE = "family"
EXTRA_FAMILIES_ENV = "MARS_DIST_FAMILIES"


class FamilyNameError(UserValueError):
    """A name that no registered generator family has; the message lists the known ones."""


@dataclass(frozen=True)
class TokenGeometry:
    """What a generator must know of its tokenizer: the scales of its token maps and its codebook."""

    scales: Tuple[Tuple[int, int], ...]
    codebook_size: int
    codebook_dim: int

    @classmethod
    def of(cls, quantizer: Any) -> "TokenGeometry":
        return cls(tuple((int(h), int(w)) for h, w in quantizer.scales), int(quantizer.codebook_size),
                   int(quantizer.codebook_dim))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TokenGeometry":
        return cls(tuple((int(h), int(w)) for h, w in values["scales"]), int(values["codebook_size"]),
                   int(values["codebook_dim"]))

    def to_dict(self) -> Dict[str, Any]:
        return {"scales": [list(s) for s in self.scales], "codebook_size": self.codebook_size,
                "codebook_dim": self.codebook_dim}


@dataclass
class TokenBatch:
    """A training batch as a generator sees it: the frozen tokenizer's token maps (one LongTensor
    [B, h_k, w_k] per scale), the labels it conditions on, and the quantizer that made them."""

    idx_list: List[torch.Tensor]
    labels: Dict[str, torch.Tensor]
    quantizer: nn.Module


class GeneratorFamily(ABC):
    """The spec a family module subclasses (and registers with `@register_family`).

    Subclasses set the class attributes and implement `loss`; the defaults below fit a model that
    follows the families' common calls (`Model(config, scales, codebook_size, codebook_dim)`,
    `generate(quantizer, labels, batch, generator=, known=, keep=, **options)`,
    `sequential_steps()`, `flops_per_sample(training)`, `num_tokens`)."""

    name: str = ""
    description: str = ""
    model_class: type = nn.Module
    config_class: type = object
    options_class: type = SamplingOptions
    presets: Mapping[str, Mapping[str, Any]] = TRUNK_PRESETS
    can_edit: bool = True
    key: str = ""  # how run configs and exports name it (set by register_family)

    # --- building --------------------------------------------------------------------------------
    def preset(self, name: str, **overrides: Any) -> Any:
        """The architecture at preset size `name` (overrides win)."""
        if name not in self.presets:
            raise UserValueError(f"preset {name!r} of the {self.key} family: expected one of {', '.join(self.presets)}")
        return replace(self.config_class(), **{**self.presets[name], **overrides})

    def build(self, config: Any, geometry: TokenGeometry) -> nn.Module:
        """The model for `config` over a tokenizer's token maps."""
        return self.model_class(config, [list(s) for s in geometry.scales], geometry.codebook_size, geometry.codebook_dim)

    # --- training --------------------------------------------------------------------------------
    @abstractmethod
    def loss(self, net: nn.Module, model: nn.Module, tokens: TokenBatch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """(the micro-batch's mean loss, detached figures to log) for `tokens`. Call `net` (the
        backend's wrapped model) for forward passes; read attributes from `model` (the plain one)."""

    # --- sampling --------------------------------------------------------------------------------
    def default_options(self, **values: Any) -> SamplingOptions:
        return self.options_class(**values)

    def sample(self, model: nn.Module, quantizer: nn.Module, labels: Mapping[str, torch.Tensor], batch: int,
               options: SamplingOptions, generator: Optional[torch.Generator],
               known: Optional[Sequence[torch.Tensor]] = None,
               keep: Optional[Sequence[torch.Tensor]] = None) -> List[torch.Tensor]:
        """Token maps (one [batch, h_k, w_k] per scale) for these labels; with `known`/`keep` (editing),
        the tokens where `keep` is True are given rather than drawn."""
        return model.generate(quantizer, labels, batch, generator=generator, known=known, keep=keep,
                              **options.sampler_kwargs())

    def sequential_steps(self, model: nn.Module, options: SamplingOptions) -> int:
        """Forward passes per note that must run one after the other (0 = the model does not say)."""
        steps = getattr(model, "sequential_steps", None)
        return int(steps()) if callable(steps) else 0

    # --- accounting and speed-ups ----------------------------------------------------------------
    def flops_per_sample(self, model: nn.Module, training: bool) -> float:
        flops = getattr(model, "flops_per_sample", None)
        return float(flops(training=training)) if callable(flops) else 0.0

    def tokens_per_sample(self, model: nn.Module) -> int:
        return int(getattr(model, "num_tokens", 0))

    def compile(self, model: nn.Module) -> None:
        """Runs the model's tensor code through torch.compile (the trunk's compiled stages)."""
        stages = getattr(model, "compile_stages", None)
        if not callable(stages):
            raise UserValueError(f"--compile: the {self.key} family has no compiled sampler")
        stages()

    def quantize_int8(self, model: nn.Module) -> None:
        """Int8 matmuls in the model's per-token layers (the trunk's quantize_int8)."""
        quantize = getattr(model, "quantize_int8", None)
        if not callable(quantize):
            raise UserValueError(f"--int8: the {self.key} family has no int8 sampler")
        quantize()


_FAMILIES: Dict[str, GeneratorFamily] = {}


def _key(name: str, module: str) -> str:
    """Bare for mars_dist/models/generators/<name>/family.py, module-qualified elsewhere."""
    return name if module == f"{BUILTIN_PACKAGE}.{name}.{SPEC_MODULE}" else f"{module}:{name}"


def register_family(cls: type) -> type:
    """Class decorator on a GeneratorFamily subclass: registers its one instance under its key."""
    if not (isinstance(cls, type) and issubclass(cls, GeneratorFamily)) or not cls.name:
        raise TypeError(f"register_family: {cls!r} is not a GeneratorFamily subclass with a name")
    spec = cls()
    spec.key = _key(cls.name, cls.__module__)
    _FAMILIES[spec.key] = spec
    return cls


def builtin_names() -> List[str]:
    """The families shipped in mars_dist/models/generators/: every sub-package with a family module."""
    package = importlib.import_module(BUILTIN_PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                  if m.ispkg and importlib.util.find_spec(f"{BUILTIN_PACKAGE}.{m.name}.{SPEC_MODULE}") is not None)


def family(name: str) -> GeneratorFamily:
    """The family a run config's `task:` or an export's builder names, importing its module on first use."""
    if not isinstance(name, str) or not name or name.count(":") > 1:
        raise FamilyNameError(f"generator family {name!r}: expected one of {', '.join(builtin_names())} or "
                              "'package.module:NAME'")
    if name not in _FAMILIES:
        module, sep, short = name.partition(":")
        module = module if sep else f"{BUILTIN_PACKAGE}.{name}.{SPEC_MODULE}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name is None or not module.startswith(err.name):
                raise
            raise FamilyNameError(f"generator family {name!r}: no module {module} (built-in families: "
                                  f"{', '.join(builtin_names())})") from None
    if name not in _FAMILIES:
        raise FamilyNameError(f"generator family {name!r}: its module registers no family of that name "
                              f"(built-in families: {', '.join(builtin_names())})")
    return _FAMILIES[name]


def known_families() -> List[GeneratorFamily]:
    """The built-in families, then those named in MARS_DIST_FAMILIES (the same list in every process,
    whatever it imported before)."""
    names = builtin_names() + [n.strip() for n in os.environ.get(EXTRA_FAMILIES_ENV, "").split(",") if n.strip()]
    return [family(n) for n in dict.fromkeys(names)]

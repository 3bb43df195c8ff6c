"""Sampling options: what a generator family's sampler takes, one dataclass per family.

`SamplingOptions` holds what every family's sampler shares (guidance, top-k, top-p, temperature);
a family that takes more declares a subclass (MaskGIT: iterations, Gumbel temperature) in its
spec. Each field is a keyword of the family's sampler and, through its metadata, a command-line
flag with its help text (mars_dist/generation/flags.py builds every command's sampling flags from
these classes), so a family's options are declared once, beside the family.

A field whose default is None means "the value the export's architecture stores" (MaskGIT's
iterations); `validate()` names the offending flag and what it accepts.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

from mars_dist.errors import UserValueError


def option(default: Any, help: str, flag: Optional[str] = None, check: Optional[Callable[[Any], Optional[str]]] = None):
    """A sampling option: its default, its help text, its flag (default --field-name) and a check
    returning what is wrong with a value (None when it is fine)."""
    return field(default=default, metadata={"help": help, "flag": flag, "check": check})


def at_least(low: float) -> Callable[[Any], Optional[str]]:
    return lambda value: None if value >= low else f"must be >= {low:g}"


def between(low: float, high: float) -> Callable[[Any], Optional[str]]:
    return lambda value: None if low <= value <= high else f"must be in [{low:g}, {high:g}]"


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


@dataclass
class SamplingOptions:
    cfg_scale: float = option(3.0, "guidance at the last step/scale (ramped linearly from 1; 1 = none)", flag="--cfg")
    top_k: int = option(0, "keep the k most likely codes (0 = all)", check=at_least(0))
    top_p: float = option(0.95, "nucleus mass (0 or 1 = off)", check=between(0.0, 1.0))
    temperature: float = option(1.0, "softmax temperature (0 = greedy)", check=at_least(0.0))

    def validate(self) -> None:
        """A UserValueError naming the first option's flag whose value is not accepted."""
        for f in dataclasses.fields(self):
            value, check = getattr(self, f.name), f.metadata.get("check")
            problem = check(value) if check is not None and value is not None else None
            if problem:
                raise UserValueError(f"{flag_of(f)} {value}: {problem}")

    def sampler_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of the family's sampler (None: the model's own default)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

"""The NSynth label vocabulary, once: names <-> ids, valid ranges, and checks with clear errors.

Everything that reads, writes, conditions on or prints NSynth labels (the shard tools, the data
stream, the generators' condition embeddings, sampling and evaluation) imports these, so a family
id means the same thing everywhere. Field meanings: ../shared/DESIGN.md, "Fixed facts".
"""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import torch

from mars_dist.errors import UserValueError

FAMILIES: Tuple[str, ...] = (
    "bass", "brass", "flute", "guitar", "keyboard", "mallet",
    "organ", "reed", "string", "synth_lead", "vocal",
)
SOURCES: Tuple[str, ...] = ("acoustic", "electronic", "synthetic")
QUALITIES: Tuple[str, ...] = (
    "bright", "dark", "distortion", "fast_decay", "long_release",
    "multiphonic", "nonlinear_env", "percussive", "reverb", "tempo-synced",
)
# NSynth records velocity as one of five MIDI values; models see the level index.
VELOCITY_LEVELS: Tuple[int, ...] = (25, 50, 75, 100, 127)
PITCHES = 128  # MIDI 0..127

# Integer label fields every shard sample carries (the stream hands them to tasks as LongTensors).
SAMPLE_FIELDS: Tuple[str, ...] = ("pitch", "velocity", "instrument_family", "instrument_source", "instrument")

# The labels a generator is conditioned on: name -> number of real classes (a model adds a "null").
CONDITION_CLASSES: Dict[str, int] = {
    "pitch": PITCHES,
    "instrument_family": len(FAMILIES),
    "instrument_source": len(SOURCES),
    "velocity": len(VELOCITY_LEVELS),
}
# Valid raw values of the condition labels (velocity before its mapping to a level).
RAW_RANGE: Dict[str, Tuple[int, int]] = {
    "pitch": (0, PITCHES - 1),
    "instrument_family": (0, len(FAMILIES) - 1),
    "instrument_source": (0, len(SOURCES) - 1),
    "velocity": (0, 127),
}
NAMED_VALUES: Dict[str, Tuple[str, ...]] = {"instrument_family": FAMILIES, "instrument_source": SOURCES}
NULL = -1  # "any": the label is not given


class LabelError(UserValueError):
    """A label name or value outside the vocabulary; the message names it and the valid range."""


def expected_values(name: str) -> str:
    lo, hi = RAW_RANGE[name]
    names = f" or one of {', '.join(NAMED_VALUES[name])}" if name in NAMED_VALUES else ""
    return f"an integer {lo}..{hi}{names}, or 'any'"


def check_name(name: str) -> None:
    if name not in CONDITION_CLASSES:
        raise LabelError(f"unknown label {name!r}: expected one of {', '.join(CONDITION_CLASSES)}")


def parse_value(name: str, value: object, where: str = "") -> int:
    """A raw label value from user input: an int, a family/source name ('bass'), or ''/'any'/None (NULL)."""
    check_name(name)
    prefix = f"{where}: " if where else ""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "any", "null", "none")):
        return NULL
    if isinstance(value, str) and value.strip() in NAMED_VALUES.get(name, ()):
        return NAMED_VALUES[name].index(value.strip())
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise LabelError(f"{prefix}{name}={value!r}: expected {expected_values(name)}") from None
    lo, hi = RAW_RANGE[name]
    if not lo <= number <= hi:
        raise LabelError(f"{prefix}{name}={number}: expected {expected_values(name)}")
    return number


def check_labels(labels: Mapping[str, torch.Tensor], batch: int) -> None:
    """Raises LabelError naming the label, the bad value and the valid range (NULL is allowed)."""
    for name, values in labels.items():
        check_name(name)
        if values.shape != (batch,):
            raise LabelError(f"label {name!r} has shape {tuple(values.shape)}; expected ({batch},)")
        lo, hi = RAW_RANGE[name]
        bad = (values != NULL) & ((values < lo) | (values > hi))
        if bool(bad.any()):
            raise LabelError(f"label {name!r} has value {int(values[bad][0])}; expected {lo}..{hi} or {NULL} for any")


def velocity_level(velocity: torch.Tensor) -> torch.Tensor:
    """Raw MIDI velocities -> the nearest NSynth level index 0..4; NULL stays NULL.

    Non-NSynth values (other data sets, a user's 90) go to the closest level; no integer lies
    exactly between two levels, so there are no ties.
    """
    levels = torch.tensor(VELOCITY_LEVELS, device=velocity.device)
    nearest = (velocity.unsqueeze(-1) - levels).abs().argmin(dim=-1)
    return torch.where(velocity == NULL, torch.full_like(velocity, NULL), nearest)


def describe(labels: Mapping[str, int]) -> str:
    """A file-name-safe description: pitch060_keyboard_any-source_vel100 (a missing label is any-X)."""
    def part(name: str, fmt) -> str:
        value = labels.get(name, NULL)
        return fmt(value) if value != NULL else f"any-{name.split('_')[-1]}"

    return "_".join([
        part("pitch", lambda v: f"pitch{v:03d}"),
        part("instrument_family", lambda v: FAMILIES[v]),
        part("instrument_source", lambda v: SOURCES[v]),
        part("velocity", lambda v: f"vel{v:03d}"),
    ])

"""Typed dataclasses from plain values (YAML files, command-line overrides, JSON) and back.

Why a wrapper around OmegaConf's structured configs: OmegaConf already rejects unknown keys and
wrong types, but its messages neither say which file (or override, or export) the bad value came
from nor suggest the key the user probably meant. Run configs (mars_dist/config) and the
architecture an export stores (mars_dist/io/exports.py) are both read through here, so a bad key is
reported the same way wherever it was written, and inference never needs the run-config package.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Sequence, Tuple, Type, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from mars_dist.errors import UserValueError

T = TypeVar("T")
Layer = Tuple[Any, str]  # (values: a mapping or an OmegaConf node, where they came from)


class ConfigError(UserValueError):
    """Values that do not fit their schema; the message says where they came from and why."""


def _valid_keys(schema_node: Any) -> list[str]:
    if isinstance(schema_node, DictConfig):
        return [str(k) for k in schema_node.keys()]
    return []


def closest_key_hint(schema: DictConfig, full_key: str) -> str:
    """' (closest valid key: a.b)' for a mistyped dotted key, the valid keys at that level, or ''."""
    node: Any = schema
    prefix: list[str] = []
    for part in full_key.split("."):
        if isinstance(node, DictConfig) and part in node:
            node = node[part]
            prefix.append(part)
            continue
        candidates = _valid_keys(node)
        match = difflib.get_close_matches(part, candidates, n=1, cutoff=0.5)
        if match:
            return f" (closest valid key: {'.'.join(prefix + [match[0]])})"
        if candidates:
            where = ".".join(prefix) or "the top level"
            return f" (valid keys at {where}: {', '.join(sorted(candidates))})"
        return ""
    return ""


def _merge_checked(schema: DictConfig, merged: DictConfig, layer: Any, source: str, prefix: str) -> DictConfig:
    try:
        return OmegaConf.merge(merged, layer)
    except ConfigKeyError as err:
        key = err.full_key or str(err.key)
        raise ConfigError(f"{source}: unknown {prefix}key '{key}'{closest_key_hint(schema, key)}") from None
    except ValidationError as err:
        key = err.full_key or str(err.key)
        raise ConfigError(f"{source}: bad value for '{key}': {err.msg.splitlines()[0]}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{source}: {err}") from None


def from_layers(schema: Type[T], layers: Sequence[Layer], where: str, prefix: str = "config ") -> T:
    """schema defaults <- each layer (checked, naming its source) -> the dataclass, whose `validate()`
    (if it has one) runs last; a ValueError it raises becomes a ConfigError naming `where`."""
    structured = OmegaConf.structured(schema)
    merged = structured
    for layer, source in layers:
        merged = _merge_checked(structured, merged, layer, source, prefix)
    try:
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"incomplete config ({where}): {err}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
    return obj  # type: ignore[return-value]


def from_dict(schema: Type[T], values: Any, source: str) -> T:
    """The dataclass `schema` from a plain mapping (a stored config, an export's architecture)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of keys, got {type(values).__name__}")
    return from_layers(schema, [(values, source)], source)


def to_dict(obj: Any) -> dict:
    """Plain nested dict of a dataclass (or an OmegaConf node), for JSON and YAML."""
    if dataclasses.is_dataclass(obj):
        return OmegaConf.to_container(OmegaConf.structured(obj), resolve=True)  # type: ignore[return-value]
    return OmegaConf.to_container(obj, resolve=True)  # type: ignore[return-value]


def to_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def field_values(obj: Any, schema: type) -> dict:
    """The values of `obj` (a dataclass extending `schema`) for `schema`'s fields only, as plain data:
    e.g. the architecture part of a task's settings section."""
    full = to_dict(obj)
    return {f.name: full[f.name] for f in dataclasses.fields(schema)}

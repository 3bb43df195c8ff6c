"""Loads YAML run configs onto typed dataclasses (OmegaConf structured configs).

Why a wrapper at all: OmegaConf already rejects unknown keys and wrong types, but its messages
neither say which file (or command-line override) the bad value came from nor suggest the key
the user probably meant. Users of a training system edit YAML by hand and type overrides on the
command line, so every error here names the key, its source and the closest valid key.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any, Iterable, Sequence, Type, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from mars_dist.config.run import RunConfig, run_config_class
from mars_dist.errors import UserValueError
from mars_dist.io.atomic import atomic_write_text

T = TypeVar("T")


class ConfigError(UserValueError):
    """A config file or override that does not fit the schema; the message says where and why."""


def _valid_keys(schema_node: Any) -> list[str]:
    if isinstance(schema_node, DictConfig):
        return [str(k) for k in schema_node.keys()]
    return []


def _closest_key_hint(schema: DictConfig, full_key: str) -> str:
    """Returns ' (closest valid key: a.b)' for a mistyped dotted key, or '' when none is close."""
    parts = full_key.split(".")
    node: Any = schema
    prefix: list[str] = []
    for part in parts:
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


def _merge_checked(schema: DictConfig, merged: DictConfig, layer: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(merged, layer)
    except ConfigKeyError as err:
        key = err.full_key or str(err.key)
        raise ConfigError(f"{source}: unknown config key '{key}'{_closest_key_hint(schema, key)}") from None
    except ValidationError as err:
        key = err.full_key or str(err.key)
        raise ConfigError(f"{source}: bad value for '{key}': {err.msg.splitlines()[0]}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{source}: {err}") from None


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got {type(data).__name__}")
    return data


def _yaml_layers(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Any, str]]:
    """A YAML file may name `base: other.yaml` (relative to itself) that it refines."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    data = _read_yaml(path)
    layers: list[tuple[Any, str]] = []
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: 'base' must be a path to another YAML file, got {base!r}")
        layers.extend(_yaml_layers((path.parent / base), seen + (path,)))
    layers.append((data, str(path)))
    return layers


def _parse_overrides(overrides: Iterable[str]) -> list[tuple[Any, str]]:
    layers = []
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"command-line override '{item}': expected key.sub=value")
        try:
            layer = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as err:
            raise ConfigError(f"command-line override '{item}': {err}") from None
        layers.append((layer, f"command-line override '{item}'"))
    return layers


def _task_of(layers: Sequence[tuple[Any, str]]) -> tuple[str, str]:
    """(task name, where it was set) from the last layer that sets `task:`, else the default."""
    task, source = RunConfig.task, "the default"
    for layer, where in layers:
        if "task" in layer:
            task, source = layer["task"], where
    return task, source


def _schema_for(layers: Sequence[tuple[Any, str]]) -> type:
    from mars_dist.tasks.registry import TaskNameError

    task, source = _task_of(layers)
    try:
        return run_config_class(task)
    except TaskNameError as err:
        raise ConfigError(f"{source}: {err}") from None


def _build(schema: Type[T], layers: Sequence[tuple[Any, str]], where: str) -> T:
    """schema defaults <- each layer (checked, naming its source) -> the validated dataclass."""
    structured = OmegaConf.structured(schema)
    merged = structured
    for layer, source in layers:
        merged = _merge_checked(structured, merged, layer, source)
    try:
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"incomplete config ({where}): {err}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
    return obj  # type: ignore[return-value]


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = (), schema: Type[T] | None = None) -> T:
    """Returns a dataclass instance: schema defaults <- YAML file (and its bases) <- overrides.

    Without `schema`, the schema is the run config of the task the layers name (`task:`)."""
    layers = (_yaml_layers(Path(path)) if path is not None else []) + _parse_overrides(overrides)
    return _build(schema or _schema_for(layers), layers, str(path or "config"))


def run_config_from_dict(values: dict, source: str = "stored run config") -> RunConfig:
    """The run config of a resolved config dict (as checkpoints and exports store it), checked like a file."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys, got {type(values).__name__}")
    layers = [(values, source)]
    return _build(_schema_for(layers), layers, source)


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config dataclass (for JSON checkpoints and manifests)."""
    if dataclasses.is_dataclass(cfg):
        return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def config_to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Writes the resolved config as YAML atomically."""
    atomic_write_text(path, config_to_yaml(cfg))

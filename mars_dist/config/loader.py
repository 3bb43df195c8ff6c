"""Loads YAML run configs (with `base:` chains and `key=value` overrides) onto the run config of their task.

The typed merge itself, with errors naming the key, its source and the closest valid key, is
mars_dist/io/structured.py. This module adds what only run configs have: files that refine other
files, command-line overrides, the schema chosen by the run's `task:` (the common sections plus
that task's own), the alias of a renamed task (`task: ar` is `task: next_scale`, and its `ar:`
section the `next_scale:` one) and a pointer for keys that were replaced.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Type, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mars_dist.config.run import RunConfig, run_config_class
from mars_dist.io.atomic import atomic_write_text
from mars_dist.io.structured import ConfigError, Layer, from_layers, to_dict, to_yaml
from mars_dist.tasks.registry import TASK_ALIASES, TaskNameError

T = TypeVar("T")

# Keys a config may no longer set, and what replaced them.
REPLACED_KEYS: Dict[Tuple[str, str], str] = {
    ("train", "eval_every"): "stages.media.every (media) and stages.validate.every (validation), each with its own cadence",
}


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


def _yaml_layers(path: Path, seen: tuple[Path, ...] = ()) -> List[Layer]:
    """A YAML file may name `base: other.yaml` (relative to itself) that it refines."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    data = _read_yaml(path)
    layers: List[Layer] = []
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: 'base' must be a path to another YAML file, got {base!r}")
        layers.extend(_yaml_layers((path.parent / base), seen + (path,)))
    layers.append((data, str(path)))
    return layers


def _parse_overrides(overrides: Sequence[str]) -> List[Layer]:
    layers = []
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"command-line override '{item}': expected key.sub=value")
        try:
            layer = OmegaConf.to_container(OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as err:
            raise ConfigError(f"command-line override '{item}': {err}") from None
        layers.append((layer, f"command-line override '{item}'"))
    return layers


def _renamed(values: Dict[str, Any], source: str) -> Dict[str, Any]:
    """One layer with the task alias resolved (`task: ar` and its `ar:` section are next_scale's);
    a replaced key is an error saying what replaced it."""
    for (section, key), replacement in REPLACED_KEYS.items():
        if isinstance(values.get(section), dict) and key in values[section]:
            raise ConfigError(f"{source}: '{section}.{key}' was replaced by {replacement}")
    out = dict(values)
    if isinstance(out.get("task"), str):
        out["task"] = TASK_ALIASES.get(out["task"], out["task"])
    for old, new in TASK_ALIASES.items():
        if old in out:
            if new in out:
                raise ConfigError(f"{source}: sets both '{old}' and '{new}', which are one section ('{old}' is its old name)")
            out[new] = out.pop(old)
    return out


def _task_of(layers: Sequence[Layer]) -> Tuple[str, str]:
    """(task name, where it was set) from the last layer that sets `task:`, else the default."""
    task, source = RunConfig.task, "the default"
    for layer, where in layers:
        if "task" in layer:
            task, source = layer["task"], where
    return task, source


def _schema_for(layers: Sequence[Layer]) -> type:
    task, source = _task_of(layers)
    try:
        return run_config_class(task)
    except TaskNameError as err:
        raise ConfigError(f"{source}: {err}") from None


def _checked(layers: Sequence[Layer]) -> List[Layer]:
    return [(_renamed(values, source), source) for values, source in layers]


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = (), schema: Type[T] | None = None) -> T:
    """Returns a dataclass instance: schema defaults <- YAML file (and its bases) <- overrides.

    Without `schema`, the schema is the run config of the task the layers name (`task:`)."""
    layers = _checked((_yaml_layers(Path(path)) if path is not None else []) + _parse_overrides(overrides))
    return from_layers(schema or _schema_for(layers), layers, str(path or "config"))


def run_config_from_dict(values: dict, source: str = "stored run config") -> RunConfig:
    """The run config of a resolved config dict (as checkpoints store it), checked like a file."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys, got {type(values).__name__}")
    layers = _checked([(values, source)])
    return from_layers(_schema_for(layers), layers, source)


config_to_dict = to_dict
config_to_yaml = to_yaml


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Writes the resolved config as YAML atomically."""
    atomic_write_text(path, to_yaml(cfg))

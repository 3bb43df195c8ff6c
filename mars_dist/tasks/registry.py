"""Task name -> the Task class and the typed config section it owns.

A run config's `task:` names a task; the run config's schema then gains that task's section (its
`section` key, holding an instance of its `config` dataclass). Two kinds of names:

- a task module: `task: tokenizer` imports mars_dist/tasks/tokenizer.py, which registers itself
  (`@register_task("tokenizer", config=TokenizerTaskConfig)`); `task: package.module:NAME` imports
  that module (tests and user projects register tasks outside the package this way; there NAME may
  also be a Task subclass of that module that registered nothing: it then reads the config section
  of its nearest registered base class, or has none);
- a generator family (mars_dist/models/generators/family.py): `task: next_scale`, `next_token`,
  `maskgit` or `package.module:NAME` of a family defined elsewhere; every family trains through the
  one generic generator task (mars_dist/tasks/generator.py), its section named after the family.

`task: ar` is the old name of `next_scale` (TASK_ALIASES; its `ar:` section is `next_scale:`).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Dict, List, Optional, Type

from mars_dist.engine.task import Task
from mars_dist.errors import UserValueError
from mars_dist.models.generators.family import FamilyNameError, builtin_names as builtin_families, family
from mars_dist.tasks.generator import generator_task_class

BUILTIN_PACKAGE = "mars_dist.tasks"
TASK_ALIASES = {"ar": "next_scale"}  # old name -> name (the task and its config section)


class TaskNameError(UserValueError):
    """`task:` names no registered task; the message lists the built-in ones."""


@dataclass(frozen=True)
class TaskEntry:
    name: str                        # the run config's `task:` value: "tokenizer", or "package.module:NAME"
    task_class: type                 # a mars_dist.engine.task.Task subclass
    section: Optional[str]           # the run config key of its settings (None: it has none)
    config_class: Optional[type]     # the dataclass of that section


_REGISTRY: Dict[str, TaskEntry] = {}


def _key(name: str, module: str) -> str:
    """How run configs name a task: bare for mars_dist/tasks/NAME.py, module-qualified elsewhere."""
    return name if module == f"{BUILTIN_PACKAGE}.{name}" else f"{module}:{name}"


def register_task(name: str, config: Optional[type] = None, section: Optional[str] = None):
    """Class decorator: registers a Task under `name`; its settings live in `section` (default: name)."""
    def decorate(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TypeError(f"register_task({name!r}): {cls!r} is not a mars_dist.engine.task.Task subclass")
        key = _key(name, cls.__module__)
        entry = TaskEntry(key, cls, (section or name) if config is not None else None, config)
        _REGISTRY[key] = entry
        cls.task_name, cls.section = key, entry.section
        return cls

    return decorate


def task_modules() -> List[str]:
    """The task modules shipped in mars_dist/tasks: every plain module there but this one and the
    generic generator task (helpers the tasks share live in the sub-package mars_dist/tasks/shared/)."""
    package = importlib.import_module(BUILTIN_PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                  if not m.ispkg and m.name not in ("registry", "generator"))


def builtin_names() -> List[str]:
    """The built-in task modules, then the built-in generator families."""
    return task_modules() + builtin_families()


def _unknown(spec: str, why: str) -> TaskNameError:
    return TaskNameError(f"task={spec!r}: {why} (built-in tasks: {', '.join(builtin_names())})")


def _generator_entry(spec: str) -> Optional[TaskEntry]:
    """The generic generator task of the family `spec` names, registered on first use (None: no family)."""
    try:
        generator_family = family(spec)
    except FamilyNameError:
        return None
    task_class = generator_task_class(generator_family)
    entry = TaskEntry(generator_family.key, task_class, task_class.section, task_class.config_class)
    _REGISTRY[spec] = _REGISTRY[entry.name] = entry
    return entry


def resolve(spec: str) -> TaskEntry:
    """The entry for a run config's `task:` value, importing its module on first use."""
    if not isinstance(spec, str) or not spec or spec.count(":") > 1:
        raise TaskNameError(f"task={spec!r}: expected a task name ({', '.join(builtin_names())}) or 'package.module:NAME'")
    spec = TASK_ALIASES.get(spec, spec)
    if spec in _REGISTRY:
        return _REGISTRY[spec]
    module_name, sep, name = spec.partition(":")
    if not sep:
        if spec in task_modules():
            importlib.import_module(f"{BUILTIN_PACKAGE}.{spec}")
            return _REGISTRY[spec]
        entry = _generator_entry(spec)
        if entry is None:
            raise _unknown(spec, "no such task or generator family")
        return entry
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and module_name.startswith(err.name):  # the task module itself is missing
            raise _unknown(spec, f"no module {module_name}") from None
        raise
    if spec in _REGISTRY:
        return _REGISTRY[spec]
    entry = _generator_entry(spec)
    if entry is not None:
        return entry
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise _unknown(spec, f"{module_name} registers no task or generator family named {name!r}")
    base = _registered_base(cls)
    register_task(name, config=base.config_class if base else None, section=base.section if base else None)(cls)
    return _REGISTRY[spec]


def _registered_base(cls: type) -> Optional[TaskEntry]:
    """The entry of the nearest registered base class: a subclass (a test recording what it trained,
    a user's variant of a built-in task) reads its base's config section."""
    for base in cls.__mro__[1:]:
        key = base.__dict__.get("task_name")
        if key in _REGISTRY:
            return _REGISTRY[key]
    return None


def task_class(spec: str) -> Type:
    return resolve(spec).task_class

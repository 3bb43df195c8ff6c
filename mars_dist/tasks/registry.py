"""Task name -> the Task class and the typed config section it owns, registered by the task modules.

A run config's `task:` names a task; the run config's schema then gains that task's section (its
`section` key, holding an instance of its `config` dataclass). Nothing outside a task's own module
lists task names, so adding a task is one new module:

    @register_task("ar", config=ARTaskConfig)      # in mars_dist/tasks/ar.py
    class ARTask(Task): ...

Where a task is found: `task: NAME` imports `mars_dist.tasks.NAME`; `task: package.module:NAME`
imports `package.module` (tests and user projects register tasks outside the package this way;
there NAME may also be a Task subclass of that module that registered nothing: it then reads the
config section of its nearest registered base class, or has none).
Exports store the same string, so loading an export imports the module that trained it.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Dict, List, Optional, Type

from mars_dist.errors import UserValueError

BUILTIN_PACKAGE = "mars_dist.tasks"


class TaskNameError(UserValueError):
    """`task:` names no registered task; the message lists the built-in ones."""


@dataclass(frozen=True)
class TaskEntry:
    name: str                        # the run config's `task:` value: "ar", or "package.module:NAME"
    task_class: type                 # a mars_dist.engine.task.Task subclass
    section: Optional[str]           # the run config key of its settings (None: it has none)
    config_class: Optional[type]     # the dataclass of that section


_REGISTRY: Dict[str, TaskEntry] = {}


def _key(name: str, module: str) -> str:
    """How run configs name a task: bare for mars_dist/tasks/NAME.py, module-qualified elsewhere."""
    return name if module == f"{BUILTIN_PACKAGE}.{name}" else f"{module}:{name}"


def register_task(name: str, config: Optional[type] = None, section: Optional[str] = None):
    """Class decorator: registers a Task under `name`; its settings live in `section` (default: name)."""
    from mars_dist.engine.task import Task

    def decorate(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TypeError(f"register_task({name!r}): {cls!r} is not a mars_dist.engine.task.Task subclass")
        key = _key(name, cls.__module__)
        entry = TaskEntry(key, cls, (section or name) if config is not None else None, config)
        _REGISTRY[key] = entry
        cls.task_name, cls.section = key, entry.section
        return cls

    return decorate


def _module_of(spec: str) -> tuple[str, str]:
    """'ar' -> ('mars_dist.tasks.ar', 'ar'); 'pkg.mod:toy' -> ('pkg.mod', 'toy')."""
    module, sep, name = spec.partition(":")
    return (module, name) if sep else (f"{BUILTIN_PACKAGE}.{spec}", spec)


def resolve(spec: str) -> TaskEntry:
    """The entry for a run config's `task:` value, importing its module on first use."""
    if not isinstance(spec, str) or not spec or spec.count(":") > 1:
        raise TaskNameError(f"task={spec!r}: expected a task name ({', '.join(builtin_names())}) or 'package.module:NAME'")
    if spec in _REGISTRY:
        return _REGISTRY[spec]
    module_name, name = _module_of(spec)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and module_name.startswith(err.name):  # the task module itself is missing
            raise TaskNameError(f"task={spec!r}: no module {module_name} "
                                f"(built-in tasks: {', '.join(builtin_names())})") from None
        raise
    if spec not in _REGISTRY:
        from mars_dist.engine.task import Task

        cls = getattr(module, name, None)
        if ":" not in spec or not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TaskNameError(f"task={spec!r}: {module_name} registers no task named {name!r} "
                                f"(built-in tasks: {', '.join(builtin_names())})")
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


def builtin_names() -> List[str]:
    """The task modules shipped in mars_dist/tasks: every plain module there but this one (helpers
    the tasks share live in the sub-package mars_dist/tasks/shared/)."""
    package = importlib.import_module(BUILTIN_PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.ispkg and m.name != "registry")


def task_class(spec: str) -> Type:
    return resolve(spec).task_class

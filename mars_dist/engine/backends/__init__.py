"""Backend registry: `engine.backend` -> Backend class, imported only when chosen.

Lazy imports keep `python mars_dist/train.py` in debug mode free of Accelerate's and DeepSpeed's
import cost (and of their import-time side effects, such as DeepSpeed probing accelerators).
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, Type

from mars_dist.engine.backend import Backend
from mars_dist.errors import UserValueError

BACKENDS: Dict[str, str] = {
    "debug": "mars_dist.engine.backends.debug:DebugBackend",
    "accelerate": "mars_dist.engine.backends.accelerate_backend:AccelerateBackend",
    "deepspeed": "mars_dist.engine.backends.deepspeed_backend:DeepSpeedBackend",
}


def check_backend_name(name: str) -> None:
    if name not in BACKENDS:
        raise UserValueError(f"engine.backend={name!r}: expected one of {', '.join(BACKENDS)}")


def backend_class(name: str) -> Type[Backend]:
    check_backend_name(name)
    module_name, _, class_name = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_backend(cfg: Any) -> Backend:
    """Creates the configured backend; this joins the process group when launched with several workers."""
    return backend_class(cfg.engine.backend)(cfg)

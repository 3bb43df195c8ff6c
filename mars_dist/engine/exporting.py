"""One model of a running (or restored) task as an export: consolidated weights + what rebuilds them.

Shared by the trainer's export stage and `mars-export` (which restores a checkpoint first), so an
export means the same thing whichever wrote it. The backend consolidates the weights (a collective:
every rank calls this); rank 0 writes the files (mars_dist/io/exports.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from mars_dist.engine.backend import Backend
from mars_dist.engine.task import Task
from mars_dist.io.exports import write_export
from mars_dist.io.structured import to_dict


def export_model(backend: Backend, task: Task, model: str, out_dir: Path, audio_cfg: Any,
                 provenance: Dict[str, Any]) -> Path:
    spec = task.export_spec(model)  # before the collective: a model that cannot be rebuilt is refused everywhere
    weights = backend.full_state_dict(model)
    if backend.is_main:
        write_export(Path(out_dir), weights, spec, to_dict(audio_cfg), provenance)
    backend.barrier()
    return Path(out_dir)

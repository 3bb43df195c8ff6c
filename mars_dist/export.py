"""Consolidated weights of one model from any checkpoint: `model.safetensors` + `config.json`, for CPU use.

    mars-export --checkpoint RUN_DIR/checkpoints/step-00010000 --model tokenizer_ema --out export/
    mars-export --checkpoint RUN_DIR --out export/   (newest committed checkpoint; the task's default
                                                      model: tokenizer_ema, the generator, the classifier)

A run exports its model itself when it finishes (stages.export, run_dir/export/); this command
exports any model of any checkpoint. Backend-independent by construction: in this one process (no
launcher) it rebuilds the task's models, lets the backend that wrote the checkpoint load it as an
elastic resume to world size 1, and asks that backend for the consolidated fp32 state dict.
Sampling, encoding and evaluation then need neither the shards nor the training stack
(mars_dist/io/exports.py, mars_dist/models/builders.py, mars_dist/generation/).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from mars_dist.cli import make_parser, console_script
from mars_dist.config import run_config_from_dict
from mars_dist.data.geometry import BatchGeometry
from mars_dist.engine.backends import backend_class
from mars_dist.engine.checkpoint import CheckpointError, committed_checkpoints, is_committed, read_train_state
from mars_dist.engine.exporting import export_model
from mars_dist.engine.rng import seed_everything
from mars_dist.engine.task import trained_names
from mars_dist.errors import UserFileNotFoundError, UserValueError
from mars_dist.io.export_migrations import RENAMED_TASKS, upgrade_run_config
from mars_dist.io.exports import CONFIG_JSON, WEIGHTS_FILE
from mars_dist.parallel import process_group
from mars_dist.tasks.registry import resolve


def export_checkpoint(checkpoint_dir: Path, model: Optional[str], out_dir: Path) -> Path:
    """Writes out_dir/model.safetensors, then out_dir/config.json (last: its presence means complete)."""
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    if not is_committed(checkpoint_dir):
        raise CheckpointError(f"{checkpoint_dir}: not a committed checkpoint (no COMMITTED marker)")
    if process_group.launcher_info().world_size > 1:
        raise UserValueError("export runs in one process: start it with python, not under torchrun/accelerate launch")
    state = read_train_state(checkpoint_dir)
    stored = upgrade_run_config(state["config"])
    cfg = run_config_from_dict({**stored, "engine": {**stored.get("engine", {}), "device": "cpu"}},
                               f"{checkpoint_dir}/train_state.json config")
    task = resolve(cfg.task).task_class(cfg, state["data_info"])
    seed_everything(cfg.seed)
    specs = task.build_models()
    trained = trained_names(specs)
    model = model or task.default_export_model() or (trained[0] if len(trained) == 1 else None)
    if model is None:
        raise UserValueError(f"{checkpoint_dir}: the {cfg.task} task has models {', '.join(specs)}; choose one with --model")
    if model not in specs:
        raise UserValueError(f"--model {model!r}: the {cfg.task} task has models {', '.join(specs)}")
    task.export_spec(model)  # a model the task cannot rebuild is refused before the checkpoint is read
    backend = backend_class(state["backend"])(cfg)
    try:
        backend.prepare(specs, BatchGeometry(1, 1, 1, 1))
        if state.get("task") in RENAMED_TASKS:
            backend.rename_saved_models({RENAMED_TASKS[state["task"]]: state["task"]})
        backend.load_checkpoint(checkpoint_dir, state["world_size"])
        provenance = {"model": model, "task": cfg.task, "step": state["step"], "checkpoint": str(checkpoint_dir),
                      "backend": state["backend"], "data_info": state["data_info"]}
        return export_model(backend, task, model, out_dir, cfg.audio, provenance)
    finally:
        backend.shutdown()


def newest_if_run_dir(path: Path) -> Path:
    """A run folder stands for its newest committed checkpoint; a checkpoint folder is taken as given."""
    if not path.is_dir():
        raise UserFileNotFoundError(f"--checkpoint {path}: no such folder (a run folder or a "
                                    "run_dir/checkpoints/step-XXXXXXXX folder)")
    if (path / "checkpoints").is_dir() and not is_committed(path):
        found = committed_checkpoints(path)
        if not found:
            raise CheckpointError(f"{path}: a run folder with no committed checkpoint under {path / 'checkpoints'}")
        return found[-1][1]
    return path


def main(argv: Optional[List[str]] = None) -> int:
    parser = make_parser("mars-export", __doc__)
    parser.add_argument("--checkpoint", required=True,
                        help="a committed run_dir/checkpoints/step-XXXXXXXX folder, or a run_dir (its newest committed one)")
    parser.add_argument("--model", default=None, help="which of the task's models (default: the task's own: "
                        "tokenizer_ema, the generator, the classifier; else the only trained one)")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    out = export_checkpoint(newest_if_run_dir(Path(args.checkpoint)), args.model, Path(args.out))
    print(f"exported {out / WEIGHTS_FILE} and {out / CONFIG_JSON}")
    return 0


entry = console_script(main, "mars-export")


if __name__ == "__main__":
    entry()

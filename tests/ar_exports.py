"""Export folders of tiny, randomly initialised tokenizers and next-scale ARs for the generator and
sampling tests.

They are written by the real export writer (mars_dist.io.exports) from the task's own export spec
and read back by the real loaders; the full train -> checkpoint -> export path is covered end to end
by tests/test_next_scale_train_e2e.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from mars_dist.config import load_config
from mars_dist.io.exports import write_export as write_export_files
from mars_dist.io.structured import to_dict
from mars_dist.tasks.registry import task_class

REPO = Path(__file__).resolve().parent.parent
TOKENIZER_TINY = REPO / "configs" / "tokenizer" / "tiny.yaml"
AR_TINY = REPO / "configs" / "next_scale" / "tiny.yaml"
CMX_SHAPE = (2, 256, 256)


def write_export(out_dir: Path, module: torch.nn.Module, cfg, model: str) -> Path:
    """`module` (model `model` of the run `cfg`) as an export, described by its task's export spec."""
    task = task_class(cfg.task)(cfg, {"cmx_shape": list(CMX_SHAPE)})
    weights = {k: v.detach() for k, v in module.state_dict().items()}
    return write_export_files(out_dir, weights, task.export_spec(model), to_dict(cfg.audio), {
        "model": model, "task": cfg.task, "checkpoint": "(test)", "step": 0, "backend": "debug",
        "data_info": {"cmx_shape": list(CMX_SHAPE)}})


def tokenizer_export(out_dir: Path, seed: int = 0, overrides: Sequence[str] = ()) -> Path:
    from mars_dist.tasks.tokenizer import TokenizerTask

    cfg = load_config(TOKENIZER_TINY, list(overrides))
    torch.manual_seed(seed)
    tokenizer = TokenizerTask(cfg, {"cmx_shape": list(CMX_SHAPE)}).build_models()["tokenizer"].module
    return write_export(out_dir, tokenizer, cfg, "tokenizer")


def ar_config(tokenizer_dir: Path, overrides: Sequence[str] = ()):
    return load_config(AR_TINY, [f"next_scale.tokenizer_path={tokenizer_dir}", "audio.griffin_lim.n_iter=4", *overrides])


def ar_export(out_dir: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A tiny next-scale AR with random (not zero-gated) weights, so its labels change what it generates."""
    from tests.generator_exports import generator_export

    return generator_export(out_dir, tokenizer_dir, "next_scale", seed)

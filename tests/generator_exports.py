"""Export folders of tiny, randomly initialised generators of every family (next-scale, next-token,
MaskGIT) over a tiny tokenizer export, written by the real export writer (tests/ar_exports.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from mars_dist.config import load_config
from mars_dist.tasks.registry import task_class
from tests.ar_exports import CMX_SHAPE, REPO, ar_export, write_export

FAMILIES = ("ar", "next_token", "maskgit")  # task names; the AR's section and model are "ar"
MODEL_OF = {"ar": "ar", "next_token": "next_token", "maskgit": "maskgit"}


def tiny_config(task: str, tokenizer_dir: Path, overrides: Sequence[str] = ()):
    return load_config(REPO / "configs" / task / "tiny.yaml",
                       [f"{task}.tokenizer_path={tokenizer_dir}", "audio.griffin_lim.n_iter=4", *overrides])


def generator_export(out_dir: Path, tokenizer_dir: Path, task: str, seed: int = 0, overrides: Sequence[str] = ()) -> Path:
    """A tiny model of `task` with random (not zero-gated) weights, so its labels and inputs matter."""
    if task == "ar" and not overrides:
        return ar_export(out_dir, tokenizer_dir, seed)
    cfg = tiny_config(task, tokenizer_dir, overrides)
    torch.manual_seed(seed)
    model = task_class(task)(cfg, {"cmx_shape": list(CMX_SHAPE)}).build_models()[MODEL_OF[task]].module
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return write_export(out_dir, model, cfg, MODEL_OF[task])

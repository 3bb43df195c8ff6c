"""Export folders of tiny, randomly initialised generators of every family (next-scale, next-token,
MaskGIT) over a tiny tokenizer export, written by the real export writer (tests/ar_exports.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from mars_dist.config import load_config
from tests.ar_exports import CMX_SHAPE, REPO, write_export

FAMILIES = ("next_scale", "next_token", "maskgit")  # = task, config folder, section and trained model


def tiny_config(family: str, tokenizer_dir: Path, overrides: Sequence[str] = ()):
    return load_config(REPO / "configs" / family / "tiny.yaml",
                       [f"{family}.tokenizer_path={tokenizer_dir}", "audio.griffin_lim.n_iter=4", *overrides])


def generator_export(out_dir: Path, tokenizer_dir: Path, family: str, seed: int = 0, overrides: Sequence[str] = ()) -> Path:
    """A tiny model of `family` with random (not zero-gated) weights, so its labels and inputs matter."""
    from mars_dist.tasks.registry import task_class

    cfg = tiny_config(family, tokenizer_dir, overrides)
    torch.manual_seed(seed)
    model = task_class(family)(cfg, {"cmx_shape": list(CMX_SHAPE)}).build_models()[family].module
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return write_export(out_dir, model, cfg, family)

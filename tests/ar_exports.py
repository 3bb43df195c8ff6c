"""Export folders of tiny, randomly initialised tokenizers and ARs for the AR and sampling tests.

They are written by the real export writer (mars_dist.io.exports) and read back by the real loaders;
the full train -> checkpoint -> export path is covered end to end by tests/test_ar_train_e2e.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from mars_dist.config import load_config
from mars_dist.config.loader import config_to_dict
from mars_dist.io.exports import write_export as write_export_files

REPO = Path(__file__).resolve().parent.parent
TOKENIZER_TINY = REPO / "configs" / "tokenizer" / "tiny.yaml"
AR_TINY = REPO / "configs" / "ar" / "tiny.yaml"
CMX_SHAPE = (2, 256, 256)


def write_export(out_dir: Path, module: torch.nn.Module, cfg, model: str) -> Path:
    weights = {k: v.detach() for k, v in module.state_dict().items()}
    return write_export_files(out_dir, weights, {
        "model": model, "task": cfg.task, "checkpoint": "(test)", "step": 0, "backend": "debug",
        "shapes": {k: list(v.shape) for k, v in weights.items()},
        "num_parameters": sum(v.numel() for v in weights.values()),
        "data_info": {"cmx_shape": list(CMX_SHAPE)}, "run_config": config_to_dict(cfg),
    })


def tokenizer_export(out_dir: Path, seed: int = 0, overrides: Sequence[str] = ()) -> Path:
    from mars_dist.tasks.tokenizer import TokenizerTask

    cfg = load_config(TOKENIZER_TINY, list(overrides))
    torch.manual_seed(seed)
    tokenizer = TokenizerTask(cfg, {"cmx_shape": list(CMX_SHAPE)}).build_models()["tokenizer"].module
    return write_export(out_dir, tokenizer, cfg, "tokenizer")


def ar_config(tokenizer_dir: Path, overrides: Sequence[str] = ()):
    return load_config(AR_TINY, [f"ar.tokenizer_path={tokenizer_dir}", "audio.griffin_lim.n_iter=4", *overrides])


def ar_export(out_dir: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A tiny AR with random (not zero-gated) weights, so its labels change what it generates."""
    from mars_dist.tasks.ar import ARTask

    cfg = ar_config(tokenizer_dir)
    torch.manual_seed(seed)
    ar = ARTask(cfg, {"cmx_shape": list(CMX_SHAPE)}).build_models()["ar"].module
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ar.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return write_export(out_dir, ar, cfg, "ar")

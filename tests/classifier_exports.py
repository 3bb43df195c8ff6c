"""Export folders of tiny classifiers for the evaluation tests, written by the real export writer.

Training one through the engine is covered by tests/test_classifier_task.py; the evaluation tests
need one that loads and runs, and a seed to make a second, different one.
"""
from __future__ import annotations

from pathlib import Path

import torch

from mars_dist.config import load_config
from tests.ar_exports import REPO, write_export

CLASSIFIER_TINY = REPO / "configs" / "classifier" / "tiny.yaml"


def classifier_export(out_dir: Path, seed: int = 0) -> Path:
    """A tiny classifier with random weights and no validation figures (its buffers say -1)."""
    from mars_dist.tasks.classifier import ClassifierTask

    cfg = load_config(CLASSIFIER_TINY)
    torch.manual_seed(seed)
    model = ClassifierTask(cfg, {}).build_models()["classifier"].module
    return write_export(out_dir, model, cfg, "classifier")

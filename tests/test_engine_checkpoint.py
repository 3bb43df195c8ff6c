"""Checkpoint folders (commit marker, resume choice, pruning, atomic files), the debug backend's
state round trip, and the small observability helpers. No training run needed."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mars_dist.config import load_config
from mars_dist.engine.backends import build_backend
from mars_dist.device import resolve_autocast_dtype
from mars_dist.engine.checkpoint import (
    COMMITTED,
    CheckpointError,
    Checkpointer,
    atomic_torch_save,
    committed_checkpoints,
    resolve_resume,
)
from mars_dist.engine.metrics import PEAK_BF16_TFLOPS, parse_step_window, peak_tflops_for_name
from mars_dist.data.geometry import BatchGeometry
from mars_dist.engine.task import ModelSpec


def debug_backend(tmp_path):
    cfg = load_config(None, [f"run_dir={tmp_path}", "engine.device=cpu", "optim.grad_clip=0.5"])
    backend = build_backend(cfg)
    torch.manual_seed(0)
    specs = {
        "net": ModelSpec(nn.Linear(3, 2), optimizer=lambda p: torch.optim.AdamW(p, lr=0.1),
                         lr_multiplier=lambda step: 0.5 ** step),
        "frozen": ModelSpec(nn.Linear(2, 2)),
    }
    models = backend.prepare(specs, BatchGeometry(4, 1, 2, 2))
    return backend, models


def train_once(backend, models):
    for k in range(backend.grad_accum):
        with backend.micro_step_context(sync=k == backend.grad_accum - 1), backend.autocast():
            backend.backward("net", models["net"](torch.ones(2, 3) * (k + 1)).square().mean())
    return backend.step("net")


def save(checkpointer, step):
    return checkpointer.save(step, {"step": step}, {"task": step}, "seed: 0\n")


def test_commit_marker_decides_what_resume_sees(tmp_path):
    backend, _ = debug_backend(tmp_path)
    checkpointer = Checkpointer(tmp_path, keep_last=5, backend=backend)
    first, second = save(checkpointer, 10), save(checkpointer, 20)
    (second / COMMITTED).unlink()  # as if killed between the rename and the marker
    (tmp_path / "checkpoints" / ".step-00000030.tmp").mkdir()  # as if killed while writing
    assert committed_checkpoints(tmp_path) == [(10, first)]
    assert resolve_resume(tmp_path, "auto") == first
    assert resolve_resume(tmp_path, "none") is None
    assert resolve_resume(tmp_path, str(first)) == first
    with pytest.raises(CheckpointError, match="no COMMITTED marker"):
        resolve_resume(tmp_path, str(second))
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        resolve_resume(tmp_path, str(tmp_path / "nowhere"))
    assert resolve_resume(tmp_path / "fresh", "auto") is None


def test_keep_last_prunes_old_checkpoints_and_stale_temporaries(tmp_path):
    backend, _ = debug_backend(tmp_path)
    checkpointer = Checkpointer(tmp_path, keep_last=2, backend=backend)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".step-00000002.tmp").mkdir()
    for step in (1, 2, 3, 4):
        save(checkpointer, step)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000003", "step-00000004"]


def test_debug_backend_restores_model_optimizer_and_schedule(tmp_path):
    backend, models = debug_backend(tmp_path)
    train_once(backend, models)
    directory = save(Checkpointer(tmp_path, keep_last=1, backend=backend), 1)
    expected_norm = train_once(backend, models)
    expected = backend.full_state_dict("net")

    restored, restored_models = debug_backend(tmp_path / "other")
    restored.load_checkpoint(directory, saved_world_size=2)
    assert train_once(restored, restored_models) == expected_norm
    for key, value in expected.items():
        assert torch.equal(restored.full_state_dict("net")[key], value), key
    assert restored._schedules["net"].steps_taken == 2
    assert torch.equal(restored.full_state_dict("frozen")["weight"], backend.full_state_dict("frozen")["weight"])


def test_debug_backend_refuses_another_backends_checkpoint(tmp_path):
    backend, _ = debug_backend(tmp_path)
    directory = save(Checkpointer(tmp_path, keep_last=1, backend=backend), 1)
    state = json.loads((directory / "backend_state.json").read_text())
    (directory / "backend_state.json").write_text(json.dumps({**state, "backend": "deepspeed"}))
    with pytest.raises(CheckpointError, match="written by the 'deepspeed' backend"):
        backend.load_checkpoint(directory, saved_world_size=1)


def test_a_checkpoint_missing_a_models_state_is_a_checkpoint_error_naming_the_file(tmp_path):
    """A user's mistake (a damaged or foreign checkpoint), not a FileNotFoundError from deep inside the backend."""
    backend, _ = debug_backend(tmp_path)
    directory = save(Checkpointer(tmp_path, keep_last=1, backend=backend), 1)
    missing = sorted(p for p in directory.iterdir() if "frozen" in p.name)
    assert len(missing) == 1, sorted(p.name for p in directory.iterdir())
    missing[0].unlink()
    with pytest.raises(CheckpointError, match=f"{missing[0].name}: missing; the checkpoint has no state for model 'frozen'"):
        backend.load_checkpoint(directory, saved_world_size=1)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "state.pt"
    atomic_torch_save({"x": torch.ones(2)}, path)
    with pytest.raises(Exception):
        atomic_torch_save({"unpicklable": lambda: None}, path)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_peak_flops_table_matches_the_most_specific_name():
    assert peak_tflops_for_name("NVIDIA H100 PCIe") == PEAK_BF16_TFLOPS["H100 PCIe"]
    assert peak_tflops_for_name("NVIDIA H100 80GB HBM3") == PEAK_BF16_TFLOPS["H100"]
    assert peak_tflops_for_name("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops_for_name("NVIDIA A10G") == PEAK_BF16_TFLOPS["A10G"]
    assert peak_tflops_for_name("Some Future GPU") is None


def test_profile_window_and_mixed_precision_settings_are_checked():
    assert parse_step_window("3-7") == (3, 7) and parse_step_window("3:7") == (3, 7)
    assert parse_step_window(None) is None
    with pytest.raises(ValueError, match="base-60"):
        parse_step_window("63")  # what YAML makes of an unquoted 1:3
    with pytest.raises(ValueError, match="START < END"):
        parse_step_window("5-5")
    assert resolve_autocast_dtype("auto", torch.device("cpu")) is None
    assert resolve_autocast_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16
    with pytest.raises(ValueError, match="engine.mixed_precision='fp8'"):
        resolve_autocast_dtype("fp8", torch.device("cpu"))

"""The trainer loop in one process (debug backend, CPU) on real shards through the real stream:
exact resume, deterministic mode, non-finite handling, keep-last-N, observability outputs."""
from __future__ import annotations

import json
import time

import pytest
import torch

from mars_dist.config import load_config
from mars_dist.engine.checkpoint import committed_checkpoints, read_train_state
from mars_dist.engine.metrics import console_line
from mars_dist.engine.trainer import NonFiniteLossError
from tests.toy_task import assert_bit_identical, run_toy


def test_resume_continues_bit_identically_in_deterministic_mode(tiny_shards, tmp_path):
    det = ("engine.deterministic=true", "train.max_steps=4")
    _, straight, straight_losses = run_toy(tiny_shards, tmp_path / "a", *det)
    _, again, _ = run_toy(tiny_shards, tmp_path / "b", *det)
    assert_bit_identical(straight, again)  # same seed, same world size, no interruption
    assert not torch.are_deterministic_algorithms_enabled(), "deterministic mode must not outlive the run"

    run_toy(tiny_shards, tmp_path / "c", "engine.deterministic=true", "train.max_steps=2")
    result, resumed, resumed_losses = run_toy(tiny_shards, tmp_path / "c", *det, resume="auto")
    assert result.step == 4 and len(resumed_losses) == 2
    assert resumed_losses == straight_losses[2:], "the first loss after resume differs from the uninterrupted run"
    assert_bit_identical(straight, resumed)
    state = read_train_state(tmp_path / "c" / "checkpoints" / "step-00000004")
    assert state["samples_seen"] == 16 and state["world_size"] == 1 and state["backend"] == "debug"


def test_nonfinite_loss_is_skipped_and_counted(tiny_shards, tmp_path, monkeypatch):
    _, one_step, _ = run_toy(tiny_shards, tmp_path / "ref", "train.max_steps=1")
    monkeypatch.setenv("TOY_TASK_NONFINITE", "*:1")
    result, skipped, losses = run_toy(tiny_shards, tmp_path / "nan", "train.max_steps=2")
    assert result.nonfinite_skips == 1
    assert torch.isnan(torch.tensor(losses[1]["regression"]))
    # The skipped step changed nothing: the weights are those after the first step.
    assert_bit_identical(one_step, skipped)
    assert read_train_state(result.last_checkpoint)["nonfinite_skips"] == 1


def test_nonfinite_loss_stops_with_the_step_when_configured(tiny_shards, tmp_path, monkeypatch):
    monkeypatch.setenv("TOY_TASK_NONFINITE", "*:2")
    with pytest.raises(NonFiniteLossError, match=r"step 2 .*'regression': nan"):
        run_toy(tiny_shards, tmp_path, "train.max_steps=4", "engine.on_nonfinite=stop")


def test_keep_last_n_and_outputs(tiny_shards, tmp_path, capsys):
    result, _, _ = run_toy(tiny_shards, tmp_path, "train.max_steps=5", "checkpoint.every_steps=1",
                           "checkpoint.keep_last=2", "stages.media.every=2", "train.profile_steps=1-3")
    assert [step for step, _ in committed_checkpoints(tmp_path)] == [4, 5]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000004", "step-00000005"]
    assert result.last_checkpoint.name == "step-00000005"
    assert (tmp_path / "config.yaml").is_file()
    assert load_config(tmp_path / "config.yaml").train.max_steps == 5
    assert sorted(p.name for p in (tmp_path / "media").iterdir()) == ["step-00000002", "step-00000004"]
    traces = list((tmp_path / "profile").glob("trace-rank00000-steps1-3.json"))
    assert traces and json.loads(traces[0].read_text())["traceEvents"]
    out = capsys.readouterr().out
    assert "samples/s" in out and "data" in out and "peak mem" in out
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "perf/step_s" in line]
    assert [line["step"] for line in steps] == list(range(1, 6)), "one metrics.jsonl line per logged step"
    assert all("loss/regression" in line and line["lr/regressor"] > 0 for line in steps)
    media = [line for line in lines if "perf/step_s" not in line]
    assert [(line["step"], sorted(set(line) - {"step", "time"})) for line in media] == \
        [(2, ["media/ema_pitch_abs_error"]), (4, ["media/ema_pitch_abs_error"])], "the media stage's numbers, one line each time"


def test_console_line_keeps_what_a_person_watches():
    figures = {"loss/recon_l2": 0.0123, "loss/vq": 0.5, **{f"codebook/usage_s{k}": 0.9 for k in range(10)},
               **{f"scale/ce_s{k}": 3.0 for k in range(10)}, "grad_norm/tokenizer": 1.5,
               "lr/tokenizer": 2e-4, "lr/discriminator": 1e-4, "perf/step_s": 0.25, "perf/data_wait_s": 0.01,
               "perf/compute_s": 0.24, "perf/samples_per_s": 64.0, "perf/peak_memory_gib": 1.5}
    line = console_line(200, 800, figures)
    assert line == ("step 200/800 | recon_l2=0.0123 vq=0.5 | lr tokenizer=2.00e-04 discriminator=1.00e-04 | "
                    "64 samples/s | step 250 ms (data 10 ms) | peak mem 1.50 GiB | ETA 2m30s")
    assert "ETA" not in console_line(800, 800, figures) and len(line) < 160


def test_wandb_offline_run_keeps_its_id_across_resume(tiny_shards, tmp_path):
    run_toy(tiny_shards, tmp_path, "train.max_steps=1", "logging.wandb_mode=offline")
    time.sleep(1.0)  # wandb names an offline run's folder by its start second: two starts in one second share one
    run_toy(tiny_shards, tmp_path, "train.max_steps=2", "logging.wandb_mode=offline", resume="auto")
    run_id = read_train_state(tmp_path / "checkpoints" / "step-00000002")["wandb_run_id"]
    offline_runs = sorted(p.name for p in (tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2 and all(name.endswith(f"-{run_id}") for name in offline_runs)

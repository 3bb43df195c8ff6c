"""The tokenizer GAN resumes exactly: 2 steps + checkpoint + resume for 2 more equals 4 steps straight."""
from __future__ import annotations

from pathlib import Path

from tests.toy_task import assert_bit_identical, run_training

TINY = Path(__file__).resolve().parents[1] / "configs" / "tokenizer" / "tiny.yaml"


def run_tokenizer(shards, run_dir, max_steps, resume="none"):
    overrides = [
        f"run_dir={run_dir}", f"data.train_shards={shards['train']}", f"data.valid_shards={shards['valid']}",
        "engine.device=cpu", "engine.deterministic=true", "logging.wandb_mode=disabled", "stages.media.every=0",
        "tokenizer.disc.start_step=1", "checkpoint.every_steps=2", f"train.max_steps={max_steps}",
    ]
    return run_training(overrides, resume, config_path=TINY)


def test_resumed_tokenizer_run_gives_the_same_next_losses_and_weights(tiny_shards, tmp_path):
    straight, straight_weights, straight_losses = run_tokenizer(tiny_shards, tmp_path / "straight", 4)
    run_tokenizer(tiny_shards, tmp_path / "interrupted", 2)
    resumed, resumed_weights, resumed_losses = run_tokenizer(tiny_shards, tmp_path / "interrupted", 4, resume="auto")

    assert straight.step == resumed.step == 4
    assert len(resumed_losses) == 2, "the resumed run trains only the remaining steps"
    assert resumed_losses == straight_losses[2:], "the next losses after resume equal the uninterrupted run's"
    assert resumed_losses[0]["loss/disc"] > 0, "the discriminator is active in the resumed steps"
    assert_bit_identical(straight_weights, resumed_weights)

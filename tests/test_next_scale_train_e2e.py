"""The README's main job in miniature, through the real entry points: shards -> tokenizer training ->
export -> AR training (debug backend) -> export -> python -m mars_dist.sample -> wavs."""
from __future__ import annotations

import soundfile as sf

from data_tools.shard import main as shard_main
from mars_dist.engine.checkpoint import resolve_resume
from mars_dist.export import export_checkpoint
from mars_dist.io.exports import read_export
from mars_dist.sample import main as sample_main
from mars_dist.train import main as train_main
from tests.ar_exports import AR_TINY, TOKENIZER_TINY


def test_tokenizer_then_ar_then_sampling(synthetic_nsynth_root, tmp_path):
    shards = {}
    for split in ("train", "valid"):
        shards[split] = tmp_path / "shards" / split
        assert shard_main(["--nsynth-root", synthetic_nsynth_root, "--split", split, "--out", str(shards[split]),
                           "--shard-size", "16", "--workers", "1"]) == 0
    common = [f"data.train_shards={shards['train']}", f"data.valid_shards={shards['valid']}", "logging.wandb_mode=disabled",
              "audio.griffin_lim.n_iter=4", "stages.media.every=2"]

    def train_and_export(config, run_dir, model, *overrides):
        assert train_main(["--config", str(config), "--resume", "none", f"run_dir={run_dir}", *common, *overrides]) == 0
        return export_checkpoint(resolve_resume(run_dir, "auto"), model, run_dir / "export")

    tok = train_and_export(TOKENIZER_TINY, tmp_path / "tok", "tokenizer_ema", "train.max_steps=2")
    ar = train_and_export(AR_TINY, tmp_path / "ar", "ar", "train.max_steps=3", f"ar.tokenizer_path={tok}")
    _, config = read_export(ar)
    assert config["task"] == "ar" and config["step"] == 3
    media = sorted((tmp_path / "ar").rglob("ar-step*/*.wav"))
    assert media, "log_media wrote no generated notes during AR training"

    out = tmp_path / "samples"
    assert sample_main(["--tokenizer", str(tok), "--model", str(ar), "--out", str(out), "--pitch", "60",
                        "--family", "keyboard", "--per-label", "2", "--device", "cpu", "--gl-iters", "4"]) == 0
    wavs = sorted(out.glob("*.wav"))
    assert [w.name for w in wavs] == [f"000{i}_pitch060_keyboard_any-source_any-velocity.wav" for i in range(2)]
    for wav in wavs:
        data, rate = sf.read(wav)
        assert data.shape == (64000,) and rate == 16000

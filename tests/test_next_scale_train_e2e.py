"""The README's main job in miniature, through the real entry points: shards -> tokenizer training ->
its export (the run's export stage) -> next-scale AR training (debug backend) -> its export ->
python -m mars_dist.sample -> wavs; mars-export of the AR's last checkpoint gives the same export."""
from __future__ import annotations

import soundfile as sf

from data_tools.shard import main as shard_main
from mars_dist.engine.checkpoint import resolve_resume
from mars_dist.export import export_checkpoint
from mars_dist.io.exports import read_export, read_export_config
from mars_dist.sample import main as sample_main
from mars_dist.train import main as train_main
from tests.ar_exports import AR_TINY, TOKENIZER_TINY


def test_tokenizer_then_next_scale_ar_then_sampling(synthetic_nsynth_root, tmp_path):
    shards = {}
    for split in ("train", "valid"):
        shards[split] = tmp_path / "shards" / split
        assert shard_main(["--nsynth-root", synthetic_nsynth_root, "--split", split, "--out", str(shards[split]),
                           "--shard-size", "16", "--workers", "1"]) == 0
    common = [f"data.train_shards={shards['train']}", f"data.valid_shards={shards['valid']}", "logging.wandb_mode=disabled",
              "audio.griffin_lim.n_iter=4", "stages.media.every=2"]

    def train(config, run_dir, *overrides):
        """The run's own export: a finished run exports its task's model to run_dir/export/."""
        assert train_main(["--config", str(config), "--resume", "none", f"run_dir={run_dir}", *common, *overrides]) == 0
        return run_dir / "export"

    tok = train(TOKENIZER_TINY, tmp_path / "tok", "train.max_steps=2")
    assert (read_export_config(tok)["model"], read_export_config(tok)["step"]) == ("tokenizer_ema", 2)
    ar = train(AR_TINY, tmp_path / "ar", "train.max_steps=3", f"next_scale.tokenizer_path={tok}")
    weights, config = read_export(ar)
    assert (config["builder"], config["task"], config["model"], config["step"]) == ("next_scale", "next_scale", "next_scale", 3)
    media = sorted((tmp_path / "ar").rglob("next_scale-step*/*.wav"))
    assert media, "the media stage wrote no generated notes during AR training"
    again, again_config = read_export(export_checkpoint(resolve_resume(tmp_path / "ar", "auto"), None, tmp_path / "mars-export"))
    assert (again_config["model"], again_config["step"]) == ("next_scale", 3)
    assert again.keys() == weights.keys() and all(again[k].equal(weights[k]) for k in weights), \
        "mars-export of the last checkpoint differs from the run's own export"

    out = tmp_path / "samples"
    assert sample_main(["--tokenizer", str(tok), "--model", str(ar), "--out", str(out), "--pitch", "60",
                        "--family", "keyboard", "--per-label", "2", "--device", "cpu", "--gl-iters", "4"]) == 0
    wavs = sorted(out.glob("*.wav"))
    assert [w.name for w in wavs] == [f"000{i}_pitch060_keyboard_any-source_any-velocity.wav" for i in range(2)]
    for wav in wavs:
        data, rate = sf.read(wav)
        assert data.shape == (64000,) and rate == 16000

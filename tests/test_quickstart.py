"""launch/quickstart.sh end to end with tiny sizes: every step runs and leaves its outputs where it says."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

TINY = {
    "MARS_SKIP_SETUP": "1",  # the test already runs inside the installed environment
    "TRAIN_NOTES": "12",
    "VALID_NOTES": "6",
    "TOK_CONFIG": "configs/tokenizer/tiny.yaml",
    "TOK_STEPS": "2",
    "TOK_EVAL_EVERY": "2",
    "AR_CONFIG": "configs/next_scale/tiny.yaml",
    "AR_STEPS": "2",
    "AR_EVAL_EVERY": "2",
    "AR_OVERRIDES": "",
    "CLF_CONFIG": "configs/classifier/tiny.yaml",
    "CLF_STEPS": "2",
    "CLF_EVAL_EVERY": "2",
    "PITCHES": "60",
    "FAMILIES": "keyboard",
    "GL_ITERS": "2",
    "REPORT_PER_PITCH": "1",
    "WANDB_MODE": "disabled",
}


@pytest.mark.slow
def test_quickstart_runs_every_step_and_writes_its_outputs(tmp_path):
    run = tmp_path / "quickstart"
    env = {**os.environ, **TINY, "RUN": str(run), "PYTHON_BIN": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(REPO / "launch" / "quickstart.sh")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"quickstart failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    assert (run / "shards" / "valid" / "manifest.json").is_file()
    assert "flac" in json.loads((run / "shards" / "valid" / "manifest.json").read_text())["members"]
    media = sorted((run / "tokenizer" / "media").glob("step-*"))
    assert media and list(media[-1].glob("*.png")) and list(media[-1].glob("*.wav")), "no tokenizer reconstructions"
    for export in (run / "tokenizer" / "export", run / "next_scale" / "export"):
        assert (export / "model.safetensors").is_file() and (export / "config.json").is_file()
    generator = json.loads((run / "next_scale" / "export" / "config.json").read_text())
    assert (generator["builder"], generator["step"]) == ("next_scale", 2), "the run exported itself when it finished"
    assert json.loads((run / "tokenizer" / "export" / "config.json").read_text())["model"] == "tokenizer_ema"
    assert len(list((run / "samples").glob("*.wav"))) == 1 and len(list((run / "samples").glob("*.png"))) == 1

    report = json.loads((run / "report" / "metrics.json").read_text(),
                        parse_constant=lambda token: pytest.fail(f"metrics.json holds {token}"))
    assert report["validation_notes"] == 6 and report["reference_audio"] == "flac"
    assert {"mel_mse", "mel_mae", "gl_spectral_convergence", "codebook_usage_per_scale"} <= set(report["tokenizer"])
    assert {"conditional_match", "unconditional_match", "real_note_match"} <= set(report["pitch"])
    assert all(isinstance(report["tokenizer"][k], float) for k in ("mel_mse", "mel_mae", "gl_spectral_convergence"))

    classifier = json.loads((run / "classifier" / "export" / "config.json").read_text())
    assert classifier["task"] == "classifier" and classifier["step"] == 2
    evaluation = json.loads((run / "eval" / "metrics.json").read_text(),
                            parse_constant=lambda token: pytest.fail(f"eval/metrics.json holds {token}"))
    assert list(evaluation["sets"]) == ["reference", "reconstruction", "floor", "generated"]
    assert evaluation["exports"]["classifier"]["validation"]["valid_step"] == 2  # measured, carried by the export
    assert (run / "eval" / "table.md").is_file() and (run / "eval" / "features.npz").is_file()

    times = (run / "step_times.txt").read_text().splitlines()
    assert len(times) == 9, times
    assert str(run / "report" / "metrics.json") in proc.stdout  # the closing list of outputs
    assert str(run / "eval") in proc.stdout

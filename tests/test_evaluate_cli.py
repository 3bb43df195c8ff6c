"""mars-evaluate in one process: what lands in --out, that every number can be recomputed
from features.npz (by the metric layer and by plain numpy), VGGish for FAD, wandb, and user errors
(--help is tests/test_architecture.py's).

Tiny random-weight exports on the synthetic set: the FAD warnings about singular covariances (a few
notes of 16-d embeddings) are expected and filtered."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mars_dist.audio.config import AudioConfig
from mars_dist.cli import run_cli
from mars_dist.eval.features.vggish import VGGish
from mars_dist.eval.runner.table import COLUMNS, PAPER_ROWS, compute_set
from mars_dist.evaluate import main
from tests.ar_exports import ar_export, tokenizer_export
from tests.classifier_exports import classifier_export

REFERENCE_NOTES, GENERATED_NOTES, FLOOR_NOTES = 6, 5, 5
pytestmark = pytest.mark.filterwarnings("ignore:.*the covariance is singular:RuntimeWarning")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate_exports")
    tok = tokenizer_export(root / "tokenizer", seed=1)
    return {"tokenizer": str(tok), "next_scale": str(ar_export(root / "next_scale", tok, seed=2)),
            "classifier": str(classifier_export(root / "classifier", seed=3))}


@pytest.fixture(scope="module")
def valid_with_audio(synthetic_nsynth_root, tmp_path_factory) -> str:
    """The synthetic validation split sharded --with-audio: the reference audio is the original note."""
    from data_tools.shard import shard_nsynth

    out = tmp_path_factory.mktemp("valid_with_audio") / "valid"
    shard_nsynth(synthetic_nsynth_root, "valid", str(out), AudioConfig(), shard_size=10, workers=1, with_audio=True,
                 progress=False)
    return str(out)


def base_args(exports, reference: str, out: Path, *extra: str):
    return ["--tokenizer", exports["tokenizer"], "--classifier", exports["classifier"], "--reference", reference,
            "--limit", str(REFERENCE_NOTES), "--batch-size", "4", "--gl-iters", "2", "--device", "cpu", "--no-progress",
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def evaluated(exports, valid_with_audio, tiny_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate_out")
    args = base_args(exports, valid_with_audio, out, "--model", exports["next_scale"], "--n-generate", str(GENERATED_NOTES),
                     "--floor", tiny_shards["train"], "--pngs", "3")
    assert run_cli(main, "mars-evaluate", args) == 0
    return out, json.loads((out / "metrics.json").read_text(), parse_constant=pytest.fail), np.load(out / "features.npz")


@pytest.mark.slow
def test_metrics_json_has_every_set_and_the_table_cells(evaluated):
    _, metrics, _ = evaluated
    assert list(metrics["sets"]) == ["reference", "reconstruction", "floor", "generated"]
    assert metrics["reference"] == {"shards": metrics["reference"]["shards"], "notes": REFERENCE_NOTES, "audio": "flac"}
    assert metrics["floor"]["notes"] == FLOOR_NOTES and metrics["floor"]["audio"] == "griffin_lim_of_cmx"
    assert metrics["generation"]["notes"] == GENERATED_NOTES and metrics["fad_embedding"] == "classifier_embedding"
    generation = metrics["generation"]
    assert generation["batch_size"] == 4 and "batch" not in generation
    assert {k: generation[k] for k in ("cfg_scale", "top_k", "top_p", "temperature")} == \
        {"cfg_scale": 3.0, "top_k": 0, "top_p": 0.95, "temperature": 1.0}, "the next_scale family's default options"
    assert "iterations" not in generation, "MaskGIT's options are not the next_scale family's"
    assert set(metrics["sets"]["reconstruction"]) == {"ndb_k", "pis", "iis", "pkid", "ikid", "mel_paired", "fad"}
    assert set(metrics["sets"]["generated"]) == {"ndb_k", "pis", "iis", "pkid", "ikid", "mel_nearest", "fad"}
    assert set(metrics["sets"]["reference"]) == {"pis", "iis"}
    assert metrics["exports"]["classifier"]["validation"]["valid_notes"] == -1.0  # random weights: never measured
    table = metrics["table"]["generated"]
    assert table["MSE"] == metrics["sets"]["generated"]["mel_nearest"]["mse"]
    assert table["PKID"] == metrics["sets"]["generated"]["pkid"]["kid_imq"]
    assert metrics["table"]["reference"]["FAD"] is None and metrics["world_size"] == 1


@pytest.mark.slow
def test_every_metric_is_recomputed_from_features_npz(evaluated):
    _, metrics, features = evaluated
    for name, results in metrics["sets"].items():
        again = json.loads(json.dumps(compute_set(features, name, metrics["fad_embedding"], metrics["options"][name])))
        assert again == results, f"{name}: metrics.json differs from a recomputation on features.npz"


@pytest.mark.slow
def test_features_npz_holds_what_an_independent_implementation_needs(evaluated):
    _, metrics, f = evaluated
    n = {"reference": REFERENCE_NOTES, "reconstruction": REFERENCE_NOTES, "floor": FLOOR_NOTES,
         "generated": GENERATED_NOTES}
    for name, rows in n.items():
        assert f[f"pitch_logits_{name}"].shape == (rows, 128) and f[f"instrument_logits_{name}"].shape == (rows, 11)
        assert f[f"mel_{name}"].shape == (rows, 80, 251) and f[f"ndb_features_{name}"].shape == (rows, 2048)
        assert f[f"classifier_embedding_{name}"].shape[0] == rows
        np.testing.assert_allclose(f[f"pitch_probs_{name}"].sum(1), 1.0, rtol=1e-12)
    # plain numpy, the textbook formulas: IS = exp(mean KL(p(y|x) || p(y))) and the paired mel MSE
    p = f["pitch_probs_generated"]
    marginal = p.mean(0)
    kl = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(marginal)), 0).sum(1)
    assert np.exp(kl.mean()) == pytest.approx(metrics["table"]["generated"]["PIS"], rel=1e-9)
    mse = ((f["mel_reference"].astype(np.float64) - f["mel_reconstruction"]) ** 2).mean()
    assert mse == pytest.approx(metrics["table"]["reconstruction"]["MSE"], rel=1e-9)
    # generated notes asked for the reference notes' labels, in order, cycling
    assert f["pitch_generated"].tolist() == [f["pitch_reference"][j % REFERENCE_NOTES] for j in range(GENERATED_NOTES)]
    assert f["keys_reference"].dtype.kind == "U" and len(set(f["keys_reference"])) == REFERENCE_NOTES


@pytest.mark.slow
def test_table_md_is_shaped_like_table_1_with_the_paper_rows_marked(evaluated):
    out, metrics, _ = evaluated
    lines = (out / "table.md").read_text().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[3:] == [f"{h} {'↓' if lower else '↑'}" for h, _, _, lower in COLUMNS]
    rows = [line for line in lines[2:] if line.startswith("|")]
    assert [r.split("|")[1].strip() for r in rows] == ["real notes (reference)", "tokenizer reconstruction",
                                                        "real notes of another set (floor)", "generated",
                                                        *[f"*{label}*" for label in PAPER_ROWS]]
    assert all("a different data set" in r for r in rows[-len(PAPER_ROWS):])
    assert f"{metrics['table']['generated']['NDB/k']:.4f}" in rows[3]
    assert any("never measured" in line for line in lines)


@pytest.mark.slow
def test_spectrogram_pngs_for_each_set(evaluated):
    out, _, _ = evaluated
    pngs = sorted(p.name for p in out.glob("spectrograms_*.png"))
    assert pngs == ["spectrograms_floor.png", "spectrograms_generated.png", "spectrograms_reconstruction.png",
                    "spectrograms_reference.png"]
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


@pytest.mark.slow
def test_vggish_embedding_for_fad_and_wandb_logging(exports, valid_with_audio, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    torch.manual_seed(0)
    weights = tmp_path / "vggish.pth"
    torch.save(VGGish().state_dict(), weights)
    out = tmp_path / "out"
    assert run_cli(main, "mars-evaluate", base_args(exports, valid_with_audio, out, "--vggish", str(weights),
                                                   "--wandb-run", "evaltest1")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    f = np.load(out / "features.npz")
    assert metrics["fad_embedding"] == "vggish_embedding" and metrics["vggish"] == str(weights)
    assert f["vggish_embedding_reference"].shape == (REFERENCE_NOTES * 4, 128)  # four 0.96 s examples per 4 s note
    assert list(metrics["sets"]) == ["reference", "reconstruction"]  # no --model: no generated row
    assert metrics["table"]["reconstruction"]["FAD"] == pytest.approx(
        compute_set(f, "reconstruction", "vggish_embedding", metrics["options"]["reconstruction"])["fad"]["fad"])
    runs = list((out / "wandb").glob("offline-run-*-evaltest1"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), "no offline wandb run with the evaluation"


def user_error(capsys, argv) -> str:
    status = run_cli(main, "mars-evaluate", argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("mars-evaluate: error:")]
    assert status == 2 and len(lines) == 1, f"status {status}, stderr:\n{err}"
    return lines[0]


def test_user_errors_are_one_line_naming_the_value(capsys, exports, valid_with_audio, tmp_path):
    out = tmp_path / "out"
    args = base_args(exports, valid_with_audio, out)
    swap = lambda flag, value: [value if args[i - 1] == flag else a for i, a in enumerate(args)]  # noqa: E731
    assert "no-such-export" in user_error(capsys, swap("--classifier", str(tmp_path / "no-such-export")))
    line = user_error(capsys, swap("--classifier", exports["tokenizer"]))
    assert "exports a tokenizer model (tokenizer/tokenizer), expected classifier" in line and exports["tokenizer"] in line
    assert "no manifest" in user_error(capsys, swap("--reference", str(tmp_path)))
    assert "missing.pth: no such file" in user_error(capsys, args + ["--vggish", str(tmp_path / "missing.pth")])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    assert str(garbage) in user_error(capsys, args + ["--vggish", str(garbage)])
    assert "at least 4" in user_error(capsys, swap("--limit", "3"))
    assert "--n-generate 5 without --model" in user_error(capsys, args + ["--n-generate", "5"])
    assert "--kid-subset-size 7 exceeds" in user_error(capsys, args + ["--kid-subsets", "2", "--kid-subset-size", "7"])
    with pytest.raises(SystemExit) as exited:  # argparse's own exit: usage, then the one error line
        main(args + ["--batch-size", "0"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "mars-evaluate: error: --batch-size 0: must be >= 1" in err.splitlines(), err
    assert not out.exists(), "a refused evaluation wrote output"

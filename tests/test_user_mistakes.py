"""A user's mistake on any command line, table-driven: one `mars-<verb>: error:` line naming the value
and what is expected, exit status 2, no traceback, and nothing written (the README's promise).

Every command is run the way its console script runs it (mars_dist.cli.run_cli around its `main`),
in this process; tests/test_cli_errors.py starts the real entry points as processes."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple

import pytest

from mars_dist.cli import run_cli

REPO = Path(__file__).resolve().parents[1]
TOKENIZER_TINY = str(REPO / "configs" / "tokenizer" / "tiny.yaml")


class Mistake(NamedTuple):
    prog: str
    main: str  # "module:function"
    argv: Callable[[Dict[str, str]], List[str]]  # from the fixture's paths
    expected: str  # a regular expression the one error line must match


def _main(spec: str) -> Callable:
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


MISTAKES = {
    # training
    "train: shards that do not exist": Mistake(
        "mars-train", "mars_dist.train:main",
        lambda p: ["--config", TOKENIZER_TINY, f"run_dir={p['out']}", f"data.train_shards={p['missing']}"],
        r"{missing}/manifest.json: no manifest"),
    "train: a mistyped key": Mistake(
        "mars-train", "mars_dist.train:main",
        lambda p: ["--config", TOKENIZER_TINY, f"run_dir={p['out']}", "train.max_step=5"],
        r"unknown config key 'train.max_step' \(closest valid key: train.max_steps\)"),
    "train: an lr decay that does not exist": Mistake(
        "mars-train", "mars_dist.train:main",
        lambda p: ["--config", TOKENIZER_TINY, f"run_dir={p['out']}", "optim.decay=linear"],
        r"optim.decay='linear': expected one of none, cosine"),
    "train: an Accelerate strategy that does not exist": Mistake(
        "mars-train", "mars_dist.train:main",
        lambda p: ["--config", TOKENIZER_TINY, f"run_dir={p['out']}", "engine.accelerate.strategy=zero"],
        r"engine.accelerate.strategy='zero': expected one of ddp, fsdp"),
    "train: a ZeRO stage that does not exist (refused before DeepSpeed is imported)": Mistake(
        "mars-train", "mars_dist.train:main",
        lambda p: ["--config", TOKENIZER_TINY, f"run_dir={p['out']}", "engine.backend=deepspeed",
                   "engine.deepspeed.zero_stage=7"],
        r"engine.deepspeed.zero_stage=7: expected 1, 2 or 3"),
    "train: a global batch the micro-batches do not divide": Mistake(
        "mars-train", "mars_dist.train:main",
        lambda p: ["--config", TOKENIZER_TINY, f"run_dir={p['out']}", f"data.train_shards={p['train']}",
                   "data.batch_size=3", "data.micro_batch_size=2", "engine.device=cpu"],
        r"data.batch_size=3 is not divisible by 1 processes x data.micro_batch_size=2 = 2"),
    "train: a checkpoint resumed on other data settings (cursor mismatch)": Mistake(
        "mars-train", "mars_dist.train:main",
        lambda p: ["--config", p["toy_config"], "--resume", p["toy_checkpoint"], "data.seed=5"],
        r"stream cursor was saved with data seed 0, the stream has seed 5"),
    "train: a resume folder that does not exist": Mistake(
        "mars-train", "mars_dist.train:main",
        lambda p: ["--config", TOKENIZER_TINY, f"run_dir={p['out']}", "--resume", p["missing"]],
        r"--resume {missing}: no such checkpoint folder"),
    "train: a tokenizer export that does not exist": Mistake(
        "mars-train", "mars_dist.train:main",
        lambda p: ["--config", str(REPO / "configs" / "next_scale" / "tiny.yaml"), f"run_dir={p['out']}",
                   f"data.train_shards={p['train']}", f"next_scale.tokenizer_path={p['missing']}", "engine.device=cpu"],
        r"next_scale.tokenizer_path='{missing}': no such folder"),
    "train: an export model the task does not have (refused before training)": Mistake(
        "mars-train", "mars_dist.train:main",
        lambda p: ["--config", TOKENIZER_TINY, f"run_dir={p['out']}/run", f"data.train_shards={p['train']}",
                   "engine.device=cpu", "logging.wandb_mode=disabled", "stages.export.model=critic"],
        r"stages.export.model='critic': the tokenizer task has models tokenizer, discriminator, tokenizer_ema"),
    "train: a task that does not exist": Mistake(
        "mars-train", "mars_dist.train:main",
        lambda p: ["--config", TOKENIZER_TINY, f"run_dir={p['out']}", "task=next_scales"],
        r"task='next_scales': no such task or generator family \(built-in tasks: classifier, tokenizer, maskgit, "
        r"next_scale, next_token\)"),
    # export
    "export: a checkpoint folder that does not exist": Mistake(
        "mars-export", "mars_dist.export:main", lambda p: ["--checkpoint", p["missing"], "--out", p["out"]],
        r"--checkpoint {missing}: no such folder"),
    "export: a model the task does not have": Mistake(
        "mars-export", "mars_dist.export:main",
        lambda p: ["--checkpoint", p["toy_checkpoint"], "--model", "critic", "--out", p["out"]],
        r"--model 'critic': the tests.toy_task:ToyTask task has models"),
    # sampling and editing
    "sample: a pitch out of range": Mistake(
        "mars-sample", "mars_dist.sample:main", lambda p: [*p["sample"], "--pitch", "200"],
        r"pitch=200: expected an integer 0..127"),
    "sample: a tokenizer export that does not exist": Mistake(
        "mars-sample", "mars_dist.sample:main",
        lambda p: ["--tokenizer", p["missing"], "--model", p["next_scale"], "--out", p["out"]],
        r"{missing}: no such export folder"),
    "sample: a tokenizer given as the generator": Mistake(
        "mars-sample", "mars_dist.sample:main",
        lambda p: ["--tokenizer", p["tok"], "--model", p["tok"], "--out", p["out"], "--device", "cpu"],
        r"--model {tok}: exports a tokenizer model \(tokenizer/tokenizer\), not a generator"),
    "sample: an inpainting span past the end of the note": Mistake(
        "mars-sample", "mars_dist.sample:main",
        lambda p: [*p["sample"], "--edit", "inpaint", "--input", p["wav"], "--start", "4.5", "--end", "5.5"],
        r"inpainting --start 4.5 --end 5.5: the span runs past the end of the note, which is 4 s long \(64000 samples "
        r"at 16000 Hz\); choose an end <= 4 s"),
    "sample: a span partly past the note (not clipped silently)": Mistake(
        "mars-sample", "mars_dist.sample:main",
        lambda p: [*p["sample"], "--edit", "inpaint", "--input", p["wav"], "--start", "3.5", "--end", "4.5"],
        r"the span runs past the end of the note, which is 4 s long"),
    "sample: a bandwidth-extension cutoff above the top bin": Mistake(
        "mars-sample", "mars_dist.sample:main",
        lambda p: [*p["sample"], "--edit", "bwe", "--input", p["wav"], "--cutoff-hz", "7990"],
        r"bandwidth extension --cutoff-hz 7990: removes nothing: the spectrogram's highest bin is centred at "
        r"7984.375 Hz \(1024-point STFT at 16000 Hz, the Nyquist bin dropped\); choose a cutoff <= 7984.375 Hz"),
    "sample: a sampling flag of another family": Mistake(
        "mars-sample", "mars_dist.sample:main", lambda p: [*p["sample"], "--iterations", "4"],
        r"--iterations: not an option of the next_scale family \(its sampling flags: --cfg, --top-k, --top-p, "
        r"--temperature\)"),
    "sample: a nucleus mass above 1": Mistake(
        "mars-sample", "mars_dist.sample:main", lambda p: [*p["sample"], "--top-p", "1.5"],
        r"--top-p 1.5: must be in \[0, 1\]"),
    # encoding
    "encode: shards that do not exist": Mistake(
        "mars-encode", "mars_dist.encode:main",
        lambda p: ["encode", "--tokenizer", p["tok"], "--shards", p["missing"], "--out", p["out"], "--device", "cpu"],
        r"{missing}/manifest.json: no manifest"),
    # evaluation and the quick report
    "evaluate: a tokenizer given as the classifier": Mistake(
        "mars-evaluate", "mars_dist.evaluate:main",
        lambda p: ["--tokenizer", p["tok"], "--classifier", p["tok"], "--reference", p["valid"], "--out", p["out"],
                   "--device", "cpu"],
        r"--classifier: {tok} exports a tokenizer model \(tokenizer/tokenizer\), expected classifier"),
    "evaluate: a reference set that does not exist": Mistake(
        "mars-evaluate", "mars_dist.evaluate:main",
        lambda p: ["--tokenizer", p["tok"], "--classifier", p["classifier"], "--reference", p["missing"],
                   "--out", p["out"], "--device", "cpu"],
        r"{missing}/manifest.json: no manifest"),
    "report: a generator export that does not exist": Mistake(
        "mars-report", "mars_dist.eval.report:main",
        lambda p: ["--tokenizer", p["tok"], "--model", p["missing"], "--shards", p["valid"], "--out", p["out"],
                   "--device", "cpu"],
        r"{missing}: no such export folder"),
    # benchmarks
    "bench generate: a family that does not exist": Mistake(
        "mars-bench-generate", "mars_dist.bench.generate:main", lambda p: ["--compare", "--families", "next_tokens"],
        r"generator family 'next_tokens': no module mars_dist.models.generators.next_tokens.family"),
    "bench int8: a tokenizer export that does not exist": Mistake(
        "mars-bench-int8", "mars_dist.bench.int8:main",
        lambda p: ["--tokenizer", p["missing"], "--model", p["next_scale"], "--shards", p["valid"]],
        r"{missing}: no such export folder"),
    "bench engine: a backend variant that does not exist": Mistake(
        "mars-bench-engine", "mars_dist.bench.engine:main", lambda p: ["--variants", "zero4", "--work", p["out"]],
        r"--variants zero4: unknown zero4; expected some of ddp, fsdp, zero1, zero2, zero3"),
    "bench tokenizer: a config that does not exist": Mistake(
        "mars-bench-tokenizer", "mars_dist.bench.tokenizer:main",
        lambda p: ["--config", p["missing"] + ".yaml", "--work", p["out"], "--skip-cmx"],
        r"config file not found: {missing}\.yaml"),
    "bench presets: an argument it does not take": Mistake(
        "mars-bench-presets", "mars_dist.bench.presets:main", lambda p: ["d12"],
        r"unrecognized arguments: d12"),
    "bench data: a batch of no samples": Mistake(
        "mars-bench-data", "mars_dist.bench.data:main", lambda p: ["--batch-size", "0", "--work", p["out"]],
        r"--batch-size 0: expected an integer >= 1"),
    # data tools, sweeps, the launcher
    "shard: an NSynth root that does not exist": Mistake(
        "mars-shard", "data_tools.shard:main",
        lambda p: ["--nsynth-root", p["missing"], "--split", "train", "--out", p["out"]],
        r"{missing}/nsynth-train/examples.json: not found \(expected NSynth layout ROOT/nsynth-train/examples.json\)"),
    "shard: an override outside the audio settings": Mistake(
        "mars-shard", "data_tools.shard:main",
        lambda p: ["--nsynth-root", p["nsynth_root"], "--split", "train", "--out", p["out"], "optim.lr=1"],
        r"override 'optim.lr=1'"),
    "synthetic: a split spec without a count": Mistake(
        "mars-synthetic", "data_tools.synthetic:main", lambda p: ["--out", p["out"], "--split", "train"],
        r"argument --split: 'train': expected NAME:COUNT, e.g. train:200"),
    "inspect: a shard folder that does not exist": Mistake(
        "mars-inspect", "data_tools.inspect_shards:main", lambda p: [p["missing"]],
        r"{missing}: no such folder or S3 prefix"),
    "sweep: a config that does not exist": Mistake(
        "mars-sweep", "launch.sweep:main",
        lambda p: ["submit", "--config", p["missing"] + ".yaml", "--grid", "optim.lr=0.1,0.2", "--sweep-dir", p["out"],
                   "--dry-run"],
        r"config file not found: {missing}\.yaml"),
    "sweep: the status of a folder that holds no sweep": Mistake(
        "mars-sweep", "launch.sweep:main", lambda p: ["status", p["missing"]],
        r"{missing}: no runs of a sweep here"),
    "torchrun: no training script": Mistake(
        "mars-torchrun", "mars_dist.torchrun:main", lambda p: ["--nproc-per-node", "1"],
        r"the following arguments are required: training_script"),
    "bench eval: a classifier export that does not exist": Mistake(
        "mars-bench-eval", "mars_dist.bench.eval:main",
        lambda p: ["--tokenizer", p["tok"], "--model", p["next_scale"], "--classifier", p["missing"],
                   "--reference", p["valid"], "--floor", p["train"], "--parts", "extract", "--out", p["out"],
                   "--device", "cpu"],
        r"{missing}: no such export folder"),
}


@pytest.fixture(scope="module")
def paths(tiny_shards, tmp_path_factory) -> Dict[str, str]:
    """Inputs the mistakes are made with: exports, a checkpoint, shards, a note (all valid)."""
    from mars_dist.config import load_config, save_config
    from tests.ar_exports import tokenizer_export
    from tests.classifier_exports import classifier_export
    from tests.generator_exports import generator_export
    from tests.toy_task import run_toy, toy_overrides

    root = tmp_path_factory.mktemp("mistakes")
    tok = tokenizer_export(root / "tok")
    next_scale = generator_export(root / "next_scale", tok, "next_scale")
    result, _, _ = run_toy(tiny_shards, root / "toy_run", "train.max_steps=2")
    toy_config = root / "toy.yaml"
    save_config(load_config(None, toy_overrides(tiny_shards, root / "toy_run")), toy_config)
    from mars_dist.sample import main as sample_main

    notes = root / "notes"
    assert sample_main(["--tokenizer", str(tok), "--model", str(next_scale), "--out", str(notes), "--pitch", "60",
                        "--device", "cpu", "--gl-iters", "2"]) == 0
    p = {"tok": str(tok), "next_scale": str(next_scale), "classifier": str(classifier_export(root / "classifier")),
         "toy_checkpoint": str(result.last_checkpoint), "toy_config": str(toy_config), "train": tiny_shards["train"],
         "valid": tiny_shards["valid"], "wav": str(next(notes.glob("*.wav"))), "missing": str(root / "no-such-thing"),
         "nsynth_root": str(tiny_shards["nsynth_root"])}
    p["sample"] = ["--tokenizer", p["tok"], "--model", p["next_scale"], "--device", "cpu", "--gl-iters", "2"]
    return p


def _files(root: Path) -> set:
    return {p for p in root.rglob("*")} if root.exists() else set()


@pytest.mark.parametrize("name", list(MISTAKES))
def test_a_users_mistake_is_one_error_line_exit_2_and_nothing_written(name, paths, capsys, tmp_path):
    mistake = MISTAKES[name]
    out = tmp_path / "out"
    given = {**paths, "out": str(out)}
    argv = mistake.argv(given)
    if mistake.prog == "mars-sample" and "--out" not in argv:
        argv = [*argv, "--out", str(out)]
    before = _files(Path(paths["toy_checkpoint"]).parents[1])
    capsys.readouterr()
    try:
        status = run_cli(_main(mistake.main), mistake.prog, argv)
    except SystemExit as parser_error:  # argparse's own refusal: usage, then the one error line, status 2
        status = parser_error.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"{mistake.prog}: error:")]
    assert status == 2, err[-3000:]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    expected = mistake.expected.format(**{k: re.escape(v) for k, v in given.items() if isinstance(v, str)})
    assert re.search(expected, lines[0]), lines[0]
    assert not out.exists(), f"{out} was written: {sorted(str(p) for p in _files(out))[:5]}"
    assert _files(Path(paths["toy_checkpoint"]).parents[1]) == before, "nothing of the run it named changed"


def test_the_table_covers_every_console_script():
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {m.prog for m in MISTAKES.values()} == set(scripts)
    assert {m.prog: m.main.split(":")[0] for m in MISTAKES.values()} == {k: v.split(":")[0] for k, v in scripts.items()}
    assert len(MISTAKES) >= 20

"""The learning check of `mars-bench-generate --learn`: the generator families trained
on one tokenizer, through the real trainer and exports, and compared on the same notes.

synthetic set -> shards (validation notes with their original audio) -> small tokenizer -> the small
model of each family (configs/<family>/small.yaml, same steps and recipe) -> for each family:
  - pitch: how often the f0 of a note generated for pitch p is within a semitone of p, next to the
    floor (unconditional samples) and the ceilings (real notes, their reconstructions);
  - editing: time inpainting (1.0-2.0 s) and bandwidth extension (above 4 kHz) of validation notes,
    the family's edit next to the empty and naive-fill baselines (mars_dist.generation.editing);
  - with --evaluate: a classifier trained on the same shards, then `mars-evaluate`
    for each family (the paper's Table 1 metrics).
Every stage reuses a complete export or shard set already in --work, so an interrupted check resumes
where it stopped. Results: WORK/learn.json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from mars_dist.bench.generators import CONFIGS
from mars_dist.generation.flags import shared_options
from mars_dist.io.exports import CONFIG_JSON
from mars_dist.models.generators.family import family
from mars_dist.models.generators.options import SamplingOptions

EDITS = {"inpaint": ("TimeInpaint", (1.0, 2.0)), "bwe": ("BandwidthExtension", (4000.0,))}


def steps(max_steps: int, warmup: int = 100) -> List[str]:
    """Overrides for a run of `max_steps` (one checkpoint at the end; the configs' warm-up, shortened
    for runs too short for it)."""
    return [f"train.max_steps={max_steps}", f"checkpoint.every_steps={max_steps}",
            f"optim.warmup_steps={min(warmup, max_steps // 4)}"]


def train_export(config: Path, run_dir: Path, overrides: Sequence[str]) -> Path:
    """Trains through mars_dist.train (debug backend, this process); the run's export stage writes
    run_dir/export (the task's own model). A complete export already there is reused."""
    from mars_dist.train import main as train_main

    export = run_dir / "export"
    if (export / CONFIG_JSON).is_file():
        print(f"[learn] reusing {export}", flush=True)
        return export
    status = train_main(["--config", str(config), "--resume", "none", f"run_dir={run_dir}", *overrides])
    if status != 0:
        raise RuntimeError(f"training {config} exited with status {status}")
    return export


def edit_table(gen, notes, args, options: SamplingOptions) -> Dict[str, Any]:
    """Both edits of the first --edit-notes validation notes (their own labels) -> mean metrics per method."""
    from mars_dist.generation import editing

    n = min(args.edit_notes, len(notes.keys))
    label_sets = [{name: int(notes.labels[name][i]) for name in ("pitch", "instrument_family", "instrument_source",
                                                                   "velocity")} for i in range(n)]
    out = {}
    for kind, (cls_name, params) in EDITS.items():
        edit = getattr(editing, cls_name)(*params)
        result = editing.edit_notes(gen, notes.wave_NT[:n], edit, label_sets, options, gen.rng(0))
        out[kind] = {**edit.describe(), "notes": n, "kept_token_fraction_per_scale": result.kept_tokens,
                     "mean": result.mean_metrics()}
        print(f"\n{kind} ({edit.describe()}), {n} notes, {gen.name}:\n" + editing.metrics_table(result.mean_metrics(), gen.name),
              flush=True)
    return out


def run_learn(args) -> Dict[str, Any]:
    from mars_dist.bench.synthetic_set import synthetic_shards
    from mars_dist.eval.report import pitch_report, read_validation_notes, reconstruct
    from mars_dist.generation.loaders import load_generator, load_tokenizer

    work = Path(args.work)
    shards = synthetic_shards(work, {"train": args.train_notes, "valid": args.valid_notes}, with_audio=("valid",))
    data = [f"data.train_shards={shards['train']}", f"data.valid_shards={shards['valid']}", "logging.wandb_mode=disabled"]
    seconds: Dict[str, float] = {}
    t0 = time.perf_counter()
    tok_dir = train_export(CONFIGS / "tokenizer" / "small.yaml", work / "tokenizer", [*data, *steps(args.tok_steps)])
    seconds["tokenizer_train"] = time.perf_counter() - t0
    exports = {}
    for name in args.families:
        t0 = time.perf_counter()
        exports[name] = train_export(CONFIGS / name / "small.yaml", work / name,
                                     [*data, *steps(args.ar_steps), f"{name}.tokenizer_path={tok_dir}"])
        seconds[f"{name}_train"] = time.perf_counter() - t0
    tokenizer = load_tokenizer(tok_dir)
    notes = read_validation_notes(str(shards["valid"]), tokenizer.frontend, limit=max(16, args.edit_notes))
    recon = reconstruct(tokenizer.module, tokenizer.frontend, notes.cmx_NCHW)
    result: Dict[str, Any] = {"steps": {"tokenizer": args.tok_steps, "generators": args.ar_steps}, "families": {}}
    for name, export in exports.items():
        gen = load_generator(export, tokenizer, torch.device("cpu"))
        options = shared_options(gen.family, args)
        t0 = time.perf_counter()
        entry = {"pitch": pitch_report(gen, notes, recon.wave_NT, args.pitches, args.per_pitch, options, seed=0)}
        seconds[f"{name}_pitch"] = time.perf_counter() - t0
        if args.edit_notes:
            t0 = time.perf_counter()
            entry["editing"] = edit_table(gen, notes, args, options)
            seconds[f"{name}_editing"] = time.perf_counter() - t0
        result["families"][name] = entry
        p = entry["pitch"]
        print(f"[learn] {name}: pitch within a semitone {p['conditional_match']:.1%} (unconditional "
              f"{p['unconditional_match']:.1%}, real {p['real_note_match']:.1%}, reconstructions "
              f"{p['reconstruction_match']:.1%})", flush=True)
    if args.evaluate:
        result["evaluation"] = run_evaluation(args, work, data, tok_dir, exports, shards["valid"], seconds)
    result["seconds"] = seconds
    (work / "learn.json").write_text(json.dumps(result, indent=1))
    print(f"[learn] wrote {work / 'learn.json'}")
    return result


def run_evaluation(args, work: Path, data, tok_dir: Path, exports: Dict[str, Path], reference: Path,
                   seconds: Dict[str, float]) -> Dict[str, Any]:
    """A classifier on the same shards, then mars-evaluate for each family."""
    from mars_dist.evaluate import main as evaluate_main

    t0 = time.perf_counter()
    classifier = train_export(CONFIGS / "classifier" / "small.yaml", work / "classifier",
                              [*data, *steps(args.classifier_steps, warmup=20),
                               f"stages.validate.every={args.classifier_steps}"])
    seconds["classifier_train"] = time.perf_counter() - t0
    tables = {}
    for name, export in exports.items():
        out = work / "evaluation" / name
        options = shared_options(family(name), args)
        t0 = time.perf_counter()
        status = evaluate_main(["--tokenizer", str(tok_dir), "--model", str(export), "--classifier", str(classifier),
                                "--reference", str(reference), "--n-generate", str(args.eval_generate), "--out", str(out),
                                "--cfg", str(options.cfg_scale), "--top-p", str(options.top_p), "--device", "cpu",
                                "--no-progress"])
        seconds[f"{name}_evaluate"] = time.perf_counter() - t0
        if status != 0:
            raise RuntimeError(f"mars-evaluate for {name} exited with status {status}")
        tables[name] = json.loads((out / "metrics.json").read_text())["table"]
    print("\n" + evaluation_table(tables), flush=True)
    return tables


def evaluation_table(tables: Dict[str, Dict[str, Dict[str, Optional[float]]]]) -> str:
    """One markdown table: the real notes and reconstructions once, then each family's generated notes."""
    first = next(iter(tables.values()))
    columns = list(first["generated"])
    rows = [("real notes (reference)", first["reference"]), ("tokenizer reconstruction", first["reconstruction"])]
    rows += [(f"{name} generated", table["generated"]) for name, table in tables.items()]
    lines = ["| notes | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, cells in rows:
        lines.append(f"| {name} | " + " | ".join("–" if cells[c] is None else f"{cells[c]:.4g}" for c in columns) + " |")
    return "\n".join(lines)

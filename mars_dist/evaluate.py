"""The paper's evaluation (MARS Table 1: NDB/k, PIS, IIS, PKID, IKID, MSE, MAE, FAD) of an exported
tokenizer and generator against a reference shard set, on one or many processes.

    mars-evaluate --tokenizer TOK_EXPORT [--model GEN_EXPORT] --classifier CLF_EXPORT \\
        --reference SHARDS [--n-generate N] [--out DIR] [--floor OTHER_SHARDS] [--vggish VGGISH.pth]
    torchrun --nproc-per-node 8 -m mars_dist.evaluate ...          (same numbers, 8 x faster)
    srun/sbatch: any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT

Rows: the reference notes themselves (their Inception Scores), the tokenizer's reconstructions of
them, the notes --model generates for the reference notes' label sets (--n-generate of them, in
reference order, cycling), and with --floor the real notes of another set (what a perfect
generator would score). Every note is judged from its audio by the classifier --classifier names
(trained by this system: configs/classifier/small.yaml); FAD uses its penultimate features, or
VGGish with --vggish (a torchvggish state dict; nothing is downloaded).

Each rank takes a strided share of fixed batches of notes; rank 0 gathers the features in global
order and computes the metrics in float64. Output in --out: metrics.json, table.md, features.npz
(every array a metric was computed from), spectrograms_<set>.png. Docs: docs/eval.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from mars_dist.cli import make_parser, console_script
from mars_dist.errors import UserFileNotFoundError, UserValueError

EVAL_FORMAT = "mars_dist.evaluation/1"
GENERATED = "generated"


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    from mars_dist.generation.flags import (add_sampling_arguments, add_speed_arguments, check_sampling_arguments,
                                            families_for_help)

    p = make_parser("mars-evaluate", __doc__)
    p.add_argument("--tokenizer", required=True, help="exported tokenizer folder (its run's export/, or mars-export)")
    p.add_argument("--model", help="exported generator folder, any family (without it: no generated row)")
    p.add_argument("--classifier", required=True, help="exported classifier folder (the classifier task)")
    p.add_argument("--reference", required=True, help="reference shard set (folder or s3:// prefix), e.g. the test split")
    p.add_argument("--floor", help="another shard set whose real notes are evaluated as if generated (the floor row)")
    p.add_argument("--limit", type=int, default=0, help="reference notes, the first in manifest order (0 = all)")
    p.add_argument("--n-generate", type=int, default=0, help="generated (and floor) notes (0 = as many as reference notes)")
    p.add_argument("--out", default="runs/eval", help="output folder")
    p.add_argument("--vggish", help="torchvggish-compatible state dict (.pth) for FAD instead of the classifier's features")
    p.add_argument("--batch-size", type=int, default=16, help="notes per work item (with --seed, it fixes what is generated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gl-iters", type=int, default=None,
                   help="Griffin-Lim iterations (default: the tokenizer run's audio.griffin_lim.n_iter)")
    p.add_argument("--ndb-k", type=int, default=0, help="NDB/k bins (0 = 50, or reference notes / 10 for small sets)")
    p.add_argument("--is-splits", type=int, default=1, help="splits of the Inception Scores (1 = one score on all notes)")
    p.add_argument("--kid-subsets", type=int, default=0, help="KID subsets (0 = one estimate on the full sets)")
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--pngs", type=int, default=4, help="notes per set drawn in spectrograms_<set>.png")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--wandb-run", help="log the table to this wandb run id (e.g. the generator's training run)")
    p.add_argument("--wandb-project", default="mars_dist")
    p.add_argument("--wandb-mode", default="offline", choices=("offline", "online"))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_sampling_arguments(p, families_for_help(argv))
    add_speed_arguments(p)
    args = p.parse_args(argv)
    check_sampling_arguments(p, args)
    for name in ("batch_size", "is_splits", "kid_subset_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    for name in ("limit", "n_generate", "ndb_k", "kid_subsets", "pngs"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 0")
    if args.gl_iters is not None and args.gl_iters < 1:
        p.error(f"--gl-iters {args.gl_iters}: must be >= 1")
    return args


def load_sources(args: argparse.Namespace, device):
    """(Sources, NoteFeatures, the exports' descriptions) from the command line, checked before any work."""
    from mars_dist.eval.features.classifier import ClassifierFeatures
    from mars_dist.eval.notes import ShardNotes
    from mars_dist.eval.runner.extract import NoteFeatures, Sources
    from mars_dist.generation.flags import options_for
    from mars_dist.generation.loaders import load_generator, load_tokenizer
    from mars_dist.io.exports import read_export_config

    tokenizer = load_tokenizer(Path(args.tokenizer))
    if args.gl_iters is not None:
        tokenizer.frontend.cfg.griffin_lim.n_iter = args.gl_iters
    frontend = tokenizer.frontend
    classifier = ClassifierFeatures.from_export(Path(args.classifier), device)
    classifier.check_audio(frontend.cfg.stft.sample_rate, frontend.cfg.stft.num_samples, f"--tokenizer {args.tokenizer}")
    reference = ShardNotes(args.reference, frontend)
    floor = ShardNotes(args.floor, frontend) if args.floor else None
    generators = {GENERATED: load_generator(Path(args.model), tokenizer, device, compile=args.compile,
                                            int8=args.int8)} if args.model else {}
    args.sampling = {name: options_for(gen.family, args) for name, gen in generators.items()}
    vggish = load_vggish_arg(args.vggish).to(device) if args.vggish else None
    exports = {"tokenizer": args.tokenizer, "model": args.model, "classifier": args.classifier}
    described = {}
    for role, path in exports.items():
        if path:
            config = read_export_config(Path(path))
            described[role] = {"path": str(path), "task": config["task"], "model": config["model"], "step": config["step"]}
    described["classifier"]["validation"] = classifier.validation()
    sources = Sources(reference, tokenizer.module.to(device), floor, generators)
    return sources, NoteFeatures(classifier, frontend, vggish, args.pngs), described


class VGGishFileError(UserValueError):
    """--vggish names a file that is not a torchvggish-compatible state dict."""


def load_vggish_arg(path: str):
    from mars_dist.eval.features.vggish import VGGishWeightsError, load_vggish

    if not Path(path).is_file():
        raise UserFileNotFoundError(f"--vggish {path}: no such file (a torchvggish state dict, e.g. vggish-10086976.pth)")
    try:
        return load_vggish(path)
    except VGGishWeightsError as err:
        raise VGGishFileError(f"--vggish: {err}") from None


def check_sizes(args: argparse.Namespace, n_available: int, n_floor_available: Optional[int] = None) -> int:
    """The number of reference notes; too small a set (or a flag that would be ignored) is a user error."""
    n_reference = min(args.limit or n_available, n_available)
    if n_reference < 4:
        raise UserValueError(f"--reference {args.reference}: {n_reference} notes; the metrics need at least 4")
    if args.n_generate and not (args.model or args.floor):
        raise UserValueError(f"--n-generate {args.n_generate} without --model or --floor: nothing would be generated")
    if 0 < args.n_generate < 2:
        raise UserValueError(f"--n-generate {args.n_generate}: the metrics need at least 2 generated notes")
    n_evaluated = args.n_generate or n_reference
    if n_floor_available is not None and min(n_evaluated, n_floor_available) < 2:
        raise UserValueError(f"--floor {args.floor}: {n_floor_available} notes; the metrics need at least 2")
    smallest = min(n_reference, n_evaluated, n_evaluated if n_floor_available is None else n_floor_available)
    if args.kid_subsets and args.kid_subset_size > smallest:
        raise UserValueError(f"--kid-subset-size {args.kid_subset_size} exceeds the smallest evaluated set "
                             f"({smallest} notes): subsets are drawn without replacement")
    return n_reference


def report(args: argparse.Namespace, result, described: Dict[str, Any], sources, frontend, world: int) -> Dict[str, Any]:
    """metrics.json: what was evaluated, how, every metric's full result, and the table's cells."""
    from mars_dist.eval.runner.table import cells

    return {
        "format": EVAL_FORMAT,
        "what": "MARS Table 1 metrics of this run's notes against the reference set (docs/eval.md)",
        "exports": described,
        "reference": {"shards": str(args.reference), "notes": result.sizes["reference"], "audio": sources.reference.reference},
        "floor": {"shards": str(args.floor), "notes": result.sizes["floor"], "audio": sources.floor.reference}
        if sources.floor else None,
        "generation": {"notes": result.sizes.get(GENERATED, 0), "labels": "the reference notes' (pitch, instrument "
                       "family, source, velocity) in reference order, cycling", "seed": args.seed,
                       "batch_size": args.batch_size, **dataclasses.asdict(args.sampling[GENERATED]), "int8": args.int8}
        if sources.generators else None,
        "griffin_lim": {"n_iter": frontend.cfg.griffin_lim.n_iter, "momentum": frontend.cfg.griffin_lim.momentum},
        "fad_embedding": result.fad_embedding,
        "vggish": str(args.vggish) if args.vggish else None,
        "options": result.options,
        "sets": result.results,
        "table": {name: cells(r) for name, r in result.results.items()},
        "world_size": world,
        "seconds": result.seconds,
    }


def table_notes(body: Dict[str, Any]) -> List[str]:
    v = body["exports"]["classifier"]["validation"]
    accuracy = (f"validation accuracy pitch {v['valid_pitch_accuracy']:.1%}, instrument family "
                f"{v['valid_family_accuracy']:.1%} ({int(v['valid_notes'])} notes, step {int(v['valid_step'])})"
                if v["valid_notes"] > 0 else "validation accuracy never measured (its run had no validation step)")
    from mars_dist.eval.notes import REFERENCE_FLAC, REFERENCE_GRIFFIN_LIM

    audio = {REFERENCE_FLAC: "the stored original audio", REFERENCE_GRIFFIN_LIM: "Griffin-Lim of the stored spectrograms"}
    floor = (f" Floor: {body['floor']['shards']} ({body['floor']['notes']} real notes; their audio: "
             f"{audio[body['floor']['audio']]})." if body["floor"] else "")
    return [
        f"Reference: {body['reference']['shards']} ({body['reference']['notes']} notes; their audio: "
        f"{audio[body['reference']['audio']]}).{floor} Every set is judged from its audio; reconstructions and generated "
        f"notes through Griffin-Lim ({body['griffin_lim']['n_iter']} iterations).",
        f"Classifier {body['exports']['classifier']['path']} (step {body['exports']['classifier']['step']}): {accuracy}. "
        "PIS / IIS: "
        "Inception Scores of its softmax; PKID / IKID: unbiased MMD^2 of its logits against the reference notes' "
        "with Nistal et al.'s kernel C / (C + |x - y|^2), C = 16 (the cubic-kernel KID is in metrics.json).",
        f"NDB/k with k = {next((o['ndb_k']['k'] for o in body['options'].values() if 'ndb_k' in o), '-')} bins; MSE / MAE on "
        "the 80-band evaluation mel: reconstruction against its own note, others against the MSE-nearest reference note.",
        f"FAD on the {'VGGish' if body['fad_embedding'] == 'vggish_embedding' else 'classifier penultimate'} embedding.",
        "Paper rows (italic) are MARS on the NSynth test set with the published classifiers and VGGish: another data set, "
        "not comparable. Only the tokenizer's MSE / MAE were available offline (docs/tokenizer.md); '–' = not available.",
    ]


def main(argv: Optional[List[str]] = None) -> int:
    from mars_dist.device import resolve_device
    from mars_dist.eval.runner import output
    from mars_dist.eval.runner.plan import FLOOR, RECONSTRUCTION, REFERENCE
    from mars_dist.eval.runner.run import EvalSettings, evaluate
    from mars_dist.eval.runner.table import markdown_table, row_label
    from mars_dist.io.media import SpectrogramAxes
    from mars_dist.parallel import process_group

    args = parse_args(argv)
    info = process_group.launcher_info()
    device = resolve_device(args.device, info.local_rank, key="--device")
    started = time.perf_counter()
    sources, features, described = load_sources(args, device)
    n_reference = check_sizes(args, len(sources.reference), len(sources.floor) if sources.floor else None)
    settings = EvalSettings(n_reference, args.n_generate, args.n_generate, args.batch_size, args.seed,
                            args.sampling, args.pngs,
                            args.ndb_k, args.is_splits, args.kid_subsets, args.kid_subset_size,
                            str(device) if device.type == "cuda" else None, not args.no_progress)
    process_group.init_distributed(device)
    try:
        result = evaluate(sources, features, settings, info.rank, info.world_size)
    finally:
        process_group.destroy()
    if result is None:
        return 0
    body = report(args, result, described, sources, features.frontend, info.world_size)
    body["seconds"]["total"] = time.perf_counter() - started
    out = Path(args.out)
    rows = [(row_label(name), str(args.floor if name == FLOOR else args.reference), n, body["table"][name])
            for name, n in result.sizes.items()]
    table = markdown_table(rows, table_notes(body))
    paths = [output.write_metrics(out, body), output.write_table(out, table), output.write_features(out, result.features)]
    images = output.write_previews(out, result.previews, SpectrogramAxes.from_audio(features.frontend.cfg),
                                   {RECONSTRUCTION: REFERENCE})
    if args.wandb_run:
        output.log_to_wandb(args.wandb_run, args.wandb_project, args.wandb_mode, out, body["table"], images)
    print("\n" + table)
    print("wrote " + ", ".join(str(p) for p in paths + images))
    return 0


entry = console_script(main, "mars-evaluate")


if __name__ == "__main__":
    entry()

"""Generate NSynth-style notes from an exported tokenizer + an exported generator (any family):
labels -> token maps -> CMX tensor -> inverse CMX -> inverse log scale -> Griffin-Lim -> wav + PNG.

    mars-sample --tokenizer runs/tok/export --model runs/next_scale/export --out samples \\
        --pitch 48 60 72 --family bass keyboard --cfg 3.0 --top-p 0.95 --seed 0

The generator family is the export's builder; its sampling flags are the family's options (the
shared ones, and e.g. MaskGIT's --iterations: `mars-sample --model EXPORT --help` lists those of the
export's family, also one defined outside the package). One note per combination of the given label values (a label not given is "any"), repeated
--per-label times; or one note per row of --labels FILE (.csv with a header naming some of pitch,
instrument_family, instrument_source, velocity, an empty cell = any; or .json: a list of such
objects). Files are named by their labels, e.g. 0003_pitch060_keyboard_any-source_vel100.wav.

Zero-shot editing of real notes instead (docs/generators.md): keep part of each --input note's
tokens and regenerate the rest, next to two baselines (the removed part left silent, a naive fill),
with metrics against the unprocessed input on the removed region in OUT/edit_metrics.json:

    mars-sample --tokenizer TOK --model GEN --out edits --edit inpaint --input a.wav b.wav \
        --start 1.0 --end 2.0 [--pitch 60 ...]
    mars-sample --tokenizer TOK --model GEN --out edits --edit bwe --input a.wav --cutoff-hz 4000

The label flags then give one label set for every input (or --labels FILE one row per input;
none = unconditional).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import List, Optional

from mars_dist.cli import make_parser, console_script
from mars_dist.labels import FAMILIES, SOURCES


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    from mars_dist.generation.flags import (add_sampling_arguments, add_speed_arguments, check_sampling_arguments,
                                            families_for_help)

    p = make_parser("mars-sample", __doc__)
    p.add_argument("--tokenizer", required=True, help="exported tokenizer folder (its run's export/, or mars-export)")
    p.add_argument("--model", required=True, help="exported generator folder (any family)")
    p.add_argument("--out", required=True, help="output folder for the wav and PNG files")
    p.add_argument("--labels", help="CSV or JSON file of label sets (instead of the label flags)")
    p.add_argument("--pitch", nargs="+", help="MIDI pitch(es) 0..127")
    p.add_argument("--family", nargs="+", help=f"instrument family: 0..10 or a name ({', '.join(FAMILIES)})")
    p.add_argument("--source", nargs="+", help=f"instrument source: 0..2 or a name ({', '.join(SOURCES)})")
    p.add_argument("--velocity", nargs="+", help="MIDI velocity (mapped to the nearest of 25, 50, 75, 100, 127)")
    p.add_argument("--per-label", type=int, default=1, help="notes per label set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="notes generated together")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16"), help="generator weights / decoder precision (auto: bf16 on GPU)")
    p.add_argument("--gl-iters", type=int, default=None, help="Griffin-Lim iterations (default: the tokenizer run's audio.griffin_lim.n_iter)")
    add_sampling_arguments(p, families_for_help(argv))
    add_speed_arguments(p)
    edit = p.add_argument_group("zero-shot editing")
    edit.add_argument("--edit", choices=("inpaint", "bwe"), help="edit the --input notes instead of generating from labels")
    edit.add_argument("--input", nargs="+", help="notes to edit (mono wav at the tokenizer's sample rate and length)")
    edit.add_argument("--start", type=float, default=1.0, help="inpaint: start of the regenerated span (s)")
    edit.add_argument("--end", type=float, default=2.0, help="inpaint: end of the regenerated span (s)")
    edit.add_argument("--cutoff-hz", type=float, default=4000.0, help="bwe: keep the bands below, regenerate above (Hz)")
    args = p.parse_args(argv)
    check_sampling_arguments(p, args)
    if bool(args.edit) != bool(args.input):
        p.error("--edit and --input go together (--edit inpaint|bwe --input NOTE.wav ...)")
    if args.per_label < 1 or args.batch_size < 1:
        p.error(f"--per-label {args.per_label} and --batch-size {args.batch_size}: both must be >= 1")
    if args.gl_iters is not None and args.gl_iters < 1:
        p.error(f"--gl-iters {args.gl_iters}: must be >= 1")
    if args.labels and any((args.pitch, args.family, args.source, args.velocity)):
        p.error("give either --labels FILE or the label flags, not both")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    from mars_dist.device import resolve_device, resolve_generation_dtype
    from mars_dist.generation.flags import options_for
    from mars_dist.generation.loaders import load_generator, load_tokenizer
    from mars_dist.generation.notes import label_grid, read_label_file, write_notes

    args = parse_args(argv)
    if args.labels:
        label_sets = [s for s in read_label_file(args.labels) for _ in range(args.per_label)]
    else:
        label_sets = label_grid({"pitch": args.pitch, "instrument_family": args.family,
                                 "instrument_source": args.source, "velocity": args.velocity}, args.per_label)
    device = resolve_device(args.device, 0, key="--device")
    tokenizer = load_tokenizer(Path(args.tokenizer))
    if args.gl_iters is not None:
        tokenizer.frontend.cfg.griffin_lim.n_iter = args.gl_iters
    edit = requested_edit(args, tokenizer.frontend) if args.edit else None  # checked before the generator loads
    gen = load_generator(Path(args.model), tokenizer, device, resolve_generation_dtype(args.dtype, device), args.compile, args.int8)
    options = options_for(gen.family, args)
    if edit is not None:
        return edit_inputs(args, edit, gen, options, label_sets)
    written: List[Path] = []
    started = time.perf_counter()
    for batch in gen.generate(label_sets, options, gen.rng(args.seed), args.batch_size):
        written += write_notes(batch, Path(args.out), len(written), gen.frontend)
        print(f"generated notes {len(written) - len(batch.label_sets)}..{len(written) - 1} "
              f"({time.perf_counter() - started:.2f} s so far)", flush=True)
    print(f"wrote {len(written)} notes (wav + png) to {args.out}")
    return 0


def requested_edit(args: argparse.Namespace, frontend):
    """--edit inpaint|bwe as an edit, checked against the tokenizer's audio settings (the note's length,
    its frequency bins)."""
    from mars_dist.generation.editing import BandwidthExtension, TimeInpaint

    edit = TimeInpaint(args.start, args.end) if args.edit == "inpaint" else BandwidthExtension(args.cutoff_hz)
    edit.check(frontend)
    return edit


def edit_inputs(args: argparse.Namespace, edit, gen, options, label_sets) -> int:
    """--edit: the --input notes edited by the generator and the baselines, written with their metrics."""
    import torch

    from mars_dist.errors import UserValueError
    from mars_dist.generation.editing import edit_notes, metrics_table, read_note, write_edit

    if len(label_sets) not in (1, len(args.input)):
        raise UserValueError(f"--edit: {len(label_sets)} label sets for {len(args.input)} input notes; give one set "
                             "for all (label flags) or one per note (--labels FILE)")
    label_sets = label_sets * len(args.input) if len(label_sets) == 1 else label_sets
    waves = torch.stack([read_note(path, gen.frontend) for path in args.input])
    started = time.perf_counter()
    result = edit_notes(gen, waves, edit, label_sets, options, gen.rng(args.seed), args.batch_size)
    names = [f"{i:04d}_{Path(path).stem}" for i, path in enumerate(args.input)]
    written = write_edit(result, names, waves, Path(args.out), gen.frontend, gen.name)
    print(f"{args.edit} of {len(names)} notes by the {gen.name} generator ({time.perf_counter() - started:.2f} s); "
          f"tokens kept per scale: {' '.join(f'{k:.2f}' for k in result.kept_tokens)}")
    print(metrics_table(result.mean_metrics(), gen.name))
    print(f"wrote {len(written)} files (wav per method, png per note, edit_metrics.json) to {args.out}")
    return 0


entry = console_script(main, "mars-sample")


if __name__ == "__main__":
    entry()

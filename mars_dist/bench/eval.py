"""Speed of the distributed evaluation (mars_dist.evaluate), and a sanity check of what its table says.

    mars-bench-eval [--run runs/quickstart] [--parts extract metrics scaling]
        [--notes 32] [--sizes 1000 10000] [--worlds 1 2]
    mars-bench-eval --sanity [--run runs/quickstart] [--floor SHARDS]

extract: notes/s of ONE process for each stage of feature extraction (reading the reference notes,
  tokenizer reconstruction + Griffin-Lim, generation + Griffin-Lim, classifier, mel + NDB features,
  VGGish with random weights: its cost does not depend on them), on --notes reference notes; and,
  measured end to end as the runner does it, the cost per reference note with its reconstruction
  and one generated note (--threads threads; notes/s of one process).
metrics: seconds of each metric on random features of the real shapes at each of --sizes notes
  (reference = evaluated = N), and how they grow from the first size to the last.
scaling: the evaluate CLI under torchrun with each of --worlds processes on the same notes: wall
  time and the runner's own extraction time, and the speed-up over the first.
sanity (--sanity): Table 1 for sets a reader can order: real notes of another set (--floor: the
  floor), the tokenizer's reconstructions, the model's generated notes, and two deliberately bad
  generators (uniformly random tokens = noise; every note the tokens of one reference note).

Exports and shards default to the quickstart's (RUN/tokenizer/export, RUN/next_scale/export,
RUN/classifier/export, RUN/shards/valid, floor RUN/shards/train). Results: printed tables and OUT/bench.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from mars_dist.cli import make_parser, console_script
from mars_dist.eval.metrics import compute_metrics
from mars_dist.eval.runner.plan import RECONSTRUCTION, REFERENCE
from mars_dist.eval.runner.table import metric_inputs, metric_options, metrics_for
from mars_dist.generation.flags import add_sampling_arguments, check_sampling_arguments, shared_options
from mars_dist.generation.generator import Generator
from mars_dist.models.generators.family import known_families
from mars_dist.models.generators.options import SamplingOptions

REPO = Path(__file__).resolve().parents[2]
STAGES = ("read reference", "reconstruct + Griffin-Lim", "generate + Griffin-Lim", "classifier", "mel + NDB",
          "VGGish")
PER_NOTE = "per reference note: read, reconstruction, one generated note (with --model), all their features"
SHAPES = {"pitch_logits": (128,), "instrument_logits": (11,), "mel": (80, 251), "ndb_features": (2048,),
          "classifier_embedding": (128,)}


# --------------------------------------------------------------------------- deliberately bad generators
class RandomTokens(Generator):
    """Uniformly random codes at every scale, whatever the labels: decodes to noise."""

    name = "noise (random tokens)"

    def tokens(self, labels, batch: int, options: SamplingOptions, generator) -> List[torch.Tensor]:
        q = self.tokenizer.quantizer
        return [torch.randint(0, q.codebook_size, (batch, h, w), generator=generator, device=self.device)
                for h, w in q.scales]


class RepeatedNote(Generator):
    """The token maps of one real note for every request: perfect quality, no diversity, labels ignored."""

    def __init__(self, note_cmx_CHW: torch.Tensor, *args, **kwargs):
        super().__init__(*args, **kwargs)
        with torch.no_grad():
            self.idx_list = self.tokenizer.encode(note_cmx_CHW[None].to(self.device))

    name = "one repeated note"

    def tokens(self, labels, batch: int, options: SamplingOptions, generator) -> List[torch.Tensor]:
        return [idx.expand(batch, *idx.shape[1:]).clone() for idx in self.idx_list]


# --------------------------------------------------------------------------- inputs
def load(args, device: torch.device, floor: Optional[str] = None):
    """(Sources, NoteFeatures, {generated set: its options}) for the given exports (through the
    evaluate CLI's loader)."""
    from mars_dist.evaluate import load_sources, parse_args as evaluate_args

    argv = ["--tokenizer", args.tokenizer, "--classifier", args.classifier, "--reference", args.reference,
            "--device", str(device.type), "--gl-iters", str(args.gl_iters), "--pngs", "0"]
    argv += ["--model", args.model] if args.model else []
    argv += ["--floor", floor] if floor else []
    sources, features, _ = load_sources(evaluate_args(argv), device)
    options = {name: shared_options(gen.family, args) for name, gen in sources.generators.items()}
    return sources, features, options


def _timed(fn, notes: int) -> float:
    started = time.perf_counter()
    fn()
    return notes / (time.perf_counter() - started)


def run_extract(args, device: torch.device) -> Dict[str, float]:
    """notes/s of one process per stage, on the first --notes reference notes in batches of --batch-size."""
    from mars_dist.eval.features.spectral import mel_features, ndb_features
    from mars_dist.eval.features.vggish import VGGish
    from mars_dist.eval.notes import reconstruct
    from mars_dist.eval.runner.extract import process_item
    from mars_dist.eval.runner.plan import batch_generator, label_sets, plan_items

    sources, features, sampling = load(args, device)
    n = min(args.notes, len(sources.reference))
    batches = [range(s, min(s + args.batch_size, n)) for s in range(0, n, args.batch_size)]
    notes = [sources.reference.read(b) for b in batches]
    rates = {"read reference": _timed(lambda: [sources.reference.read(b) for b in batches], n)}
    rec = []
    rates["reconstruct + Griffin-Lim"] = _timed(lambda: rec.extend(
        reconstruct(sources.tokenizer, features.frontend, x.cmx_NCHW, args.batch_size) for x in notes), n)
    if sources.generators:
        name, gen = next(iter(sources.generators.items()))
        rates["generate + Griffin-Lim"] = _timed(lambda: [next(gen.generate(
            label_sets(x.labels), sampling[name], batch_generator(0, i, device), len(x.keys))) for i, x in enumerate(notes)], n)
    waves = [x.wave_NT for x in notes]
    rates["classifier"] = _timed(lambda: [features.classifier(w) for w in waves], n)
    rates["mel + NDB"] = _timed(lambda: [(mel_features(w), ndb_features(w, features.frontend)) for w in waves], n)
    vggish = None if args.no_vggish else VGGish().eval()
    if vggish is not None:
        rates["VGGish"] = _timed(lambda: [vggish.embed(w) for w in waves], n)
    # Measured, not summed from the stages: what the runner does per work item (process_item), for the
    # reference notes (read + reconstruction) and as many generated notes, all features included.
    features.vggish = vggish
    items = plan_items({REFERENCE: n, **{name: n for name in sources.generators}}, args.batch_size)
    rates[PER_NOTE] = _timed(lambda: [process_item(i, sources, features, sampling, 0, n) for i in items], n)
    return rates


def random_features(n: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """Features of the real shapes for a reference and an evaluated set of n notes each."""
    rng = np.random.default_rng(seed)
    out = {}
    for set_name in (REFERENCE, RECONSTRUCTION, "generated"):
        for name, shape in SHAPES.items():
            value = rng.standard_normal((n, *shape)).astype(np.float32)
            out[f"{name}_{set_name}"] = np.clip(value * 0.1 + 0.5, 0, 1) if name == "mel" else value * 3
    return out


def run_metrics(sizes: Sequence[int]) -> Dict[str, Dict[str, float]]:
    """{metric: {N: seconds}} (mel_paired on the reconstruction set, everything else on the generated set)."""
    times: Dict[str, Dict[str, float]] = {}
    for n in sizes:
        features = random_features(n)
        for evaluated in ("generated", RECONSTRUCTION):
            inputs = metric_inputs(features, evaluated, "classifier_embedding")
            options = metric_options(evaluated, n)
            for name in metrics_for(evaluated):
                if name in times and str(n) in times[name]:
                    continue
                started = time.perf_counter()
                compute_metrics(inputs, [name], {k: v for k, v in options.items() if k == name})
                times.setdefault(name, {})[str(n)] = time.perf_counter() - started
    return times


def run_scaling(args, worlds: Sequence[int]) -> Dict[str, Dict[str, float]]:
    """The evaluate CLI under torchrun with each world size on the same notes (wall and extraction seconds)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for world in worlds:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world),
                   "-m", "mars_dist.evaluate", "--tokenizer", args.tokenizer, "--classifier", args.classifier,
                   "--reference", args.reference, "--limit", str(args.notes), "--batch-size", str(args.batch_size),
                   "--gl-iters", str(args.gl_iters), "--device", args.device, "--no-progress",
                   "--out", str(Path(tmp) / str(world))] + (["--model", args.model] if args.model else [])
            started = time.perf_counter()
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads)})
            wall = time.perf_counter() - started
            if proc.returncode != 0:
                raise RuntimeError(f"evaluate with {world} processes failed:\n{proc.stderr[-3000:]}")
            seconds = json.loads((Path(tmp) / str(world) / "metrics.json").read_text())["seconds"]
            out[str(world)] = {"wall_s": wall, "extract_s": seconds["extract_rank0"], "metrics_s": seconds["metrics"]}
    first = out[str(worlds[0])]
    for row in out.values():
        row["extract_speedup"] = first["extract_s"] / row["extract_s"]
        row["wall_speedup"] = first["wall_s"] / row["wall_s"]
    return out


def run_sanity(args, device: torch.device) -> Dict[str, Any]:
    """Table 1 with a floor, the reconstructions, the model and two bad generators (see the module docstring)."""
    from mars_dist.eval.runner.run import EvalSettings, evaluate
    from mars_dist.eval.runner.table import cells, markdown_table, row_label

    sources, features, sampling = load(args, device, args.floor)
    n = min(args.notes, len(sources.reference))
    tokenizer, frontend = sources.tokenizer, features.frontend
    for bad in (RandomTokens(tokenizer, frontend, device),
                RepeatedNote(sources.reference.read([0]).cmx_NCHW[0], tokenizer, frontend, device)):
        sources.generators[bad.name] = bad
        sampling[bad.name] = bad.options()
    result = evaluate(sources, features, EvalSettings(n, n, n, args.batch_size, 0, sampling))
    table_cells = {name: cells(r) for name, r in result.results.items()}
    rows = [(row_label(name), args.floor if name == "floor" else args.reference, k, table_cells[name])
            for name, k in result.sizes.items()]
    return {"table": markdown_table(rows, []), "cells": table_cells}


# --------------------------------------------------------------------------- CLI
def markdown(rows: List[List[str]], header: List[str]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = make_parser("mars-bench-eval", __doc__)
    p.add_argument("--run", default="runs/quickstart", help="quickstart folder the default exports and shards come from")
    p.add_argument("--tokenizer"), p.add_argument("--model"), p.add_argument("--classifier")
    p.add_argument("--reference"), p.add_argument("--floor")
    p.add_argument("--parts", nargs="+", default=["extract", "metrics", "scaling"], choices=("extract", "metrics", "scaling"))
    p.add_argument("--sanity", action="store_true", help="the sanity table instead of the speed parts")
    p.add_argument("--notes", type=int, default=32, help="reference notes for extract, scaling and sanity")
    p.add_argument("--batch-size", type=int, default=8, help="notes per work item")
    p.add_argument("--sizes", nargs="+", type=int, default=[1000, 10000], help="notes per set for the metric timings")
    p.add_argument("--worlds", nargs="+", type=int, default=[1, 2])
    p.add_argument("--gl-iters", type=int, default=32)
    p.add_argument("--no-vggish", action="store_true")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads per process, here and in each torchrun worker (notes/s are per process)")
    p.add_argument("--out", default="runs/bench-eval")
    add_sampling_arguments(p, known_families())
    args = p.parse_args(argv)
    check_sampling_arguments(p, args)
    run = Path(args.run)
    args.tokenizer = args.tokenizer or str(run / "tokenizer" / "export")
    args.model = args.model or str(run / "next_scale" / "export")
    args.classifier = args.classifier or str(run / "classifier" / "export")
    args.reference = args.reference or str(run / "shards" / "valid")
    args.floor = args.floor or str(run / "shards" / "train")
    if args.notes < 4 or args.batch_size < 1 or min(args.sizes) < 4 or min(args.worlds) < 1 or args.threads < 1:
        p.error(f"--notes {args.notes} and --sizes {args.sizes} must be >= 4, --batch-size {args.batch_size}, --worlds "
                f"{args.worlds} and --threads {args.threads} >= 1")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    from mars_dist.device import resolve_device
    from mars_dist.io.atomic import atomic_write_text

    args = parse_args(argv)
    device = resolve_device(args.device, 0, key="--device")
    torch.set_num_threads(args.threads)
    results: Dict[str, Any] = {"threads": torch.get_num_threads(), "notes": args.notes, "batch_size": args.batch_size}
    if args.sanity:
        results["sanity"] = run_sanity(args, device)
        print(results["sanity"]["table"])
    else:
        if "extract" in args.parts:
            results["extract_notes_per_s"] = rates = run_extract(args, device)
            print(f"\nfeature extraction, one process ({torch.get_num_threads()} threads, {args.notes} notes, batch "
                  f"{args.batch_size}, Griffin-Lim {args.gl_iters} iterations)")
            print(markdown([[k, f"{v:.2f}", f"{1 / v:.3f}"] for k, v in rates.items()], ["stage", "notes/s", "s/note"]))
        if "metrics" in args.parts:
            results["metric_seconds"] = times = run_metrics(args.sizes)
            sizes = [str(n) for n in args.sizes]
            growth = f"x{sizes[-1]}/{sizes[0]}"
            print("\nmetric computation (float64, random features of the real shapes, reference = evaluated = N)")
            rows = [[name] + [f"{t[s]:.3f}" for s in sizes] + [f"{t[sizes[-1]] / max(t[sizes[0]], 1e-9):.0f}"]
                    for name, t in times.items()]
            totals = [sum(t[s] for t in times.values()) for s in sizes]
            rows.append(["all"] + [f"{v:.2f}" for v in totals] + [f"{totals[-1] / totals[0]:.0f}"])
            print(markdown(rows, ["metric"] + [f"N = {s} (s)" for s in sizes] + [f"growth {growth}"]))
        if "scaling" in args.parts:
            results["scaling"] = scaling = run_scaling(args, args.worlds)
            print(f"\nscaling: evaluate under torchrun on {args.notes} reference (+ as many generated) notes")
            print(markdown([[w, f"{r['wall_s']:.1f}", f"{r['extract_s']:.1f}", f"{r['extract_speedup']:.2f}",
                             f"{r['wall_speedup']:.2f}"] for w, r in scaling.items()],
                           ["processes", "wall (s)", "extraction (s)", "extraction speed-up", "wall speed-up"]))
    out = Path(args.out) / "bench.json"
    atomic_write_text(out, json.dumps(results, indent=1))
    print(f"\nwrote {out}")
    return 0


entry = console_script(main, "mars-bench-eval")


if __name__ == "__main__":
    entry()

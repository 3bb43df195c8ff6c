"""A QUICK report on an exported tokenizer + AR: a handful of numbers that say "it learned", in a minute on a CPU.

    mars-report --tokenizer TOK_EXPORT --model GENERATOR_EXPORT --shards VALID_SHARDS --out DIR \\
        [--pitches 48 60 72] [--per-pitch 4] [--gl-iters N] [--limit N] [--cfg 3.0] [--top-p 0.95] [--seed 0]

(a) Tokenizer, on the validation notes (manifest order, the first --limit): mel-MSE / mel-MAE under
the evaluation protocol (mars_dist.audio.mel: Griffin-Lim audio of the reconstruction vs the
original), Griffin-Lim spectral convergence of that audio, CMX-space MSE, and the fraction of the
codebook each scale uses. The original is the note's stored .flac when the shards were written
with --with-audio (the protocol proper; the report then also gives the Griffin-Lim floor, the
error of phase recovery alone on the unquantized input), otherwise Griffin-Lim of the stored CMX
tensor (which measures the tokenizer alone, with phase recovery on both sides). metrics.json names
which one was used.

(b) AR: how often the estimated f0 (mars_dist.eval.pitch) of a note generated for pitch p (pitch
the only label, classifier-free guidance) lies within a semitone of p; next to it the same test on
the real validation notes (the estimator's ceiling), on their reconstructions (the tokenizer's
ceiling) and on unconditional samples scored against the same requested pitches (chance).

This is NOT the evaluation suite of the paper (NDB/k, Inception Scores, KID, FAD need a trained
classifier): that is `mars-evaluate` (docs/eval.md). Output: DIR/metrics.json
(written atomically) and a table on stdout. The notes are read and reconstructed by
mars_dist/eval/notes.py, which the distributed evaluation shares.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from mars_dist.audio.frontend import AudioFrontend
from mars_dist.audio.griffinlim import spectral_convergence
from mars_dist.audio.mel import mel_mse_mae
from mars_dist.cli import make_parser, console_script
from mars_dist.errors import UserValueError
from mars_dist.eval.notes import (REFERENCE_FLAC, REFERENCE_GRIFFIN_LIM, Notes, Reconstruction,  # noqa: F401 (re-exported)
                                   griffin_lim_audio, read_validation_notes, reconstruct)
from mars_dist.eval.pitch import pitch_hits
from mars_dist.eval.runner.output import check_finite
from mars_dist.generation.flags import (add_sampling_arguments, add_speed_arguments, check_sampling_arguments,
                                        families_for_help, options_for)
from mars_dist.generation.generator import Generator
from mars_dist.generation.notes import LabelSet
from mars_dist.io.atomic import atomic_write_text
from mars_dist.models.generators.options import SamplingOptions

REPORT_FORMAT = "mars_dist.quick_report/1"
METRICS_FILE = "metrics.json"


# --------------------------------------------------------------------------- (a) tokenizer
def reconstruction_metrics(frontend: AudioFrontend, cmx_NCHW: torch.Tensor, wave_ref_NT: torch.Tensor,
                           rec: Reconstruction) -> Dict[str, Any]:
    """Mel errors and spectral convergence of the reconstruction's audio vs the reference, CMX MSE, code usage."""
    mse, mae = mel_mse_mae(wave_ref_NT, rec.wave_NT)
    return {
        "mel_mse": mse,
        "mel_mae": mae,
        "gl_spectral_convergence": spectral_convergence(frontend.wave_to_magnitude(wave_ref_NT),
                                                        frontend.wave_to_magnitude(rec.wave_NT)),
        "magnitude_spectral_convergence": spectral_convergence(frontend.cmx_to_magnitude(cmx_NCHW),
                                                               frontend.cmx_to_magnitude(rec.cmx_NCHW)),
        "cmx_mse": float((rec.cmx_NCHW - cmx_NCHW).double().pow(2).mean()),
        "codebook_usage_per_scale": [round(float((h > 0).float().mean()), 4) for h in rec.code_hits],
    }


def griffin_lim_floor(frontend: AudioFrontend, cmx_NCHW: torch.Tensor, wave_ref_NT: torch.Tensor) -> Dict[str, float]:
    """Mel errors of Griffin-Lim on the UNQUANTIZED input vs the original audio: what no tokenizer can beat."""
    mse, mae = mel_mse_mae(wave_ref_NT, griffin_lim_audio(frontend, cmx_NCHW))
    return {"gl_floor_mel_mse": mse, "gl_floor_mel_mae": mae}


# --------------------------------------------------------------------------- (b) AR pitch
def generate_waves(gen: Generator, label_sets: Sequence[LabelSet], options: SamplingOptions,
                   generator: torch.Generator, batch: int) -> torch.Tensor:
    """Audio [N, num_samples] of one generated note per label set."""
    return torch.cat([notes.wave_BN.cpu() for notes in gen.generate(label_sets, options, generator, batch)])


def pitch_report(gen: Generator, notes: Notes, recon_wave_NT: torch.Tensor, pitches: Sequence[int],
                 per_pitch: int, options: SamplingOptions, seed: int, batch: int = 16) -> Dict[str, Any]:
    """Fractions of notes whose f0 is within a semitone of their pitch: generated (conditional,
    unconditional = chance), real validation notes and their reconstructions (ceilings)."""
    if not pitches or per_pitch < 1:
        raise UserValueError(f"pitches={list(pitches)}, per_pitch={per_pitch}: need at least one pitch and per_pitch >= 1")
    sr = gen.frontend.cfg.stft.sample_rate
    requested_N = torch.tensor([p for p in pitches for _ in range(per_pitch)])
    generator = gen.rng(seed)
    conditional = pitch_hits(generate_waves(gen, [{"pitch": int(p)} for p in requested_N], options, generator, batch),
                             requested_N, sr)
    unconditional = pitch_hits(generate_waves(gen, [{}] * len(requested_N), options, generator, batch), requested_N, sr)
    return {
        "pitches": [int(p) for p in pitches],
        "per_pitch": per_pitch,
        "cfg": options.cfg_scale,
        "top_k": options.top_k,
        "top_p": options.top_p,
        "temperature": options.temperature,
        "conditional_match": float(conditional.float().mean()),
        "conditional_match_per_pitch": {str(p): float(conditional[requested_N == p].float().mean()) for p in pitches},
        "unconditional_match": float(unconditional.float().mean()),
        "real_note_match": float(pitch_hits(notes.wave_NT, notes.pitch_N, sr).float().mean()),
        "reconstruction_match": float(pitch_hits(recon_wave_NT, notes.pitch_N, sr).float().mean()),
    }


# --------------------------------------------------------------------------- the report
def quick_report(tokenizer: torch.nn.Module, gen: Optional[Generator], frontend: AudioFrontend,
                 notes: Notes, pitches: Sequence[int], per_pitch: int, options: Optional[SamplingOptions],
                 seed: int = 0, batch: int = 16, device: Optional[torch.device] = None) -> Dict[str, Any]:
    """Both parts of the report as one JSON-ready dict (the generator part is skipped when `gen` is None)."""
    t0 = time.perf_counter()
    device = device or torch.device("cpu")
    tokenizer = tokenizer.to(device)
    rec = reconstruct(tokenizer, frontend, notes.cmx_NCHW, batch)
    tok = reconstruction_metrics(frontend, notes.cmx_NCHW, notes.wave_NT, rec)
    if notes.reference == REFERENCE_FLAC:
        tok.update(griffin_lim_floor(frontend, notes.cmx_NCHW, notes.wave_NT))
    report: Dict[str, Any] = {
        "validation_notes": len(notes.keys),
        "reference_audio": notes.reference,
        "griffin_lim": {"n_iter": frontend.cfg.griffin_lim.n_iter, "momentum": frontend.cfg.griffin_lim.momentum},
        "tokenizer": tok,
        "seconds": {"tokenizer": time.perf_counter() - t0},
    }
    if gen is not None:
        t1 = time.perf_counter()
        report["pitch"] = pitch_report(gen, notes, rec.wave_NT, pitches, per_pitch, options, seed, batch)
        report["seconds"]["pitch"] = time.perf_counter() - t1
    return report


def print_table(report: Dict[str, Any]) -> None:
    tok = report["tokenizer"]
    ref = "stored .flac" if report["reference_audio"] == REFERENCE_FLAC else "Griffin-Lim of the stored CMX"
    steps = ", ".join(f"{k} {v} steps" for k, v in report.get("training_steps", {}).items())
    print(f"\nquick report ({steps + '; ' if steps else ''}{report['validation_notes']} validation notes; "
          f"reference audio: {ref}; Griffin-Lim {report['griffin_lim']['n_iter']} iterations)")
    print("tokenizer reconstruction")
    print(f"  mel-MSE {tok['mel_mse']:.4f}   mel-MAE {tok['mel_mae']:.4f}   (paper's tokenizer: 0.0143 / 0.0915)")
    if "gl_floor_mel_mse" in tok:
        print(f"  Griffin-Lim floor (unquantized input): mel-MSE {tok['gl_floor_mel_mse']:.4f}   "
              f"mel-MAE {tok['gl_floor_mel_mae']:.4f}")
    print(f"  spectral convergence: audio {tok['gl_spectral_convergence']:.3f}, "
          f"magnitude {tok['magnitude_spectral_convergence']:.3f};  CMX MSE {tok['cmx_mse']:.5f}")
    print(f"  codebook usage per scale: {' '.join(f'{u:.2f}' for u in tok['codebook_usage_per_scale'])}")
    if "pitch" in report:
        p = report["pitch"]
        n = len(p["pitches"]) * p["per_pitch"]
        print(f"pitch within a semitone (f0 estimate; {n} generated notes per row, cfg {p['cfg']}, top-p {p['top_p']})")
        for label, key in (("generated, conditional", "conditional_match"),
                           ("generated, unconditional (chance)", "unconditional_match"),
                           ("real validation notes (ceiling)", "real_note_match"),
                           ("their reconstructions", "reconstruction_match")):
            print(f"  {label:36s} {p[key]:6.1%}")
        print("  conditional per pitch: " + "  ".join(f"{k}: {v:.0%}" for k, v in p["conditional_match_per_pitch"].items()))


# --------------------------------------------------------------------------- CLI
def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = make_parser("mars-report", __doc__)
    p.add_argument("--tokenizer", required=True, help="exported tokenizer folder (its run's export/, or mars-export)")
    p.add_argument("--model", help="exported generator folder, any family (without it: the tokenizer part only)")
    p.add_argument("--shards", required=True, help="validation shard set (folder or s3:// prefix)")
    p.add_argument("--out", required=True, help="folder for metrics.json")
    p.add_argument("--pitches", nargs="+", type=int, default=[36, 48, 60, 72, 84], help="MIDI pitches to generate")
    p.add_argument("--per-pitch", type=int, default=4, help="generated notes per pitch (and as many unconditional)")
    p.add_argument("--gl-iters", type=int, default=None,
                   help="Griffin-Lim iterations (default: the tokenizer run's audio.griffin_lim.n_iter)")
    p.add_argument("--limit", type=int, default=0, help="validation notes to use, in manifest order (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="notes generated together")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    add_sampling_arguments(p, families_for_help(argv))
    add_speed_arguments(p)
    args = p.parse_args(argv)
    check_sampling_arguments(p, args)
    if args.per_pitch < 1 or args.batch_size < 1 or args.limit < 0 or (args.gl_iters is not None and args.gl_iters < 1):
        p.error(f"--per-pitch {args.per_pitch}, --batch-size {args.batch_size}, --gl-iters {args.gl_iters}, --limit "
                f"{args.limit}: --per-pitch, --batch-size and --gl-iters must be >= 1, --limit >= 0")
    if any(not 0 <= v <= 127 for v in args.pitches):
        p.error(f"--pitches {args.pitches}: MIDI pitches are 0..127")
    return args


def load_exports(tokenizer_dir: str, model_dir: Optional[str], device: torch.device, compile: bool = False,
                 int8: bool = False):
    """(tokenizer, Generator or None, audio front-end, {task: training step} of each export) from export folders."""
    from mars_dist.generation.loaders import load_generator, load_tokenizer
    from mars_dist.io.exports import read_export_config

    tokenizer = load_tokenizer(Path(tokenizer_dir))
    gen = load_generator(Path(model_dir), tokenizer, device, compile=compile, int8=int8) if model_dir else None
    configs = [read_export_config(Path(d)) for d in (tokenizer_dir, model_dir) if d]
    return tokenizer.module, gen, tokenizer.frontend, {c["task"]: c["step"] for c in configs}


def main(argv: Optional[List[str]] = None) -> int:
    from mars_dist.device import resolve_device

    args = parse_args(argv)
    device = resolve_device(args.device, 0, key="--device")
    tokenizer, gen, frontend, steps = load_exports(args.tokenizer, args.model, device, args.compile, args.int8)
    if args.gl_iters is not None:
        frontend.cfg.griffin_lim.n_iter = args.gl_iters
    t0 = time.perf_counter()
    notes = read_validation_notes(args.shards, frontend, args.limit)
    read_s = time.perf_counter() - t0
    options = options_for(gen.family, args) if gen is not None else None
    body = quick_report(tokenizer, gen, frontend, notes, args.pitches, args.per_pitch, options, args.seed,
                        args.batch_size, device)
    body["seconds"]["read_notes"] = read_s
    report = {
        "format": REPORT_FORMAT,
        "what": "quick report: tokenizer reconstruction + pitch accuracy of generated notes; not the paper's "
                "evaluation suite (NDB/k, IS, KID, FAD)",
        "tokenizer_export": str(args.tokenizer),
        "generator_export": str(args.model) if args.model else None,
        "training_steps": steps,
        "shards": str(args.shards),
        **body,
    }
    check_finite(report, "quick report")
    out = Path(args.out) / METRICS_FILE
    atomic_write_text(out, json.dumps(report, indent=1))
    print_table(report)
    print(f"\nmetrics: {out}")
    return 0


entry = console_script(main, "mars-report")


if __name__ == "__main__":
    entry()

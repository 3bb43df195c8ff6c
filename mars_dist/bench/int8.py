"""What `--int8` (int8 matmuls in the generator and the tokenizer's decoder) changes, on trained
exports, measured against the float model and against the noise of sampling itself.

    mars-bench-int8 --tokenizer TOK_EXPORT --model GEN_EXPORT --shards VALID_SHARDS \
        [--limit 64] [--pitches 36 48 60 72 84] [--per-pitch 4] [--dtype fp32] [--json out.json] [sampling flags]

1. Teacher-forced (next-scale AR exports): on the validation notes' own token maps and labels, the
   per-token cross-entropy of the float and of the int8 model, the mean KL(float || int8) of their
   next-token distributions and how often their most likely token agrees.
2. Decode: the CMX mean squared difference between the float and the int8 decoder on the same
   tokens, next to the tokenizer's own reconstruction error (float decode vs the input).
3. Sampling (every family): notes for the requested pitches with one seed, float and int8; the
   fraction whose f0 lies within a semitone of the request for each, the fraction of tokens equal,
   and the same two figures for the float model with another seed (what sampling noise alone does).
   Seconds per note of each run, side by side.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F

from mars_dist.cli import make_parser, console_script
from mars_dist.eval.notes import read_validation_notes
from mars_dist.eval.pitch import pitch_hits
from mars_dist.generation.flags import add_sampling_arguments, check_sampling_arguments, families_for_help, options_for
from mars_dist.generation.generator import FamilyGenerator
from mars_dist.generation.loaders import load_generator, load_tokenizer
from mars_dist.labels import CONDITION_CLASSES
from mars_dist.models.generators.options import SamplingOptions


@torch.no_grad()
def teacher_forced(float_gen: FamilyGenerator, int8_gen: FamilyGenerator, idx_list: List[torch.Tensor],
                   labels: Dict[str, torch.Tensor], batch: int) -> Optional[Dict[str, float]]:
    """Cross-entropy, KL and top-1 agreement of the two next-scale models on real token maps (None for
    families whose training input is not the quantizer's teacher-forcing pyramid)."""
    quantizer = float_gen.tokenizer.quantizer
    if float_gen.name != "next_scale":
        return None
    sums = {"ce_float": 0.0, "ce_int8": 0.0, "kl": 0.0, "top1_agree": 0.0}
    tokens = 0
    for start in range(0, idx_list[0].shape[0], batch):
        idx = [t[start:start + batch] for t in idx_list]
        lab = {k: v[start:start + batch] for k, v in labels.items()}
        x_BLC = quantizer.teacher_forcing_inputs(idx)
        target_BL = torch.cat([t.flatten(1) for t in idx], dim=1)
        logp_f = F.log_softmax(float_gen.model(lab, x_BLC.to(float_gen.dtype)).float(), dim=-1)
        logp_q = F.log_softmax(int8_gen.model(lab, x_BLC.to(int8_gen.dtype)).float(), dim=-1)
        sums["ce_float"] += float(-logp_f.gather(-1, target_BL[..., None]).sum())
        sums["ce_int8"] += float(-logp_q.gather(-1, target_BL[..., None]).sum())
        sums["kl"] += float((logp_f.exp() * (logp_f - logp_q)).sum())
        sums["top1_agree"] += float((logp_f.argmax(-1) == logp_q.argmax(-1)).sum())
        tokens += target_BL.numel()
    return {k: v / tokens for k, v in sums.items()}


@torch.no_grad()
def decode_difference(float_gen: FamilyGenerator, int8_gen: FamilyGenerator, idx_list: List[torch.Tensor],
                      cmx_NCHW: torch.Tensor) -> Dict[str, float]:
    cmx_f = float_gen.spectrogram(idx_list)
    cmx_q = int8_gen.spectrogram(idx_list)
    return {"mse_int8_vs_float_decode": float(F.mse_loss(cmx_q, cmx_f)),
            "mse_float_decode_vs_input": float(F.mse_loss(cmx_f, cmx_NCHW))}


def sample(gen: FamilyGenerator, pitches: List[int], options: SamplingOptions, seed: int, batch: int):
    """(audio [N, T], token maps, seconds per note) for one note per requested pitch, seeded."""
    label_sets = [{"pitch": p} for p in pitches]
    started = time.perf_counter()
    batches = list(gen.generate(label_sets, options, gen.rng(seed), batch))
    seconds = (time.perf_counter() - started) / len(pitches)
    wave = torch.cat([b.wave_BN for b in batches])
    idx = [torch.cat([b.idx_list[k] for b in batches]) for k in range(len(batches[0].idx_list))]
    return wave, idx, seconds


def equal_fraction(a: List[torch.Tensor], b: List[torch.Tensor]) -> float:
    return sum(int((x == y).sum()) for x, y in zip(a, b)) / sum(x.numel() for x in a)


def run(args: argparse.Namespace) -> Dict[str, Any]:
    device = torch.device("cpu")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    tokenizer = load_tokenizer(Path(args.tokenizer))
    if args.gl_iters:
        tokenizer.frontend.cfg.griffin_lim.n_iter = args.gl_iters
    float_gen = load_generator(Path(args.model), tokenizer, device, dtype)
    int8_gen = load_generator(Path(args.model), tokenizer, device, dtype, int8=True)
    notes = read_validation_notes(args.shards, tokenizer.frontend, args.limit)
    idx_list = tokenizer.module.encode(notes.cmx_NCHW)
    labels = {name: notes.labels[name] for name in CONDITION_CLASSES if name in notes.labels}
    result: Dict[str, Any] = {"model": args.model, "family": float_gen.name, "dtype": args.dtype,
                              "validation_notes": len(notes.keys)}
    result["teacher_forced"] = teacher_forced(float_gen, int8_gen, idx_list, labels, args.batch_size)
    result["decode"] = decode_difference(float_gen, int8_gen, idx_list, notes.cmx_NCHW)

    options = options_for(float_gen.family, args)
    pitches = [p for p in args.pitches for _ in range(args.per_pitch)]
    requested = torch.tensor(pitches)
    sr = tokenizer.frontend.cfg.stft.sample_rate
    sample(int8_gen, pitches[:1], options, 0, 1)  # compiles the int8 kernels outside the timed runs
    runs = {"float": sample(float_gen, pitches, options, args.seed, args.batch_size),
            "int8": sample(int8_gen, pitches, options, args.seed, args.batch_size),
            "float_other_seed": sample(float_gen, pitches, options, args.seed + 1, args.batch_size)}
    result["sampling"] = {
        "notes": len(pitches), "seed": args.seed, "cfg": options.cfg_scale, "top_p": options.top_p,
        **{f"pitch_match_{name}": float(pitch_hits(wave, requested, sr).float().mean()) for name, (wave, _, _) in runs.items()},
        "tokens_equal_int8_vs_float": equal_fraction(runs["int8"][1], runs["float"][1]),
        "tokens_equal_other_seed_vs_float": equal_fraction(runs["float_other_seed"][1], runs["float"][1]),
        **{f"seconds_per_note_{name}": seconds for name, (_, _, seconds) in runs.items()},
    }
    return result


def print_result(result: Dict[str, Any]) -> None:
    print(f"{result['family']} export {result['model']} ({result['dtype']} vs int8), {result['validation_notes']} "
          f"validation notes")
    tf = result["teacher_forced"]
    if tf:
        print(f"teacher-forced: cross-entropy float {tf['ce_float']:.4f} int8 {tf['ce_int8']:.4f} nats/token; "
              f"KL(float || int8) {tf['kl']:.5f} nats/token; top-1 agreement {tf['top1_agree']:.4f}")
    d = result["decode"]
    print(f"decode: CMX MSE int8 vs float {d['mse_int8_vs_float_decode']:.3g}; the tokenizer's own error "
          f"(float decode vs input) {d['mse_float_decode_vs_input']:.3g}")
    s = result["sampling"]
    print(f"sampling {s['notes']} notes (cfg {s['cfg']}, top-p {s['top_p']}): within a semitone: float "
          f"{s['pitch_match_float']:.3f}, int8 {s['pitch_match_int8']:.3f}, float with seed {s['seed'] + 1} "
          f"{s['pitch_match_float_other_seed']:.3f}; tokens equal to float's: int8 {s['tokens_equal_int8_vs_float']:.3f}, "
          f"other seed {s['tokens_equal_other_seed_vs_float']:.3f}; seconds per note float "
          f"{s['seconds_per_note_float']:.3f}, int8 {s['seconds_per_note_int8']:.3f} "
          f"(x{s['seconds_per_note_float'] / s['seconds_per_note_int8']:.2f})")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = make_parser("mars-bench-int8", __doc__)
    p.add_argument("--tokenizer", required=True, help="tokenizer export folder")
    p.add_argument("--model", required=True, help="generator export folder (any family)")
    p.add_argument("--shards", required=True, help="validation shard set (local folder or s3://...)")
    p.add_argument("--limit", type=int, default=64, help="validation notes for parts 1 and 2 (0 = all)")
    p.add_argument("--pitches", nargs="+", type=int, default=[36, 43, 48, 55, 60, 67, 72, 79, 84])
    p.add_argument("--per-pitch", type=int, default=4)
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="the float model's precision")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="notes generated (and teacher-forced) together")
    p.add_argument("--gl-iters", type=int, default=0, help="Griffin-Lim iterations (0 = the export's)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--json", help="also write the result to this JSON file")
    add_sampling_arguments(p, families_for_help(argv))
    args = p.parse_args(argv)
    check_sampling_arguments(p, args)
    if args.per_pitch < 1 or args.batch_size < 1 or args.limit < 0:
        p.error(f"--per-pitch {args.per_pitch}, --batch-size {args.batch_size}, --limit {args.limit}: --per-pitch and "
                "--batch-size must be >= 1, --limit >= 0")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    print_result(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


entry = console_script(main, "mars-bench-int8")


if __name__ == "__main__":
    entry()

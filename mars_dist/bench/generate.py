"""Generation speed, the side-by-side comparison of the generator families, and a learning check.

Speed (default): seconds per generated 4 s note, split into AR sampling (with CFG, so two
branches), tokenizer decode and Griffin-Lim, and the real-time factor (seconds of compute per
second of audio; < 1 is faster than real time), for each size preset and batch size, side by side:

    mars-bench-generate [--presets tiny small d12 d16] [--batches 1 16] [--dtypes fp32 bf16]
        [--modes eager compiled int8] [--family next_scale] [sampling flags]

Weights are random: the time per note does not depend on them (sampling sorts the whole
vocabulary for top-p whatever the distribution). Tokenizer per preset: tiny and small use
configs/tokenizer/{tiny,small}.yaml, d12..d24 the paper's (configs/tokenizer/paper.yaml).

Comparison (docs/generators.md): the generator families (every known one by default: the built-in
three, and those named in MARS_DIST_FAMILIES) on the same tokenizer at matched sizes (the same
preset), measured side by side in one run: sequential forward passes per note, seconds per note at
each batch size, notes/s and RTF; then how the token stage of each family grows with the finest map
(16 x 16 vs 32 x 32 tokens):

    mars-bench-generate --compare [--presets small] [--families next_scale next_token maskgit pkg.mod:NAME]
        [--map-sizes 16 32] [--map-preset tiny]

Attention (on a GPU): which fused SDPA kernels accept the training block-causal mask, and their
time against the math fallback:   mars-bench-generate --attention

Learning check (mars_dist/bench/generate_learn.py): synthetic set -> shards -> tokenizer (small) ->
the small model of each family, all through the real trainer for a bounded number of steps, then
notes generated for requested pitches; reports how often the f0 of a generated note lies within a
semitone of the requested pitch (and the same for the tokenizer's reconstructions of real notes,
the ceiling, and for unconditional samples, the floor), the zero-shot editing table of each family
against the baselines and, with --evaluate, the evaluation's table (mars-evaluate):

    mars-bench-generate --learn --work runs/learn-check [--tok-steps 600 --ar-steps 600]
        [--families next_scale next_token maskgit] [--edit-notes 16] [--evaluate]
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from mars_dist.audio.config import AudioConfig
from mars_dist.audio.frontend import AudioFrontend
from mars_dist.bench.generators import TOKENIZER_OF_PRESET, random_generator, tokenizer_config, tokenizer_config_for
from mars_dist.cli import make_parser, console_script
from mars_dist.device import resolve_device
from mars_dist.generation.flags import add_sampling_arguments, check_sampling_arguments, shared_options
from mars_dist.generation.generator import FamilyGenerator
from mars_dist.generation.notes import labels_to_tensors
from mars_dist.models.generators.family import GeneratorFamily, TokenGeometry, family, known_families
from mars_dist.models.generators.options import SamplingOptions
from mars_dist.models.generators.presets import TRUNK_PRESETS
from mars_dist.models.tokenizer.model import SpectrogramTokenizer
from mars_dist.models.tokenizer.quantizer import MultiScaleQuantizer

NOTE_SECONDS = 4.0
SPEED_PRESETS = ["tiny", "small", "d12", "d16"]
MODES = ["eager", "compiled", "int8"]  # the speed table's modes, in the order each repeat runs them
COMPARE_PRESETS = ["small"]
# Finest token map -> a scale schedule ending there (16: the paper's; 32: VAR's 512-px schedule).
MAP_SCHEDULES = {
    16: [1, 2, 3, 4, 6, 8, 10, 13, 16],
    32: [1, 2, 3, 4, 6, 9, 13, 18, 24, 32],
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batch(gen: FamilyGenerator, batch: int, options: SamplingOptions, seed: int) -> Dict[str, object]:
    """Seconds for one batch, per stage ("ar", "decode", "griffin_lim"), and the tokens drawn ("tokens")."""
    g = torch.Generator(gen.device).manual_seed(seed)
    labels = labels_to_tensors([{"pitch": 48 + i % 36, "instrument_family": i % 11} for i in range(batch)], gen.device)
    times = {}
    t0 = time.perf_counter()
    idx_list = gen.tokens(labels, batch, options, g)
    _sync(gen.device)
    t1 = time.perf_counter()
    cmx = gen.spectrogram(idx_list)
    _sync(gen.device)
    t2 = time.perf_counter()
    wave = gen.audio(cmx)
    _sync(gen.device)
    t3 = time.perf_counter()
    assert wave.shape == (batch, gen.frontend.cfg.stft.num_samples)
    times.update(ar=t1 - t0, decode=t2 - t1, griffin_lim=t3 - t2)
    return {**times, "tokens": idx_list}


def run_compare(args) -> Dict[str, List[Dict[str, object]]]:
    """The families side by side: for each preset and batch size, every family in turn on one shared
    tokenizer, so they see the same machine load; then the token stage alone versus the map size."""
    device = resolve_device(args.device, 0, key="--device")
    audio_cfg = AudioConfig()
    audio_cfg.griffin_lim.n_iter = args.gl_iters
    # One dtype for the whole comparison: the last of --dtypes, else bf16 on a GPU and fp32 on a CPU
    # (there bf16 made the next-token AR's one-token steps several times slower, the others ~2x).
    dtype_name = args.dtypes[-1] if args.dtypes else ("bf16" if device.type == "cuda" else "fp32")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    families = [family(name) for name in args.families]
    options = {spec.key: shared_options(spec, args) for spec in families}
    shared = options[families[0].key]
    print(f"device {device}, torch threads {torch.get_num_threads()}, {dtype_name}, Griffin-Lim {args.gl_iters} "
          f"iterations, cfg {shared.cfg_scale} (two branches), top-p {shared.top_p}, each family's own options at their "
          f"defaults unless given; seconds per 4 s note (fastest of {args.repeats})", flush=True)
    header = (f"{'preset':>6} {'family':>10} {'params':>8} {'passes':>6} {'GFLOP':>7} {'batch':>5} | {'tokens':>7} "
              f"{'decode':>7} {'GL':>6} {'total':>7} | {'notes/s':>7} {'RTF':>6}")
    print(header + "\n" + "-" * len(header))
    rows: List[Dict[str, object]] = []
    for preset_name in args.presets:
        torch.manual_seed(0)
        tokenizer = SpectrogramTokenizer(tokenizer_config_for(preset_name), AudioFrontend(audio_cfg).cmx_shape)
        gens = {spec.key: random_generator(spec, preset_name, audio_cfg, dtype, device, tokenizer) for spec in families}
        for name, gen in gens.items():
            time_batch(gen, 1, options[name], seed=0)  # warm-up
        for batch in args.batches:
            for name, gen in gens.items():
                runs = [time_batch(gen, batch, options[name], seed=r) for r in range(args.repeats)]
                per_note = {k: min(r[k] for r in runs) / batch for k in ("ar", "decode", "griffin_lim")}
                total = sum(per_note.values())
                row = {"preset": preset_name, "family": name, "params": sum(p.numel() for p in gen.model.parameters()),
                       "sequential_passes": gen.sequential_steps(options[name]), "batch": batch,
                       "gflop_per_note": gen.family.flops_per_sample(gen.model, training=False) / 1e9,
                       **{f"{k}_s_per_note": v for k, v in per_note.items()}, "total_s_per_note": total,
                       "notes_per_s": 1.0 / total, "real_time_factor": total / NOTE_SECONDS}
                rows.append(row)
                print(f"{preset_name:>6} {name[-10:]:>10} {row['params'] / 1e6:>7.1f}M {row['sequential_passes']:>6} "
                      f"{row['gflop_per_note']:>7.1f} {batch:>5} | {per_note['ar']:>7.3f} {per_note['decode']:>7.3f} "
                      f"{per_note['griffin_lim']:>6.3f} {total:>7.3f} | {1.0 / total:>7.2f} {total / NOTE_SECONDS:>6.3f}",
                      flush=True)
        del gens, tokenizer
    return {"families": rows, "map_sizes": run_map_sizes(args, device, dtype, families, options) if args.map_sizes else []}


def run_map_sizes(args, device: torch.device, dtype: torch.dtype, families: List[GeneratorFamily],
                  options: Dict[str, SamplingOptions]) -> List[Dict[str, object]]:
    """Seconds of the token stage alone (batch 1) per family for finest maps of each --map-sizes,
    and each family's time over the next-scale AR's: the sequential passes grow as the token count
    for next-token, as the scale count for next-scale, and stay at the iteration count for MaskGIT."""
    tok = tokenizer_config(TOKENIZER_OF_PRESET.get(args.map_preset, "paper"))
    print(f"\ntoken stage alone vs finest map size ({args.map_preset} preset, codebook {tok.codebook_size}, batch 1)")
    print(f"{'map':>5} {'tokens':>6} {'family':>10} {'passes':>6} {'seconds':>8} {'x next-scale':>12}")
    rows: List[Dict[str, object]] = []
    for size in args.map_sizes:
        scales = [(s, s) for s in MAP_SCHEDULES[size]]
        torch.manual_seed(0)
        quantizer = MultiScaleQuantizer(tok.codebook_size, tok.codebook_dim, scales).eval().to(device)
        labels = labels_to_tensors([{"pitch": 60, "instrument_family": 3}], device)
        seconds = {}
        for spec in families:
            model = spec.build(spec.preset(args.map_preset), TokenGeometry.of(quantizer)).to(device, dtype).eval()

            def run(seed: int) -> None:
                spec.sample(model, quantizer, labels, 1, options[spec.key], torch.Generator(device).manual_seed(seed))

            if size == args.map_sizes[0]:
                run(0)  # warm-up (allocator, kernels), once per family: a run at the larger map is minutes on a CPU
            times = []
            for r in range(args.repeats):
                t0 = time.perf_counter()
                run(r)
                _sync(device)
                times.append(time.perf_counter() - t0)
            seconds[spec.key] = min(times)
            rows.append({"finest_map": size, "tokens": sum(s * s for s in MAP_SCHEDULES[size]), "family": spec.key,
                         "sequential_passes": spec.sequential_steps(model, options[spec.key]), "seconds": seconds[spec.key]})
        for row in rows[-len(families):]:
            row["ratio_to_next_scale"] = row["seconds"] / seconds["next_scale"] if "next_scale" in seconds else None
            ratio = f"{row['ratio_to_next_scale']:.1f}" if row["ratio_to_next_scale"] is not None else "-"
            print(f"{size:>3}^2 {row['tokens']:>6} {str(row['family'])[-10:]:>10} {row['sequential_passes']:>6} "
                  f"{row['seconds']:>8.3f} {ratio:>12}", flush=True)
    return rows


def run_speed(args) -> List[Dict[str, object]]:
    """For each preset and dtype, the plain model and (with --modes ... compiled int8) the torch.compile'd
    one and the int8 one (Generator.int8: transformer and decoder matmuls in int8, on a copy of the
    same weights) side by side: every repeat runs each mode in turn, so a drift of the machine's speed
    (this shared CPU's varies by 20-30% over minutes) reaches all modes alike. A row also counts the
    tokens equal to the plain row's for the same seed (float rounding in fused kernels can flip a
    near-tie in a draw; int8 changes the logits by ~1%, and every later token of a note follows the
    first one that differs)."""
    device = resolve_device(args.device, 0, key="--device")
    audio_cfg = AudioConfig()
    audio_cfg.griffin_lim.n_iter = args.gl_iters
    spec = family(args.family)
    options = shared_options(spec, args)
    modes = sorted(set(args.modes), key=MODES.index)
    rows = []
    print(f"device {device}, torch threads {torch.get_num_threads()}, Griffin-Lim {args.gl_iters} iterations, "
          f"{spec.key}, cfg {options.cfg_scale} (two branches), top-p {options.top_p}; seconds per 4 s note (fastest of {args.repeats}, "
          f"the modes interleaved)", flush=True)
    header = (f"{'preset':>6} {'AR params':>10} {'dtype':>5} {'mode':>8} {'batch':>5} | {'AR':>7} {'decode':>7} {'GL':>7} "
              f"{'total':>7} | {'RTF':>6} {'x eager':>7} | {'same tokens':>11}")
    print(header)
    print("-" * len(header))
    for preset in args.presets:
        for dtype_name in args.dtypes:
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
            torch.manual_seed(0)
            plain = random_generator(spec, preset, audio_cfg, dtype, device)
            params = sum(p.numel() for p in plain.model.parameters())
            gens = {mode: plain for mode in modes if mode != "int8"}
            if "int8" in modes:
                gens["int8"] = copy.deepcopy(plain).int8()

            def run(mode: str, batch: int, seed: int) -> Dict[str, object]:
                if mode != "int8":
                    plain.model.compile_stages(mode == "compiled")
                return time_batch(gens[mode], batch, options, seed)

            first_call = {}
            for mode in modes:
                t0 = time.perf_counter()
                run(mode, 1, 0)  # warm-up: allocator, kernels, lazy inits, compilation
                first_call[mode] = time.perf_counter() - t0
            for batch in args.batches:
                runs: Dict[str, List[Dict[str, object]]] = {mode: [] for mode in modes}
                for r in range(args.repeats):
                    for mode in modes:
                        runs[mode].append(run(mode, batch, r))
                eager_total = None
                for mode in modes:
                    per_note = {k: min(t[k] for t in runs[mode]) / batch for k in ("ar", "decode", "griffin_lim")}
                    total = sum(per_note.values())
                    eager_total = total if mode == "eager" else eager_total
                    same = None
                    if mode != "eager" and "eager" in runs:
                        ours, theirs = runs[mode][0]["tokens"], runs["eager"][0]["tokens"]
                        same = (sum(int((a == b).sum()) for a, b in zip(ours, theirs)), sum(a.numel() for a in ours))
                    speedup = eager_total / total if eager_total else None
                    row = {"preset": preset, "ar_params": params, "dtype": dtype_name, "mode": mode, "batch": batch,
                           **{f"{k}_s_per_note": v for k, v in per_note.items()}, "total_s_per_note": total,
                           "real_time_factor": total / NOTE_SECONDS, "speedup_over_eager": speedup,
                           "first_call_s": first_call[mode], "tokens_equal_to_eager": same}
                    rows.append(row)
                    same_text = "-" if same is None else f"{same[0]}/{same[1]}"
                    speed_text = "-" if speedup is None else f"{speedup:.2f}"
                    print(f"{preset:>6} {params / 1e6:>9.1f}M {dtype_name:>5} {mode:>8} {batch:>5} | {per_note['ar']:>7.3f} "
                          f"{per_note['decode']:>7.3f} {per_note['griffin_lim']:>7.3f} {total:>7.3f} | "
                          f"{total / NOTE_SECONDS:>6.3f} {speed_text:>7} | {same_text:>11}", flush=True)
            for mode in modes:
                if mode != "eager":
                    print(f"{'':>6} ({mode}: first call {first_call[mode]:.1f} s, compilation included)", flush=True)
            plain.model.compile_stages(False)
            del gens, plain
    return rows


def run_attention(args) -> None:
    """Times SDPA with the block-causal mask per backend (one AR layer's shapes, bf16, training size)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from mars_dist.models.generators.next_scale.model import block_causal_mask

    if not torch.cuda.is_available():
        print("--attention needs a CUDA device: on the CPU SDPA has one fused kernel and no fallback choice to check")
        return
    cfg = family("next_scale").preset(args.presets[-1])
    scales = tokenizer_config_for(args.presets[-1]).scales
    mask = block_causal_mask([tuple(s) for s in scales]).cuda()
    L, H, c, B = mask.shape[0], cfg.heads, cfg.width // cfg.heads, args.attention_batch
    q, k, v = (torch.randn(B, H, L, c, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    print(f"block-causal SDPA, B={B} H={H} L={L} head_dim={c}, bf16, forward+backward, ms per call")
    for name, backend in [("efficient", SDPBackend.EFFICIENT_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("flash", SDPBackend.FLASH_ATTENTION), ("math", SDPBackend.MATH)]:
        try:
            with sdpa_kernel([backend]):
                for _ in range(3):
                    torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(args.repeats * 10):
                    torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()
                torch.cuda.synchronize()
            print(f"  {name:>9}: {(time.perf_counter() - t0) / (args.repeats * 10) * 1e3:8.2f}")
        except RuntimeError as err:
            print(f"  {name:>9}: not available for this mask ({str(err).splitlines()[0][:100]})")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = make_parser("mars-bench-generate", __doc__)
    p.add_argument("--presets", nargs="+", default=None, choices=list(TRUNK_PRESETS),
                   help="size presets (default: tiny small d12 d16; with --compare: small, so it ends in minutes "
                        "on a CPU: the next-token AR needs 655 sequential passes per note)")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--dtypes", nargs="+", default=None, choices=["fp32", "bf16"],
                   help="default: fp32 bf16; with --compare one dtype, bf16 on a GPU and fp32 on a CPU")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per setting (the fastest counts)")
    p.add_argument("--modes", nargs="+", default=["eager"], choices=MODES,
                   help="speed table: the plain model, its torch.compile'd stages (FamilyGenerator.compile) and/or its "
                        "int8 matmuls (FamilyGenerator.int8, CPU)")
    p.add_argument("--family", default="next_scale", help="speed table: the generator family timed")
    p.add_argument("--gl-iters", type=int, default=32)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--compare", action="store_true", help="the generator families side by side at matched sizes")
    p.add_argument("--families", nargs="+", default=None,
                   help="--compare: the families (default: every known one; a family defined elsewhere as "
                        "package.module:NAME)")
    p.add_argument("--map-sizes", nargs="*", type=int, default=[16, 32], choices=sorted(MAP_SCHEDULES),
                   help="--compare: finest token maps for the token-stage scaling (none: skip it)")
    p.add_argument("--map-preset", default="tiny", choices=list(TRUNK_PRESETS),
                   help="--compare: preset of the scaling runs (tiny: the 32 x 32 map has 2,240 tokens, which at "
                        "the small preset take the next-token AR and MaskGIT minutes each on a CPU)")
    p.add_argument("--attention", action="store_true", help="GPU: SDPA kernels vs the block-causal mask")
    p.add_argument("--attention-batch", type=int, default=16)
    p.add_argument("--learn", action="store_true", help="the learning check instead of the speed table")
    p.add_argument("--work", default="runs/bench-generate-learn")
    p.add_argument("--train-notes", type=int, default=512)
    p.add_argument("--valid-notes", type=int, default=64)
    p.add_argument("--tok-steps", type=int, default=600)
    p.add_argument("--ar-steps", type=int, default=600, help="--learn: training steps of each generator family")
    p.add_argument("--pitches", nargs="+", type=int, default=[36, 43, 48, 55, 60, 67, 72, 79, 84])
    p.add_argument("--per-pitch", type=int, default=4)
    p.add_argument("--edit-notes", type=int, default=16, help="--learn: validation notes in the editing table (0 = skip)")
    p.add_argument("--evaluate", action="store_true", help="--learn: also train the classifier and run mars-evaluate")
    p.add_argument("--classifier-steps", type=int, default=300)
    p.add_argument("--eval-generate", type=int, default=64, help="--learn --evaluate: generated notes per family")
    add_sampling_arguments(p, known_families())
    args = p.parse_args(argv)
    check_sampling_arguments(p, args)
    if args.presets is None:
        args.presets = COMPARE_PRESETS if args.compare else SPEED_PRESETS
    if args.dtypes is None and not args.compare:
        args.dtypes = ["fp32", "bf16"]
    if args.families is None:
        args.families = [spec.key for spec in known_families()] if args.compare else ["next_scale", "next_token", "maskgit"]
    for name in args.families + [args.family]:
        family(name)  # an unknown family is one error line, before any work
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.attention:
        run_attention(args)
    elif args.learn:
        from mars_dist.bench.generate_learn import run_learn

        run_learn(args)
    elif args.compare:
        result = run_compare(args)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
    else:
        rows = run_speed(args)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


entry = console_script(main, "mars-bench-generate")


if __name__ == "__main__":
    entry()

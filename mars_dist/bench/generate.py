"""Generation speed, and a learning check, of tokenizer + next-scale AR + Griffin-Lim.

Speed (default): seconds per generated 4 s note, split into AR sampling (with CFG, so two
branches), tokenizer decode and Griffin-Lim, and the real-time factor (seconds of compute per
second of audio; < 1 is faster than real time), for each size preset and batch size, side by side:

    python -m mars_dist.bench.generate [--presets tiny small d12 d16] [--batches 1 16] [--dtypes fp32 bf16]

Weights are random: the time per note does not depend on them (sampling sorts the whole
vocabulary for top-p whatever the distribution). Tokenizer per preset: tiny and small use
configs/tokenizer/{tiny,small}.yaml, d12..d24 the paper's (configs/tokenizer/paper.yaml).

Attention (on a GPU): which fused SDPA kernels accept the training block-causal mask, and their
time against the math fallback:   python -m mars_dist.bench.generate --attention

Learning check: synthetic set -> shards -> tokenizer (small) -> AR (small), both through the real
trainer for a bounded number of steps, then notes generated for requested pitches; reports how
often the f0 of a generated note lies within a semitone of the requested pitch (and the same for
the tokenizer's reconstructions of real notes, the ceiling, and for unconditional samples, the floor):

    python -m mars_dist.bench.generate --learn --work runs/learn-check [--tok-steps 600 --ar-steps 600]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from mars_dist.audio.config import AudioConfig
from mars_dist.audio.frontend import AudioFrontend
from mars_dist.config import load_config
from mars_dist.engine.device import resolve_device
from mars_dist.models.generators.next_scale.model import NextScaleAR
from mars_dist.models.generators.next_scale.config import AR_PRESETS, ar_preset
from mars_dist.generation.generator import Generator, SamplingSettings
from mars_dist.generation.notes import labels_to_tensors
from mars_dist.models.tokenizer.model import SpectrogramTokenizer
from mars_dist.tasks.ar import NextScaleGenerator

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TOKENIZER_OF_PRESET = {"tiny": "tiny", "small": "small"}  # every other preset: the paper tokenizer
NOTE_SECONDS = 4.0


def tokenizer_config_for(preset: str):
    """The tokenizer settings a preset is used with (configs/tokenizer/{tiny,small,paper}.yaml)."""
    return tokenizer_config(TOKENIZER_OF_PRESET.get(preset, "paper"))


def tokenizer_config(name: str):
    path = CONFIGS / "tokenizer" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the benchmark reads the repository's tokenizer configs")
    return load_config(path).tokenizer


def build_generator(preset: str, audio_cfg: AudioConfig, dtype: torch.dtype, device: torch.device) -> NextScaleGenerator:
    frontend = AudioFrontend(audio_cfg)
    tokenizer = SpectrogramTokenizer(tokenizer_config_for(preset), frontend.cmx_shape)
    q = tokenizer.quantizer
    ar = NextScaleAR(ar_preset(preset), q.scales, q.codebook_size, q.codebook_dim)
    return NextScaleGenerator(ar, tokenizer, frontend, device, dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batch(gen: Generator, batch: int, settings: SamplingSettings, seed: int) -> Dict[str, float]:
    """Seconds for one batch, per stage."""
    g = torch.Generator(gen.device).manual_seed(seed)
    labels = labels_to_tensors([{"pitch": 48 + i % 36, "instrument_family": i % 11} for i in range(batch)], gen.device)
    times = {}
    t0 = time.perf_counter()
    idx_list = gen.tokens(labels, batch, settings, g)
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
    return times


def run_speed(args) -> List[Dict[str, object]]:
    device = resolve_device(args.device, 0, key="--device")
    audio_cfg = AudioConfig()
    audio_cfg.griffin_lim.n_iter = args.gl_iters
    settings = SamplingSettings(cfg_scale=args.cfg, top_k=args.top_k, top_p=args.top_p)
    rows = []
    print(f"device {device}, torch threads {torch.get_num_threads()}, Griffin-Lim {args.gl_iters} iterations, "
          f"cfg {args.cfg} (two AR branches), top-p {args.top_p}; seconds per 4 s note", flush=True)
    header = f"{'preset':>6} {'AR params':>10} {'dtype':>5} {'batch':>5} | {'AR':>7} {'decode':>7} {'GL':>7} {'total':>7} | {'RTF':>6}"
    print(header)
    print("-" * len(header))
    for preset in args.presets:
        for dtype_name in args.dtypes:
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
            torch.manual_seed(0)
            gen = build_generator(preset, audio_cfg, dtype, device)
            params = sum(p.numel() for p in gen.ar.parameters())
            time_batch(gen, 1, settings, seed=0)  # warm-up: allocator, kernels, lazy inits
            for batch in args.batches:
                runs = [time_batch(gen, batch, settings, seed=r) for r in range(args.repeats)]
                per_note = {k: min(r[k] for r in runs) / batch for k in runs[0]}
                total = sum(per_note.values())
                row = {"preset": preset, "ar_params": params, "dtype": dtype_name, "batch": batch,
                       **{f"{k}_s_per_note": v for k, v in per_note.items()}, "total_s_per_note": total,
                       "real_time_factor": total / NOTE_SECONDS}
                rows.append(row)
                print(f"{preset:>6} {params / 1e6:>9.1f}M {dtype_name:>5} {batch:>5} | {per_note['ar']:>7.3f} "
                      f"{per_note['decode']:>7.3f} {per_note['griffin_lim']:>7.3f} {total:>7.3f} | {total / NOTE_SECONDS:>6.3f}",
                      flush=True)
            del gen
    return rows


def run_attention(args) -> None:
    """Times SDPA with the block-causal mask per backend (one AR layer's shapes, bf16, training size)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from mars_dist.models.generators.next_scale.model import block_causal_mask

    if not torch.cuda.is_available():
        print("--attention needs a CUDA device: on the CPU SDPA has one fused kernel and no fallback choice to check")
        return
    cfg = ar_preset(args.presets[-1])
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


# --------------------------------------------------------------------------- learning check
def _train(config: Path, run_dir: Path, model: Optional[str], overrides: Sequence[str]) -> Path:
    """Trains through mars_dist.train (debug backend, this process) and exports `model` of the last checkpoint."""
    from mars_dist.engine.checkpoint import resolve_resume
    from mars_dist.export import export_checkpoint
    from mars_dist.train import main as train_main

    status = train_main(["--config", str(config), "--resume", "none", f"run_dir={run_dir}", *overrides])
    if status != 0:
        raise RuntimeError(f"training {config} exited with status {status}")
    last = resolve_resume(run_dir, "auto")
    return export_checkpoint(last, model, run_dir / "export")


def run_learn(args) -> Dict[str, float]:
    from mars_dist.bench.synthetic_set import synthetic_shards
    from mars_dist.eval.report import pitch_report, read_validation_notes, reconstruct
    from mars_dist.generation.loaders import load_generator, load_tokenizer

    work = Path(args.work)
    shards = synthetic_shards(work, {"train": args.train_notes, "valid": args.valid_notes})
    data = [f"data.train_shards={shards['train']}", f"data.valid_shards={shards['valid']}", "logging.wandb_mode=disabled"]
    t0 = time.perf_counter()
    tok_dir = _train(CONFIGS / "tokenizer" / "small.yaml", work / "tokenizer", "tokenizer_ema", [*data, f"train.max_steps={args.tok_steps}",
                                                                                 f"checkpoint.every_steps={args.tok_steps}"])
    t1 = time.perf_counter()
    ar_dir = _train(CONFIGS / "ar" / "small.yaml", work / "ar", "ar", [*data, f"train.max_steps={args.ar_steps}",
                                                                 f"checkpoint.every_steps={args.ar_steps}", f"ar.tokenizer_path={tok_dir}"])
    t2 = time.perf_counter()
    tokenizer = load_tokenizer(tok_dir)
    gen = load_generator(ar_dir, tokenizer, torch.device("cpu"))
    notes = read_validation_notes(str(shards["valid"]), tokenizer.frontend, limit=16)
    recon = reconstruct(tokenizer.module, tokenizer.frontend, notes.cmx_NCHW)
    settings = SamplingSettings(cfg_scale=args.cfg, top_p=args.top_p)
    result = {
        **pitch_report(gen, notes, recon.wave_NT, args.pitches, args.per_pitch, settings, seed=0),
        "tokenizer_train_s": t1 - t0, "ar_train_s": t2 - t1,
    }
    print(json.dumps(result, indent=1))
    return result


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mars_dist.bench.generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "small", "d12", "d16"], choices=list(AR_PRESETS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--repeats", type=int, default=1, help="timed runs per setting (the fastest counts)")
    p.add_argument("--gl-iters", type=int, default=32)
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--attention", action="store_true", help="GPU: SDPA kernels vs the block-causal mask")
    p.add_argument("--attention-batch", type=int, default=16)
    p.add_argument("--learn", action="store_true", help="the learning check instead of the speed table")
    p.add_argument("--work", default="runs/bench-generate-learn")
    p.add_argument("--train-notes", type=int, default=512)
    p.add_argument("--valid-notes", type=int, default=64)
    p.add_argument("--tok-steps", type=int, default=600)
    p.add_argument("--ar-steps", type=int, default=600)
    p.add_argument("--pitches", nargs="+", type=int, default=[36, 43, 48, 55, 60, 67, 72, 79, 84])
    p.add_argument("--per-pitch", type=int, default=4)
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.attention:
        run_attention(args)
    elif args.learn:
        run_learn(args)
    else:
        rows = run_speed(args)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

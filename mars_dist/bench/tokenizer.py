"""Tokenizer benchmark: (a) a timed quality run of the small config on the synthetic set, (b) CMX's speed claim.

    mars-bench-tokenizer [--minutes 10] [--work runs/bench-tokenizer] [--skip-cmx | --skip-quality]

(a) Generates a synthetic NSynth-format set (512 train + 64 valid notes by default) and its shards
with the data tools' commands (CMX tensors plus the notes' audio), reads them back, trains
configs/tokenizer/small.yaml through the TokenizerTask API for `--minutes`, and reports on the
validation split, for the live and the EMA weights: mel-MSE / mel-MAE under the evaluation protocol
(`mars_dist.audio.mel`: Griffin-Lim audio of the reconstruction vs the original note), the same
for Griffin-Lim of the UNQUANTIZED input (the floor phase recovery alone sets), Griffin-Lim
spectral convergence, and the fraction of the codebook each scale uses. Paper: MSE 0.0143, MAE 0.0915.
Before training, a few generator-only and full-GAN steps of a throwaway copy are timed and
`train.max_steps` is set to what fits in `--minutes`, so a decaying lr schedule ends with the
budget (`--no-fit-schedule` keeps the config's value).

(b) Step time and peak memory (peak RSS of a fresh process, minus its RSS before training) of the
same tokenizer on 2 x 256 x 256 (CMX) and 1 x 512 x 256 (the plain spectrogram), side by side, at
the same width and depth; the ratio is what CMX's "about 1.5x faster training" claim is about.
Timings on a shared machine are noisy; rerun on a quiet one before quoting them.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from mars_dist.audio.frontend import AudioFrontend
from mars_dist.config import load_config
from mars_dist.data.geometry import BatchGeometry
from mars_dist.engine.backends.debug import DebugBackend
from mars_dist.engine.task import trained_names
from mars_dist.bench.synthetic_set import synthetic_shards
from mars_dist.cli import make_parser, console_script
from mars_dist.eval.report import griffin_lim_floor, read_validation_notes, reconstruct, reconstruction_metrics
from mars_dist.tasks.tokenizer import EMA_NAME, TokenizerTask

DEFAULT_CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "tokenizer" / "small.yaml")
PAPER = {"mel_mse": 0.0143, "mel_mae": 0.0915}


# ---------------------------------------------------------------------- data
def synthetic_cmx(root: Path, cfg, train_notes: int, valid_notes: int, seed: int) -> Dict[str, Dict[str, Any]]:
    """{"train"/"valid": {"cmx": float16 [N, C, H, W], "wave": float32 [N, T]}} of a synthetic set,
    made and sharded by the data tools' commands (with the notes' audio) and read back as training reads it."""
    shards = synthetic_shards(root, {"train": train_notes, "valid": valid_notes}, seed=seed, with_audio=("train", "valid"))
    frontend = AudioFrontend(cfg.audio)
    out = {}
    for split, url in shards.items():
        notes = read_validation_notes(str(url), frontend)
        out[split] = {"cmx": notes.cmx_NCHW.half(), "wave": notes.wave_NT}
    return out


# ---------------------------------------------------------------------- training through the Task API
class TaskLoop:
    """One process, one device: the debug backend and the task's own step, fed given batches (the
    benchmark needs no shards and no data loader)."""

    def __init__(self, cfg, cmx_shape: Tuple[int, int, int]):
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.task = TokenizerTask(cfg, {"cmx_shape": list(cmx_shape)})
        self.backend = DebugBackend(cfg)
        specs = self.task.build_models()
        self.trained = trained_names(specs)
        self.models = self.backend.prepare(specs, BatchGeometry(cfg.data.batch_size, 1, cfg.data.batch_size, 1))
        self.step_count = 0

    def step(self, batch: Dict[str, Any]) -> Dict[str, float]:
        with self.backend.autocast():
            logs = self.task.micro_step(batch, self.models, self.step_count, self.backend.backward)
        for name in self.trained:
            self.backend.step(name)
        self.task.after_step(self.step_count, self.models)
        self.step_count += 1
        return {k: float(v) for k, v in logs.items()}


def median_step_seconds(loop: TaskLoop, batch: Dict[str, Any], steps: int) -> float:
    """One warm-up step (allocator, autocast caches, optimizer state), then the median of `steps` timed ones."""
    loop.step(batch)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loop.step(batch)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def measure_step_seconds(cfg, cmx_shape: Tuple[int, int, int], train_cmx: torch.Tensor, adversarial: bool,
                         steps: int = 4) -> float:
    """Median seconds per training step of a throwaway copy of the run (generator only, or with the
    discriminator active), after one warm-up step."""
    probe_cfg = copy.deepcopy(cfg)
    probe_cfg.tokenizer.disc.start_step = 0 if adversarial else 10**9
    loop = TaskLoop(probe_cfg, cmx_shape)
    return median_step_seconds(loop, {"cmx": train_cmx[:cfg.data.batch_size].float()}, steps)


def steps_in_budget(cfg, cmx_shape: Tuple[int, int, int], train_cmx: torch.Tensor, seconds: float) -> Tuple[int, Dict[str, float]]:
    """How many steps fit in `seconds`: generator-only steps until `disc.start_step`, full GAN steps
    after. The run's lr schedule (a cosine decay ends at train.max_steps) is then fitted to that
    count, so the time budget ends where the schedule does instead of cutting it off mid-way."""
    gen_s = measure_step_seconds(cfg, cmx_shape, train_cmx, adversarial=False)
    start = cfg.tokenizer.disc.start_step
    if seconds <= start * gen_s:
        return int(seconds / gen_s), {"generator_step_s": gen_s}
    gan_s = measure_step_seconds(cfg, cmx_shape, train_cmx, adversarial=True)
    return int(start + (seconds - start * gen_s) / gan_s), {"generator_step_s": gen_s, "gan_step_s": gan_s}


def train_for(loop: TaskLoop, train_cmx: torch.Tensor, seconds: float, log_every: int) -> List[Dict[str, float]]:
    g = torch.Generator().manual_seed(loop.cfg.seed)
    batch_size = loop.cfg.data.batch_size
    history = []
    start = time.monotonic()
    while time.monotonic() - start < seconds and loop.step_count < loop.cfg.train.max_steps:
        pick = torch.randint(0, train_cmx.shape[0], (batch_size,), generator=g)
        logs = loop.step({"cmx": train_cmx[pick].float()})
        if loop.step_count % log_every == 0:
            logs["elapsed_s"] = time.monotonic() - start
            history.append(logs)
            print(f"step {loop.step_count:5d}  {logs['elapsed_s']:6.0f}s  recon_l2 {logs['loss/recon_l2']:.4f}  "
                  f"vq {logs['loss/vq']:.4f}  d {logs['loss/disc']:.3f}  "
                  f"usage(last scale) {logs[f'codebook/usage_s{len(loop.cfg.tokenizer.scales) - 1}']:.2f}", flush=True)
    return history


# ---------------------------------------------------------------------- evaluation
def evaluate(model, frontend, cmx: torch.Tensor, wave: torch.Tensor, gl_floor: Dict[str, float]) -> Dict[str, Any]:
    """The quick report's tokenizer metrics (mars_dist.eval.report) for one set of weights, plus the floor."""
    x = cmx.float()
    return {**reconstruction_metrics(frontend, x, wave, reconstruct(model, frontend, x)), **gl_floor}


def quality_run(args) -> Dict[str, Any]:
    cfg = load_config(args.config, args.overrides)
    data = synthetic_cmx(Path(args.work) / "synthetic", cfg, args.train_notes, args.valid_notes, cfg.seed)
    cmx_shape = tuple(data["train"]["cmx"].shape[1:])
    timing: Dict[str, float] = {}
    if args.fit_schedule:
        cfg.train.max_steps, timing = steps_in_budget(cfg, cmx_shape, data["train"]["cmx"], args.minutes * 60)
        print(f"schedule fitted to the budget: train.max_steps={cfg.train.max_steps} ({timing})", flush=True)
    loop = TaskLoop(cfg, cmx_shape)
    print(f"quality run: {args.config}, {sum(p.numel() for p in loop.models['tokenizer'].parameters()) / 1e6:.1f}M "
          f"tokenizer params, CMX {list(cmx_shape)}, {args.minutes} min on {torch.get_num_threads()} threads", flush=True)
    history = train_for(loop, data["train"]["cmx"], args.minutes * 60, cfg.train.log_every)
    valid = data["valid"]
    frontend = AudioFrontend(cfg.audio)
    floor = griffin_lim_floor(frontend, valid["cmx"].float(), valid["wave"])
    result = {
        "config": args.config,
        "steps": loop.step_count,
        "minutes": args.minutes,
        "max_steps": cfg.train.max_steps,
        "step_timing": timing,
        "train_seconds": history[-1]["elapsed_s"] if history else 0.0,
        "samples_per_s": loop.step_count * cfg.data.batch_size / max(history[-1]["elapsed_s"], 1e-9) if history else 0.0,
        "live": evaluate(loop.models["tokenizer"], frontend, valid["cmx"], valid["wave"], floor),
        "ema": evaluate(loop.models[EMA_NAME], frontend, valid["cmx"], valid["wave"], floor),
        "paper": PAPER,
    }
    return result


# ---------------------------------------------------------------------- CMX vs plain spectrogram
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> None:
    """Linux: restart the process's high-water mark (VmHWM) so the peak covers training alone."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cmx_worker(config: str, overrides: List[str], shape: Tuple[int, int, int], steps: int) -> Dict[str, Any]:
    """In a fresh process: step time and peak RSS growth of `steps` training steps on random images."""
    cfg = load_config(config, overrides + ["tokenizer.disc.start_step=0"])
    loop = TaskLoop(cfg, shape)
    g = torch.Generator().manual_seed(0)
    batch = {"cmx": torch.tanh(torch.randn(cfg.data.batch_size, *shape, generator=g))}
    rss_before = _rss_bytes()
    _reset_peak_rss()
    step_s = median_step_seconds(loop, batch, steps)
    peak = _peak_rss_bytes()
    tok = loop.models["tokenizer"]
    return {"shape": list(shape), "patches": tok.grid_hw[0] * tok.grid_hw[1], "step_s": step_s,
            "peak_rss_growth_mb": (peak - rss_before) / 2**20, "flops_per_sample": loop.task.flops_per_sample()}


def cmx_comparison(args) -> Dict[str, Any]:
    results = {}
    for label, shape in (("cmx_2x256x256", (2, 256, 256)), ("plain_1x512x256", (1, 512, 256))):
        cmd = [sys.executable, "-m", "mars_dist.bench.tokenizer", "--config", args.config, "--cmx-worker",
               ",".join(map(str, shape)), "--cmx-steps", str(args.cmx_steps), *args.overrides]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"CMX worker for {shape} failed:\n{proc.stderr[-3000:]}")
        results[label] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{label}: {results[label]}", flush=True)
    cmx, plain = results["cmx_2x256x256"], results["plain_1x512x256"]
    results["speedup_step_time"] = plain["step_s"] / cmx["step_s"]
    results["memory_ratio_plain_over_cmx"] = plain["peak_rss_growth_mb"] / max(cmx["peak_rss_growth_mb"], 1e-9)
    return results


# ---------------------------------------------------------------------- report
def print_report(report: Dict[str, Any]) -> None:
    if "quality" in report:
        q = report["quality"]
        print(f"\n== quality: {q['steps']} steps in {q['minutes']} min ({q['samples_per_s']:.1f} samples/s) ==")
        print(f"{'weights':8s} {'mel-MSE':>9s} {'mel-MAE':>9s} {'GL-SC':>7s} {'mag-SC':>7s} {'cmx-MSE':>9s}  usage per scale")
        for name in ("live", "ema"):
            r = q[name]
            print(f"{name:8s} {r['mel_mse']:9.4f} {r['mel_mae']:9.4f} {r['gl_spectral_convergence']:7.3f} "
                  f"{r['magnitude_spectral_convergence']:7.3f} {r['cmx_mse']:9.5f}  {r['codebook_usage_per_scale']}")
        r = q["ema"]
        print(f"{'GL floor':8s} {r['gl_floor_mel_mse']:9.4f} {r['gl_floor_mel_mae']:9.4f}   (Griffin-Lim of the unquantized input)")
        print(f"{'paper':8s} {PAPER['mel_mse']:9.4f} {PAPER['mel_mae']:9.4f}")
        best = min(q["live"]["mel_mse"], q["ema"]["mel_mse"])
        print(f"target met (mel-MSE <= {PAPER['mel_mse']}): {best <= PAPER['mel_mse']}")
    if "cmx" in report:
        c = report["cmx"]
        a, b = c["cmx_2x256x256"], c["plain_1x512x256"]
        print("\n== CMX 2x256x256 vs plain 1x512x256 (same width/depth) ==")
        print(f"{'input':16s} {'patches':>7s} {'step s':>8s} {'peak MB':>8s} {'GFLOP/sample':>12s}")
        for label, r in (("2x256x256 (CMX)", a), ("1x512x256", b)):
            print(f"{label:16s} {r['patches']:7d} {r['step_s']:8.3f} {r['peak_rss_growth_mb']:8.0f} {r['flops_per_sample'] / 1e9:12.1f}")
        print(f"CMX speed-up (step time plain / CMX): {c['speedup_step_time']:.2f}x; "
              f"memory plain / CMX: {c['memory_ratio_plain_over_cmx']:.2f}x (paper: ~1.5x faster)")


def main(argv=None) -> int:
    parser = make_parser("mars-bench-tokenizer", __doc__)
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--minutes", type=float, default=10.0, help="training time budget of the quality run")
    parser.add_argument("--work", default="runs/bench-tokenizer", help="synthetic set and report go here")
    parser.add_argument("--no-fit-schedule", dest="fit_schedule", action="store_false",
                        help="keep the config's train.max_steps instead of fitting it (and the lr decay) to --minutes")
    parser.add_argument("--train-notes", type=int, default=512)
    parser.add_argument("--valid-notes", type=int, default=64)
    parser.add_argument("--cmx-steps", type=int, default=5, help="timed steps per input layout")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-cmx", action="store_true")
    parser.add_argument("--cmx-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args(argv)
    if args.cmx_worker:
        shape = tuple(int(v) for v in args.cmx_worker.split(","))
        print(json.dumps(cmx_worker(args.config, args.overrides, shape, args.cmx_steps)))
        return 0
    report: Dict[str, Any] = {}
    if not args.skip_quality:
        report["quality"] = quality_run(args)
    if not args.skip_cmx:
        report["cmx"] = cmx_comparison(args)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    out = Path(args.work) / "report.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(out)
    print_report(report)
    print(f"\nreport: {out}")
    return 0


entry = console_script(main, "mars-bench-tokenizer")


if __name__ == "__main__":
    entry()

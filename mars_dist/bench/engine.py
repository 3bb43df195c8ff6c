"""Engine benchmark: the distributed backends side by side on the tokenizer's small config.

    mars-bench-engine [--config configs/tokenizer/small.yaml] [--nproc 2] [--steps 3]
        [--variants ddp,fsdp,zero1,zero2,zero3] [--work runs/bench-engine] [key=value ...]

For every backend variant, one `torchrun --nproc-per-node NPROC` launch of this module measures
on synthetic CMX batches of the config's shape (global batch = data.batch_size):
  - step time (forward + backward + optimizer steps of the task's trained models, on the config's
    schedule: the small tokenizer's discriminator joins at tokenizer.disc.start_step, so add
    `tokenizer.disc.start_step=0` to time the full GAN step; the task's after_step, i.e. the EMA
    update, is not part of it) and peak memory (GPU: allocator high-water mark; CPU: peak RSS,
    max over ranks);
  - checkpoint save and load time of the backend's own format against the bytes written (MB/s),
    and the ratio to a plain `torch.save` of the same tensors (consolidated weights + optimizer
    moments, written by rank 0);
then two more launches time the elastic resume of that checkpoint on 1 and on NPROC + 1 processes
(for DeepSpeed the first one includes the universal-checkpoint conversion; the second reuses it).
Results are printed as one table and written to WORK/results.json. Timings on a shared machine
are noisy: compare within one run only.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from mars_dist.cli import make_parser, console_script

VARIANTS: Dict[str, List[str]] = {
    "ddp": ["engine.backend=accelerate", "engine.accelerate.strategy=ddp"],
    "fsdp": ["engine.backend=accelerate", "engine.accelerate.strategy=fsdp"],
    "zero1": ["engine.backend=deepspeed", "engine.deepspeed.zero_stage=1"],
    "zero2": ["engine.backend=deepspeed", "engine.deepspeed.zero_stage=2"],
    "zero3": ["engine.backend=deepspeed", "engine.deepspeed.zero_stage=3"],
}
BENCH_OVERRIDES = ["logging.wandb_mode=disabled"]


# ----------------------------------------------------------------------------- worker (one rank)
def _synthetic_batch(cmx_shape, batch: int, device, step: int) -> Dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(step)
    labels = {k: torch.randint(0, hi, (batch,), generator=g) for k, hi in
              (("pitch", 128), ("velocity", 128), ("instrument_family", 11), ("instrument_source", 3), ("instrument", 1000))}
    batch_dict = {"cmx": torch.rand(batch, *cmx_shape, generator=g) * 2 - 1, **labels}
    batch_dict = {k: v.to(device) for k, v in batch_dict.items()}
    batch_dict["key"] = [f"bench-{step}-{i}" for i in range(batch)]
    return batch_dict


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _timed(backend, fn) -> float:
    backend.barrier()
    start = time.perf_counter()
    fn()
    backend.barrier()
    return time.perf_counter() - start


def worker(args: argparse.Namespace) -> None:
    import torch

    from mars_dist.audio.frontend import AudioFrontend
    from mars_dist.config import load_config
    from mars_dist.data.geometry import BatchGeometry
    from mars_dist.engine.backends import build_backend
    from mars_dist.engine.task import trained_names
    from mars_dist.tasks.registry import task_class

    cfg = load_config(args.config, args.overrides + BENCH_OVERRIDES + VARIANTS[args.variant])
    backend = build_backend(cfg)
    frontend = AudioFrontend(cfg.audio)
    task = task_class(cfg.task)(cfg, {"cmx_shape": frontend.cmx_shape, "audio": frontend.describe()})
    geometry = BatchGeometry.of(cfg.data.batch_size, backend.world_size, cfg.data.micro_batch_size)
    micro_batch, grad_accum = geometry.micro_batch, geometry.grad_accum
    specs = task.build_models()
    trained = trained_names(specs)
    params_m = {name: sum(p.numel() for p in specs[name].module.parameters()) / 1e6 for name in trained}  # before sharding
    models = backend.prepare(specs, geometry)
    ckpt = Path(args.ckpt)
    result: Dict[str, Any] = {"variant": args.variant, "world_size": backend.world_size, "micro_batch": micro_batch, "grad_accum": grad_accum}

    if args.worker == "resume":
        result["resume_s"] = _timed(backend, lambda: backend.load_checkpoint(ckpt, args.saved_world_size))
    else:
        def train_step(step: int) -> None:
            for k in range(grad_accum):
                batch = _synthetic_batch(frontend.cmx_shape, micro_batch, backend.device, step * 1000 + k * 100 + backend.rank)
                with backend.micro_step_context(sync=k == grad_accum - 1), backend.autocast():
                    task.micro_step(batch, models, step, backend.backward)
            for name in trained:
                backend.step(name)

        train_step(0)  # warm-up: allocations, DeepSpeed/FSDP lazy init
        step_s = _timed(backend, lambda: [train_step(s) for s in range(1, args.steps + 1)]) / args.steps
        result["step_s"] = step_s
        result["samples_per_s"] = cfg.data.batch_size / step_s
        peak = backend.all_reduce_max(torch.tensor([float(backend.peak_memory_bytes())]))
        result["peak_mem_mb"] = peak.item() / 2**20
        result["params_m"] = params_m

        result["save_s"] = _timed(backend, lambda: backend.save_checkpoint(ckpt))
        result["checkpoint_mb"] = _dir_bytes(ckpt) / 2**20 if backend.is_main else 0.0
        result["load_s"] = _timed(backend, lambda: backend.load_checkpoint(ckpt, backend.world_size))
        consolidated = {name: {"weights": backend.full_state_dict(name), "optim": backend.full_optimizer_state(name)} for name in trained}
        plain = ckpt.parent / f"{ckpt.name}-plain.pt"
        if backend.is_main:
            start = time.perf_counter()
            torch.save(consolidated, plain)
            result["plain_save_s"] = time.perf_counter() - start
            result["plain_mb"] = plain.stat().st_size / 2**20
        backend.barrier()
    if backend.is_main:
        Path(args.result).write_text(json.dumps(result, indent=1))
    backend.shutdown()


# ----------------------------------------------------------------------------- driver
def _launch(args: argparse.Namespace, variant: str, nproc: int, mode: str, ckpt: Path, result: Path) -> Dict[str, Any]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "mars_dist.bench.engine", "--worker", mode, "--variant", variant, "--ckpt", str(ckpt),
           "--result", str(result), "--steps", str(args.steps), "--saved-world-size", str(args.nproc),
           "--config", args.config, *args.overrides]
    if mode == "resume":
        cmd.append(f"data.batch_size={nproc}")  # any global batch the new world size divides; state is batch-free
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    log = result.with_suffix(".log")
    with open(log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0 or not result.is_file():
        tail = log.read_text()[-1500:]
        return {"error": f"exit {done.returncode}; see {log}", "log_tail": tail}
    return json.loads(result.read_text())


def _row(variant: str, r: Dict[str, Any]) -> str:
    if "error" in r["train"]:
        return f"{variant:<7} FAILED: {r['train']['error']}"
    t = r["train"]
    save_mbs = t["checkpoint_mb"] / t["save_s"]
    load_mbs = t["checkpoint_mb"] / t["load_s"]
    plain_mbs = t["plain_mb"] / t["plain_save_s"]
    resumes = "  ".join(f"{k}: {v['resume_s']:.2f}s" if "resume_s" in v else f"{k}: FAILED" for k, v in r["resume"].items())
    return (f"{variant:<7} {t['step_s']:8.3f} {t['samples_per_s']:8.1f} {t['peak_mem_mb']:9.0f} {t['checkpoint_mb']:8.1f} "
            f"{t['save_s']:7.2f} {save_mbs:8.1f} {t['load_s']:7.2f} {load_mbs:8.1f} {plain_mbs:9.1f} {save_mbs / plain_mbs:7.2f}   {resumes}")


def main(argv=None) -> int:
    parser = make_parser("mars-bench-engine", __doc__)
    parser.add_argument("--config", default="configs/tokenizer/small.yaml")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--work", default="runs/bench-engine")
    parser.add_argument("--worker", choices=("train", "resume"), help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--saved-world-size", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="run-config overrides (e.g. data.batch_size=4)")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants {args.variants}: unknown {', '.join(unknown)}; expected some of {', '.join(VARIANTS)}")
    if args.nproc < 1 or args.steps < 1:
        parser.error(f"--nproc {args.nproc}, --steps {args.steps}: both must be >= 1")
    from mars_dist.config import load_config

    load_config(args.config, args.overrides)  # a bad config or override is one error line here, not in every worker
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results: Dict[str, Any] = {}
    for variant in variants:
        ckpt = work / variant / "checkpoint"
        ckpt.parent.mkdir(parents=True)
        print(f"[bench] {variant}: {args.nproc} processes ...", flush=True)
        entry = {"train": _launch(args, variant, args.nproc, "train", ckpt, work / variant / "train.json"), "resume": {}}
        if "error" not in entry["train"]:
            for world in (1, args.nproc + 1):
                print(f"[bench] {variant}: resume {args.nproc} -> {world} ...", flush=True)
                entry["resume"][f"{args.nproc}->{world}"] = _launch(args, variant, world, "resume", ckpt, work / variant / f"resume{world}.json")
        results[variant] = entry
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nconfig {args.config} {' '.join(args.overrides)} | {args.nproc} processes | {args.steps} timed steps | "
          "checkpoint MB/s = bytes written / time; 'vs plain' = save MB/s / torch.save MB/s of the same tensors")
    print(f"{'variant':<7} {'step s':>8} {'samp/s':>8} {'peak MB':>9} {'ckpt MB':>8} {'save s':>7} {'save MB/s':>8} "
          f"{'load s':>7} {'load MB/s':>8} {'plain MB/s':>9} {'vs plain':>7}   resume")
    for variant, entry in results.items():
        print(_row(variant, entry))
    return 0


entry = console_script(main, "mars-bench-engine")


if __name__ == "__main__":
    entry()

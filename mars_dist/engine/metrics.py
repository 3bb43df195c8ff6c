"""Training observability on rank 0: losses, throughput, MFU, data-wait vs compute time, peak memory,
console + wandb, and an optional torch profiler window.

MFU = achieved model FLOP/s / peak FLOP/s of the devices. The achieved figure comes from the task
(`flops_per_sample` x samples/s); the peak from `logging.peak_tflops` or the table below.
"""
from __future__ import annotations

import json
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

# Dense (no sparsity) bf16 tensor-core peak per device in TFLOP/s, from the vendors' datasheets
# (V100: fp16, it has no bf16). Matched as a substring of torch.cuda.get_device_name(); the
# longest matching key wins, so "H100 PCIe" is not read as "H100" and "A100" not as "A10".
PEAK_BF16_TFLOPS: Dict[str, float] = {
    "B200": 2250.0,
    "H200": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "H800": 989.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,  # AWS part; NVIDIA publishes no datasheet figure, this is AWS's stated peak
    "A10": 125.0,
    "RTX 4090": 165.2,
    "RTX 3090": 71.0,
    "V100": 125.0,
}


def peak_tflops_for_name(device_name: str) -> Optional[float]:
    matches = [key for key in PEAK_BF16_TFLOPS if key in device_name]
    return PEAK_BF16_TFLOPS[max(matches, key=len)] if matches else None


def device_peak_flops(device: torch.device, configured_tflops: float) -> Optional[float]:
    """Peak FLOP/s of one device: the configured value, else the table's; None when unknown (CPUs)."""
    if configured_tflops > 0:
        return configured_tflops * 1e12
    if device.type != "cuda":
        return None
    tflops = peak_tflops_for_name(torch.cuda.get_device_name(device))
    return tflops * 1e12 if tflops else None


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: the allocator's high-water mark on this device; CPU: the process's peak resident set."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * (1 if sys.platform == "darwin" else 1024)


def parse_step_window(spec: Optional[str]) -> Optional[tuple[int, int]]:
    """`train.profile_steps="START-END"` (or "START:END"): profile the 0-based steps START <= step < END."""
    if not spec:
        return None
    parts = re.split(r"[-:]", str(spec))
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        hint = " (YAML 1.1 reads an unquoted 1:3 as the base-60 integer 63: write 1-3)" if str(spec).isdigit() else ""
        raise ValueError(f"train.profile_steps={spec!r}: expected START-END, two integers{hint}")
    start, end = (int(p) for p in parts)
    if not start < end:
        raise ValueError(f"train.profile_steps={spec!r}: expected START < END")
    return start, end


class ProfilerWindow:
    """Runs torch.profiler over a window of steps and writes a Chrome trace per rank into the run dir."""

    def __init__(self, spec: Optional[str], out_dir: Path, rank: int):
        self.window = parse_step_window(spec)
        self.out_dir = Path(out_dir)
        self.rank = rank
        self._profiler: Optional[torch.profiler.profile] = None

    def before_step(self, step: int) -> None:
        if self.window and step == self.window[0]:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._profiler = torch.profiler.profile(activities=activities, record_shapes=True, profile_memory=True,
                                                    acc_events=True)  # one window, one cycle: nothing to clear
            self._profiler.__enter__()

    def after_step(self, step: int) -> Optional[Path]:
        """Returns the trace path once the window's last step is done."""
        if self._profiler is None or step + 1 < self.window[1]:
            return None
        return self.close()

    def close(self) -> Optional[Path]:
        if self._profiler is None:
            return None
        self._profiler.__exit__(None, None, None)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"trace-rank{self.rank:05d}-steps{self.window[0]}-{self.window[1]}.json"
        self._profiler.export_chrome_trace(str(path))
        self._profiler = None
        return path


def _task_key(name: str) -> str:
    """A task's value keeps its own namespace ("codebook/usage_s0"); a bare name is a loss ("loss/recon")."""
    return name if "/" in name else f"loss/{name}"


METRICS_FILE = "metrics.jsonl"  # in run_dir: every logged figure, one JSON object per report (rank 0)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def console_line(step: int, max_steps: int, figures: Dict[str, float]) -> str:
    """step, the loss terms, lr, throughput, step time and data wait, memory, ETA: one short line.

    Per-scale and per-code figures (codebook/..., scale/...) and grad norms stay in wandb and
    metrics.jsonl; a task's loss terms are the values it logs under loss/ (or bare names)."""
    losses = " ".join(f"{k[len('loss/'):]}={v:.4g}" for k, v in figures.items() if k.startswith("loss/"))
    lrs = [(k[len("lr/"):], v) for k, v in figures.items() if k.startswith("lr/")]
    lr = (f" | lr {lrs[0][1]:.2e}" if len(lrs) == 1 else
          " | lr " + " ".join(f"{name}={v:.2e}" for name, v in lrs) if lrs else "")
    mfu = f" mfu={figures['perf/mfu']:.1%}" if "perf/mfu" in figures else ""
    eta = ""
    if max_steps > step and figures["perf/step_s"] > 0:
        eta = f" | ETA {_duration((max_steps - step) * figures['perf/step_s'])}"
    progress = f"{step}/{max_steps}" if max_steps else f"{step}"
    return (f"step {progress} | {losses}{lr} | {figures['perf/samples_per_s']:.4g} samples/s{mfu} | "
            f"step {figures['perf/step_s'] * 1e3:.0f} ms (data {figures['perf/data_wait_s'] * 1e3:.0f} ms) | "
            f"peak mem {figures['perf/peak_memory_gib']:.2f} GiB{eta}")


class MetricsLogger:
    """Accumulates per-step figures over a `log_every` window and reports their means on rank 0.

    Only rank 0 talks to wandb; other ranks keep no state. `wandb_mode` disabled skips wandb
    entirely (tests), offline writes run_dir/wandb/offline-run-*-<id> (the id survives resume).
    """

    def __init__(
        self,
        is_main: bool,
        log_every: int,
        global_batch: int,
        world_size: int,
        flops_per_sample: float,
        tokens_per_sample: int,
        peak_flops_per_device: Optional[float],
        device: torch.device,
        max_steps: int = 0,
        metrics_file: Optional[Path] = None,
    ):
        self.is_main = is_main
        self.log_every = max(1, log_every)
        self.global_batch = global_batch
        self.world_size = world_size
        self.flops_per_sample = flops_per_sample
        self.tokens_per_sample = tokens_per_sample
        self.peak_flops = peak_flops_per_device * world_size if peak_flops_per_device else None
        self.device = device
        self.max_steps = max_steps
        self.metrics_file = Path(metrics_file) if metrics_file is not None and is_main else None
        self._wandb_run = None
        self._reset_window()

    def _reset_window(self) -> None:
        self._steps = 0
        self._data_s = 0.0
        self._compute_s = 0.0
        self._sums: Dict[str, tuple[float, int]] = {}  # key -> (sum, count)
        self._lrs: Dict[str, float] = {}  # the window's last lr per trained model

    def start_wandb(self, project: str, mode: str, run_dir: Path, run_id: str, config: Dict[str, Any]) -> None:
        if not self.is_main or mode == "disabled":
            return
        if mode not in ("offline", "online"):
            raise ValueError(f"logging.wandb_mode={mode!r}: expected offline, online or disabled")
        import wandb

        self._wandb_run = wandb.init(
            project=project, dir=str(run_dir), id=run_id, resume="allow", mode=mode, config=config,
            name=Path(run_dir).name,
        )

    def record_step(self, step: int, losses: Dict[str, float], grad_norms: Dict[str, float], data_s: float,
                    compute_s: float, skipped: bool = False, lrs: Optional[Dict[str, float]] = None) -> None:
        """`step` is the number of steps completed; reports when it is a multiple of log_every.

        A skipped (non-finite) step counts for time but not for the loss means: it is logged on
        its own, and one NaN would otherwise hide the whole window's losses.
        """
        if not self.is_main:
            return
        self._steps += 1
        self._data_s += data_s
        self._compute_s += compute_s
        self._lrs = dict(lrs or {})
        if not skipped:
            named = {**{_task_key(k): v for k, v in losses.items()}, **{f"grad_norm/{k}": v for k, v in grad_norms.items()}}
            for key, value in named.items():
                total, count = self._sums.get(key, (0.0, 0))
                self._sums[key] = (total + value, count + 1)
        if step % self.log_every == 0:
            self._report(step)

    def summary(self) -> Dict[str, float]:
        """Means over the current window (the figures `_report` prints and logs)."""
        steps = max(1, self._steps)
        step_s = (self._data_s + self._compute_s) / steps
        samples_per_s = self.global_batch / step_s if step_s > 0 else 0.0
        out = {key: total / count for key, (total, count) in self._sums.items()}
        out.update({f"lr/{name}": lr for name, lr in self._lrs.items()})
        out.update({
            "perf/step_s": step_s,
            "perf/data_wait_s": self._data_s / steps,
            "perf/compute_s": self._compute_s / steps,
            "perf/data_wait_fraction": self._data_s / max(self._data_s + self._compute_s, 1e-12),
            "perf/samples_per_s": samples_per_s,
            "perf/peak_memory_gib": peak_memory_bytes(self.device) / 2**30,
        })
        if self.tokens_per_sample:
            out["perf/tokens_per_s"] = samples_per_s * self.tokens_per_sample
        if self.flops_per_sample and self.peak_flops:
            out["perf/mfu"] = self.flops_per_sample * samples_per_s / self.peak_flops
        return out

    def _report(self, step: int) -> None:
        """Everything goes to wandb and run_dir/metrics.jsonl; the console gets what a person watches."""
        figures = self.summary()
        self.log(step, figures)
        self._append_metrics_line(step, figures)
        self.console(console_line(step, self.max_steps, figures))
        self._reset_window()

    def _append_metrics_line(self, step: int, figures: Dict[str, float]) -> None:
        """One JSON object per report. A resumed run appends: for a step logged twice the last line wins."""
        if self.metrics_file is None:
            return
        self.metrics_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps({"step": step, "time": round(time.time(), 3), **figures}) + "\n")

    def log(self, step: int, items: Dict[str, Any]) -> None:
        """Items for wandb only (media: images, audio)."""
        if self._wandb_run is not None and items:
            self._wandb_run.log(items, step=step)

    def log_figures(self, step: int, items: Dict[str, Any]) -> None:
        """A stage's results: everything to wandb, the numbers also to run_dir/metrics.jsonl (rank 0)."""
        self.log(step, items)
        numbers = {k: float(v) for k, v in items.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers and self.is_main:
            self._append_metrics_line(step, numbers)

    def console(self, message: str) -> None:
        if self.is_main:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    def close(self) -> None:
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None

"""Per-rank body of the backend tests: trains a tiny two-model task on several backend variants in
ONE process group (one launch per world size keeps the distributed tests cheap) and returns
consolidated weights, optimizer moments and grad norms, which the test compares across launches.

The task: a frozen Linear (moved, never trained), a trained "net" (blocks in an nn.ModuleList, so
FSDP shards per block, plus a persistent buffer) and a trained "critic" fed the net's detached
output: two models, two AdamW optimizers, an lr multiplier schedule and gradient clipping.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from mars_dist.bench.engine import VARIANTS as BENCH_VARIANTS
from mars_dist.config import load_config
from mars_dist.data.geometry import BatchGeometry
from mars_dist.engine.backends import build_backend
from mars_dist.engine.task import ModelSpec

REPO = Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 12
IN_DIM, HIDDEN, OUT_DIM = 8, 16, 4
VARIANTS: Dict[str, List[str]] = {
    **BENCH_VARIANTS,
    "zero2_offload": ["engine.backend=deepspeed", "engine.deepspeed.zero_stage=2", "engine.deepspeed.offload_optimizer=true"],
    "zero3_file": ["engine.backend=deepspeed", f"engine.deepspeed.config_file={REPO / 'configs' / 'deepspeed' / 'zero3.json'}"],
}
# A small clip threshold so that clipping really acts in the compared steps.
RESUME_STEP = 3  # the resumed run takes the step that follows a 3-step run
COMMON = ["engine.device=cpu", f"data.batch_size={GLOBAL_BATCH}", "optim.grad_clip=0.05"]


class ToyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(IN_DIM, HIDDEN), nn.Linear(HIDDEN, HIDDEN)])
        self.head = nn.Linear(HIDDEN, OUT_DIM)
        self.register_buffer("out_scale", torch.full((OUT_DIM,), 0.5))

    def forward(self, x_BD: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x_BD = F.gelu(block(x_BD))
        return self.head(x_BD) * self.out_scale


def adamw(lr: float):
    return lambda params: torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.01)


def build_specs(seed: int) -> Dict[str, ModelSpec]:
    """Trained models start from `seed`; the frozen one is always the same (frozen weights are not
    checkpointed: a task loads them from their own source)."""
    torch.manual_seed(0)
    frozen = nn.Linear(IN_DIM, IN_DIM)
    torch.manual_seed(seed)
    return {
        "frozen": ModelSpec(frozen),
        "net": ModelSpec(ToyNet(), adamw(1e-2), lr_multiplier=lambda step: min(1.0, (step + 1) / 2)),
        "critic": ModelSpec(nn.Linear(OUT_DIM, 1), adamw(5e-3)),
    }


def global_batch(step: int):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(GLOBAL_BATCH, IN_DIM, generator=g), torch.randn(GLOBAL_BATCH, OUT_DIM, generator=g)


def train_step(backend, models, step: int) -> Dict[str, float]:
    """One optimizer step on this rank's share of global batch `step` (split into micro-batches)."""
    x_GD, y_GD = global_batch(step)
    per_rank = backend.micro_batch * backend.grad_accum
    x_RD = x_GD[backend.rank * per_rank:(backend.rank + 1) * per_rank]
    y_RD = y_GD[backend.rank * per_rank:(backend.rank + 1) * per_rank]
    for k in range(backend.grad_accum):
        rows = slice(k * backend.micro_batch, (k + 1) * backend.micro_batch)
        with backend.micro_step_context(sync=k == backend.grad_accum - 1), backend.autocast():
            out_BD = models["net"](models["frozen"](x_RD[rows]))
            backend.backward("net", F.mse_loss(out_BD, y_RD[rows]))
            backend.backward("critic", models["critic"](out_BD.detach()).pow(2).mean())
    return {"net": backend.step("net"), "critic": backend.step("critic")}


def snapshot(backend) -> Dict[str, object]:
    return {
        name: {"weights": backend.full_state_dict(name), "optim": backend.full_optimizer_state(name)}
        for name in ("net", "critic")
    }


def make_backend(variant: str):
    return build_backend(load_config(None, COMMON + VARIANTS[variant]))


def run_variant(variant: str, train_steps: int, save: str, resume: str, saved_world_size: int) -> Dict[str, object]:
    """Trains `train_steps` steps from seed 0 (saving under `save` if given), then, if `resume` is
    given, starts a fresh backend from other initial weights, loads the checkpoint and takes the
    step that follows it. Snapshots are complete on rank 0."""
    world = int(os.environ["WORLD_SIZE"])
    # 1 x 3 x accumulation 4, 2 x 3 x 2, 4 x 3 x 1; 3 processes (elastic resume) take 3 x 4 x 1.
    geometry = BatchGeometry.of(GLOBAL_BATCH, world, 3 if GLOBAL_BATCH % (3 * world) == 0 else 0)
    result: Dict[str, object] = {"micro_batch": geometry.micro_batch, "grad_accum": geometry.grad_accum}
    if train_steps:
        backend = make_backend(variant)
        result["world_size"] = backend.world_size
        models = backend.prepare(build_specs(seed=0), geometry)
        result["norms"] = [train_step(backend, models, step) for step in range(train_steps)]
        result["trained"] = snapshot(backend)
        if save:
            backend.save_checkpoint(Path(save) / variant)
            result["trained_plus1_norms"] = train_step(backend, models, train_steps)
            result["trained_plus1"] = snapshot(backend)
    if resume:
        backend = make_backend(variant)
        result["world_size"] = backend.world_size
        models = backend.prepare(build_specs(seed=123), geometry)
        backend.load_checkpoint(Path(resume) / variant, saved_world_size=saved_world_size)
        result["resumed"] = snapshot(backend)
        result["resumed_plus1_norms"] = train_step(backend, models, RESUME_STEP)
        result["resumed_plus1"] = snapshot(backend)
    return result


def run_variants(variants: List[str], train_steps: int = 0, save: str = "", resume: str = "", saved_world_size: int = 2) -> bytes:
    """Entry point for tests.fixtures.dist.run_distributed(..., init_process_group=False): the
    backends join the process group themselves, as they do under torchrun.

    Returns the results torch.save'd to bytes: tensors sent through a torch.multiprocessing queue
    travel as shared-memory handles that vanish when this process exits.
    """
    results = {variant: run_variant(variant, train_steps, save, resume, saved_world_size) for variant in variants}
    buffer = io.BytesIO()
    torch.save(results, buffer)
    return buffer.getvalue()

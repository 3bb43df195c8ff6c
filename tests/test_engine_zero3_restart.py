"""ZeRO-3 on a world size that does not divide a parameter: the dead-code restart writes codebook rows
back into the partitions and the fp32 master weights correctly.

The tiny quantizer's codebook is 64 x 8 = 512 values, which 3 processes split into partitions of
171 with one padding value on the last rank (as the paper's 16384 x 32 codebook on 3, 6, 12 or 24
GPUs). The same primed restart followed by one SGD step runs on ZeRO-3 with 3 gloo processes and on
the debug backend in this process; the restarted codebook, DeepSpeed's fp32 master of it, and the
codebook after the next optimizer step must equal the debug backend's (SGD, so the step is linear in
the gradient and the reduction order leaves only rounding: ATOL).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

import pytest
import torch

from mars_dist.config import load_config
from mars_dist.data.geometry import BatchGeometry
from mars_dist.engine.backends import build_backend
from mars_dist.engine.task import ModelSpec
from mars_dist.models.tokenizer.quantizer import MultiScaleQuantizer
from tests.fixtures.dist import run_distributed
from tests.test_tokenizer_resume import TINY

ATOL = 1e-6
WORLD = 3
CODEBOOK = "codebook.weight"
EXTENSIONS_ENV = {
    "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "mars_dist" / "torch_extensions")),
}


def _primed_quantizer() -> MultiScaleQuantizer:
    """The tiny config's quantizer, with a third of its codes unused for 2 steps and a full restart buffer."""
    torch.manual_seed(0)
    quantizer = MultiScaleQuantizer(64, 8, [[1, 1], [2, 2], [4, 4]], dead_code_steps=2, restart_buffer_size=32)
    quantizer.steps_unused.copy_(torch.tensor([2 if v % 3 == 0 else 0 for v in range(64)]))
    quantizer.recent_residuals.copy_(torch.randn(32, 8, generator=torch.Generator().manual_seed(1)))
    quantizer.recent_filled.fill_(32)
    return quantizer


def _latent(index: int) -> torch.Tensor:
    return torch.randn(1, 8, 4, 4, generator=torch.Generator().manual_seed(100 + index))


def restart_then_step(backend_overrides) -> Dict[str, Any]:
    """On every rank: restart the dead codes, then one SGD step over a global batch of WORLD latents."""
    cfg = load_config(TINY, ["engine.device=cpu", "logging.wandb_mode=disabled", *backend_overrides])
    backend = build_backend(cfg)
    grad_accum = WORLD // backend.world_size
    spec = ModelSpec(_primed_quantizer(), optimizer=lambda params: torch.optim.SGD(params, lr=0.5))
    models = backend.prepare({"quantizer": spec}, BatchGeometry(WORLD, backend.world_size, 1, grad_accum))
    quantizer = models.unwrap("quantizer")
    torch.manual_seed(5)  # the restart draws its candidates from rank 0's RNG
    restarted = quantizer.restart_dead_codes(models.parallel)
    with models.parallel.full_tensors([quantizer.codebook.weight]) as (codebook,):
        after_restart = codebook.detach().clone()
    master_after_restart = backend.full_state_dict("quantizer")[CODEBOOK]  # DeepSpeed: its fp32 master
    for i in range(grad_accum):
        with backend.micro_step_context(sync=i == grad_accum - 1):
            fhat, vq_loss, _ = models["quantizer"](_latent(backend.rank * grad_accum + i))
            backend.backward("quantizer", vq_loss + fhat.square().mean())
    backend.step("quantizer")
    return {"restarted": restarted, "after_restart": after_restart, "master_after_restart": master_after_restart,
            "after_step": backend.full_state_dict("quantizer")[CODEBOOK], "world_size": backend.world_size,
            "parallel": type(models.parallel).__name__}


@pytest.mark.distributed
@pytest.mark.slow
def test_zero3_restart_on_3_processes_equals_the_debug_backend_on_1():
    zero3 = run_distributed(restart_then_step, WORLD, ["engine.backend=deepspeed", "engine.deepspeed.zero_stage=3"],
                            init_process_group=False, env=EXTENSIONS_ENV, timeout_s=600)  # DeepSpeed start-up x 3 on 2 cores
    debug = restart_then_step(["engine.backend=debug"])
    assert debug["world_size"] == 1 and zero3[0]["world_size"] == WORLD
    assert zero3[0]["parallel"] == "ZeROContext", "the restart reached the codebook through DeepSpeed's context"
    assert debug["restarted"] > 0, "the primed quantizer has dead codes to restart"
    fresh = _primed_quantizer().codebook.weight.detach()
    assert not torch.equal(debug["after_restart"], fresh), "the restart changed the codebook"
    for rank, got in enumerate(zero3):
        assert got["restarted"] == debug["restarted"], f"rank {rank}"
        assert torch.equal(got["after_restart"], debug["after_restart"]), f"rank {rank}: restarted codebook differs from the debug backend's"
    assert torch.equal(zero3[0]["master_after_restart"], debug["after_restart"]), "the fp32 master misses the restarted rows"
    diff = (zero3[0]["after_step"] - debug["after_step"]).abs().max().item()
    assert diff <= ATOL, f"after the next optimizer step the codebook differs from the debug backend's by {diff}"
    assert not torch.equal(debug["after_step"], debug["after_restart"]), "the step moved the codebook"

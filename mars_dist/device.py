"""The one device and precision choice: `auto | cpu | cuda` -> a torch.device, and the dtypes that go with it.

Training backends, sampling, encoding and evaluation all resolve devices here, so `auto` means the
same thing everywhere (the GPU when one is visible) and a request for CUDA on a CPU-only machine
fails with the same clear message.
"""
from __future__ import annotations

from typing import Optional

import torch

from mars_dist.errors import UserValueError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
MIXED_PRECISION_CHOICES = ("auto", "no", "bf16")


def resolve_device(setting: str, local_rank: int = 0, key: str = "engine.device") -> torch.device:
    """`setting` (auto | cpu | cuda) -> this process's device; auto means cuda when one is visible."""
    if setting not in DEVICE_CHOICES:
        raise UserValueError(f"{key}={setting!r}: expected auto, cpu or cuda")
    if setting == "cuda" and not torch.cuda.is_available():
        raise UserValueError(f"{key}=cuda but torch sees no CUDA device (use cpu or auto)")
    if setting == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def resolve_autocast_dtype(setting: str, device: torch.device) -> Optional[torch.dtype]:
    """`engine.mixed_precision` -> the training autocast dtype, one rule for every backend.

    auto: bf16 on GPU, fp32 on CPU; bf16: bf16 autocast on either (CPUs with avx512_bf16 run
    matmuls ~3x faster); no: fp32. fp16 is refused: it needs loss scaling, bf16 does not.
    """
    if setting not in MIXED_PRECISION_CHOICES:
        raise UserValueError(f"engine.mixed_precision={setting!r}: expected auto, no or bf16")
    if setting == "bf16" or (setting == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def resolve_generation_dtype(setting: str, device: torch.device) -> torch.dtype:
    """`--dtype` of sampling and evaluation (auto | fp32 | bf16): auto is bf16 on GPU, fp32 on CPU."""
    choices = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if setting not in choices:
        raise UserValueError(f"--dtype {setting!r}: expected auto, fp32 or bf16")
    return choices[setting]

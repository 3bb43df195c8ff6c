"""Int8 matmuls for inference on a CPU: nn.Linear layers replaced by dynamically quantized ones.

Why: at d12 a generated note is ~2 x 138 GFLOP of matmuls (CFG doubles the batch), and on the
AVX-512 CPUs this project runs on (VNNI + BF16) an int8 x int8 -> int32 GEMM (`torch._int_mm`)
runs at about twice the rate of the bf16 one (681 vs 373 GFLOP/s measured on [512 x 768] x
[768 x 3072] with 2 threads). The matmuls are most of the sampler's time, so they are where the
time is won (docs/ar.md, "int8").

How: the weights are quantized once, symmetric per output channel (`w ~ w_int8 * s_w[n]`); the
activations at every call, symmetric per token (`x ~ x_int8 * s_x[m]`), so one loud token does not
cost the others their precision. Then `y = (x_int8 @ w_int8^T) * s_x[m] * s_w[n] + b`, exact
integer accumulation in int32. The relative error of a layer's output is ~1% on Gaussian inputs.

The quantize / rescale steps around the GEMM are elementwise passes over the activations; run one
op at a time they cost more than the int8 GEMM saves, so the function is run through
torch.compile (one graph, dynamic shapes), which fuses them into one pass on each side. Hence a C++
compiler is needed, as for `--compile`. Inference only: no gradients, no training.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

INT8_MAX = 127.0


def int8_linear(x: torch.Tensor, weight_NK: torch.Tensor, weight_scale_N: torch.Tensor,
                bias_N: Optional[torch.Tensor], gelu: bool = False) -> torch.Tensor:
    """`x [..., K]` (any float dtype) through an int8 weight `weight_NK` with per-channel scales ->
    `[..., N]` in x's dtype; the activations are quantized per token (last-dim row) on the fly.
    `gelu`: the tanh-GELU that follows the layer, applied in the same pass as the rescale."""
    K = x.shape[-1]
    x_MK = x.reshape(-1, K).float()
    x_scale_M1 = x_MK.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / INT8_MAX
    x_int8_MK = torch.round(x_MK / x_scale_M1).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    y_MN = torch._int_mm(x_int8_MK, weight_NK.t()).float() * (x_scale_M1 * weight_scale_N)
    if bias_N is not None:
        y_MN = y_MN + bias_N
    if gelu:
        y_MN = F.gelu(y_MN, approximate="tanh")
    return y_MN.to(x.dtype).reshape(*x.shape[:-1], weight_NK.shape[0])


@functools.lru_cache(maxsize=None)
def compiled_int8_linear():
    """`int8_linear` compiled once per process for every layer and shape (dynamic=True)."""
    return torch.compile(int8_linear, dynamic=True)


class Int8Linear(nn.Module):
    """A frozen nn.Linear with int8 weights (and, with `gelu`, the tanh-GELU after it); `compiled=False`
    runs `int8_linear` op by op (tests)."""

    def __init__(self, weight_NK: torch.Tensor, weight_scale_N: torch.Tensor, bias_N: Optional[torch.Tensor],
                 compiled: bool = True, gelu: bool = False):
        super().__init__()
        self.gelu = gelu
        self.in_features, self.out_features = weight_NK.shape[1], weight_NK.shape[0]
        self.register_buffer("weight_NK", weight_NK)
        self.register_buffer("weight_scale_N", weight_scale_N)
        self.register_buffer("bias_N", bias_N)
        self.compiled = compiled

    @classmethod
    def from_linear(cls, linear: nn.Linear, compiled: bool = True, gelu: bool = False) -> "Int8Linear":
        weight = linear.weight.detach().float()
        scale_N = weight.abs().amax(dim=1).clamp(min=1e-12) / INT8_MAX
        weight_NK = torch.round(weight / scale_N[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8).contiguous()
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        return cls(weight_NK, scale_N, bias, compiled, gelu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Inside a region being compiled (Generator.compile's stages) the plain function is traced and
        # fused with its neighbours; called eagerly, it runs as its own compiled graph.
        fn = compiled_int8_linear() if self.compiled and not torch.compiler.is_compiling() else int8_linear
        return fn(x, self.weight_NK, self.weight_scale_N, self.bias_N, self.gelu)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8{', gelu' if self.gelu else ''}"


def is_tanh_gelu(module: nn.Module) -> bool:
    return isinstance(module, nn.GELU) and module.approximate == "tanh"


def quantize_linears(module: nn.Module, compiled: bool = True) -> int:
    """Replaces every nn.Linear inside `module` (recursively, in place) by an Int8Linear; returns how many.
    In an nn.Sequential, a tanh-GELU right after a Linear moves into it (nn.Identity in its place), so
    the activation costs no pass of its own."""
    count = 0
    children = list(module.named_children())
    for i, (name, child) in enumerate(children):
        if isinstance(child, nn.Linear):
            following = children[i + 1][1] if i + 1 < len(children) else None
            fuse = isinstance(module, nn.Sequential) and following is not None and is_tanh_gelu(following)
            setattr(module, name, Int8Linear.from_linear(child, compiled, gelu=fuse))
            if fuse:
                setattr(module, children[i + 1][0], nn.Identity())
            count += 1
        else:
            count += quantize_linears(child, compiled)
    return count


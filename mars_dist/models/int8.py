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


def _int8_matmul(x_MK: torch.Tensor, weight_NK: torch.Tensor, weight_scale_N: torch.Tensor,
                 bias_N: Optional[torch.Tensor]) -> torch.Tensor:
    """float32 `x_MK @ W^T + b` through int8 codes of both, the activations quantized per row on the fly."""
    x_MK = x_MK.float()
    x_scale_M1 = x_MK.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / INT8_MAX
    x_int8_MK = torch.round(x_MK / x_scale_M1).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    y_MN = torch._int_mm(x_int8_MK, weight_NK.t()).float() * (x_scale_M1 * weight_scale_N)
    return y_MN if bias_N is None else y_MN + bias_N


def int8_linear(x_MK: torch.Tensor, weight_NK: torch.Tensor, weight_scale_N: torch.Tensor,
                bias_N: Optional[torch.Tensor]) -> torch.Tensor:
    """`x_MK [M, K]` (any float dtype) through an int8 weight `weight_NK` with per-channel scales ->
    `[M, N]` in x's dtype."""
    return _int8_matmul(x_MK, weight_NK, weight_scale_N, bias_N).to(x_MK.dtype)


def int8_linear_gelu(x_MK: torch.Tensor, weight_NK: torch.Tensor, weight_scale_N: torch.Tensor,
                     bias_N: Optional[torch.Tensor]) -> torch.Tensor:
    """`int8_linear` followed by the tanh-GELU, in the same pass as the rescale."""
    return F.gelu(_int8_matmul(x_MK, weight_NK, weight_scale_N, bias_N), approximate="tanh").to(x_MK.dtype)


@functools.lru_cache(maxsize=None)
def compiled_int8_linear(gelu: bool):
    """`int8_linear` (or `int8_linear_gelu`) compiled once per process for every layer and shape.

    Each is its own function so that each has its own graphs; callers pass 2-D inputs outside
    autocast (Int8Linear.forward), so what is left to tell graphs apart is the input's dtype (and
    M = 1): at most a few graphs each, well inside dynamo's recompile limit (8), beyond which it
    would silently run the function op by op."""
    return torch.compile(int8_linear_gelu if gelu else int8_linear, dynamic=True)


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
        # 2-D and detached (not a view): dynamo guards a view's base, whose shape would then pick the graph.
        x_MK = x.reshape(-1, self.in_features).detach()
        args = (x_MK, self.weight_NK, self.weight_scale_N, self.bias_N)
        if self.compiled and not torch.compiler.is_compiling():
            # Called eagerly: its own compiled graph, entered with autocast off (the int8 GEMM is not
            # autocast's business, and autocast's state would otherwise be one more graph per state).
            # Inside a region being compiled (Generator.compile's stages) the plain function is traced
            # and fused with its neighbours.
            with torch.autocast(x.device.type, enabled=False):
                y_MN = compiled_int8_linear(self.gelu)(*args)
        else:
            y_MN = (int8_linear_gelu if self.gelu else int8_linear)(*args)
        return y_MN.reshape(*x.shape[:-1], self.out_features)

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


"""Transformer pieces every generator family shares: l2-normalised SDPA attention with a KV cache,
and AdaLN-modulated blocks / head whose scale, shift and gate come from the condition token.

The modulation (a function of the condition only) is computed once per forward or per generated
batch, not once per scale: at batch 1 re-reading the 6*C*C modulation weights of every block at
every scale would cost as much memory traffic as the blocks themselves.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Callable, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from mars_dist.models.int8 import Int8Linear, is_tanh_gelu

_FUSED_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]


class LayerKVCache:
    """Keys and values of every token one attention layer has seen so far, in a buffer allocated
    once for the whole sequence (`capacity` tokens): each step writes its tokens in place and
    attends to the filled prefix. Growing the cache by concatenation would copy all of it again at
    every step, which for token-by-token decoding is O(L^2) bytes moved per layer.
    """

    def __init__(self, capacity: int):
        self.capacity, self.length = capacity, 0
        self._k_BHLc: Optional[torch.Tensor] = None
        self._v_BHLc: Optional[torch.Tensor] = None

    def extend(self, k_BHlc: torch.Tensor, v_BHlc: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Appends this step's keys/values; returns views of all keys/values so far [B, H, length, c]."""
        B, H, l, c = k_BHlc.shape
        end = self.length + l
        if end > self.capacity:
            raise ValueError(f"KV cache holds {self.capacity} tokens; {self.length} + {l} do not fit")
        if self._k_BHLc is None:
            self._k_BHLc = k_BHlc.new_empty(B, H, self.capacity, c)
            self._v_BHLc = v_BHlc.new_empty(B, H, self.capacity, c)
        self._k_BHLc[:, :, self.length:end] = k_BHlc
        self._v_BHLc[:, :, self.length:end] = v_BHlc
        self.length = end
        return self.k_BHlc, self.v_BHlc

    @property
    def k_BHlc(self) -> Optional[torch.Tensor]:
        return None if self._k_BHLc is None else self._k_BHLc[:, :, :self.length]

    @property
    def v_BHlc(self) -> Optional[torch.Tensor]:
        return None if self._v_BHLc is None else self._v_BHLc[:, :, :self.length]


class SelfAttention(nn.Module):
    """Multi-head attention with cosine (l2-normalised) q/k and a learned per-head temperature.

    Normalised q/k keep attention logits bounded whatever the activations grow to, which is what
    keeps deep next-scale models stable in bf16 (VAR's observation); the learned log-scale per head,
    clamped at log(100), gives back the sharpness a fixed 1/sqrt(d) would have provided.
    """

    def __init__(self, width: int, heads: int, l2_norm: bool, dropout: float, allow_math: bool):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.l2_norm = l2_norm
        self.dropout = dropout
        self.allow_math = allow_math
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        if l2_norm:
            self.log_scale_1H11 = nn.Parameter(torch.full((1, heads, 1, 1), math.log(4.0)))
        self.max_log_scale = math.log(100.0)

    def _backends(self, device: torch.device) -> contextlib.AbstractContextManager:
        if device.type == "cuda" and not self.allow_math:
            return sdpa_kernel(_FUSED_BACKENDS)
        return contextlib.nullcontext()

    def project(self, h_BLC: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normed tokens -> (q, k, v) [B, H, L, c], q and k l2-normalised (q carrying the temperature)."""
        B, L, C = h_BLC.shape
        qkv = self.qkv(h_BLC).view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q_BHLc, k_BHLc, v_BHLc = qkv.unbind(0)
        if self.l2_norm:
            scale_1H11 = self.log_scale_1H11.clamp(max=self.max_log_scale).exp()
            q_BHLc = (F.normalize(q_BHLc, dim=-1) * scale_1H11).to(v_BHLc.dtype)
            k_BHLc = F.normalize(k_BHLc, dim=-1).to(v_BHLc.dtype)
        return q_BHLc, k_BHLc, v_BHLc

    def attend(self, q_BHLc: torch.Tensor, k_BHLc: torch.Tensor, v_BHLc: torch.Tensor,
               attn_mask_LL: Optional[torch.Tensor], cache: Optional[LayerKVCache], causal: bool = False) -> torch.Tensor:
        """SDPA of this step's queries over the cached and this step's keys -> [B, H, L, c] (heads not merged).
        `causal`: token i attends to tokens <= i (SDPA's own causal path, no mask tensor)."""
        if cache is not None:
            k_BHLc, v_BHLc = cache.extend(k_BHLc, v_BHLc)
        with self._backends(q_BHLc.device):
            return F.scaled_dot_product_attention(
                q_BHLc, k_BHLc, v_BHLc, attn_mask=attn_mask_LL, is_causal=causal,
                dropout_p=self.dropout if self.training else 0.0, scale=1.0 if self.l2_norm else None,
            )

    def output(self, out_BHLc: torch.Tensor) -> torch.Tensor:
        """Heads merged and projected back to the width -> [B, L, C]."""
        B, H, L, c = out_BHLc.shape
        return self.proj(out_BHLc.transpose(1, 2).reshape(B, L, H * c))

    def forward(self, x_BLC: torch.Tensor, attn_mask_LL: Optional[torch.Tensor], cache: Optional[LayerKVCache],
                causal: bool = False) -> torch.Tensor:
        return self.output(self.attend(*self.project(x_BLC), attn_mask_LL, cache, causal))


class FeedForward(nn.Module):
    def __init__(self, width: int, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = round(width * mlp_ratio)
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x_BLC))))

    def quantize_int8(self) -> None:
        """Both matmuls in int8 (models/int8.py), the GELU moved into the first one's rescale pass."""
        self.fc1 = Int8Linear.from_linear(self.fc1, gelu=is_tanh_gelu(self.act))
        self.act = nn.Identity() if self.fc1.gelu else self.act
        self.fc2 = Int8Linear.from_linear(self.fc2)


class AdaLNBlock(nn.Module):
    """Pre-norm transformer block whose norms' scale/shift and residual gates come from the condition.

    The modulation projection starts at zero, so each block starts as the identity (adaLN-Zero)
    and the untrained model's output depends on the condition only through learning.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float, l2_norm: bool,
                 norm_eps: float, allow_math: bool):
        super().__init__()
        self.width = width
        self.norm = nn.LayerNorm(width, eps=norm_eps, elementwise_affine=False)
        self.attn = SelfAttention(width, heads, l2_norm, dropout, allow_math)
        self.ffn = FeedForward(width, mlp_ratio, dropout)
        self.ada = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def modulation(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """[B, 6, C]: gate_attn, gate_ffn, scale_attn, scale_ffn, shift_attn, shift_ffn."""
        return self.ada(F.silu(cond_BD)).view(-1, 6, self.width)

    def attention_inputs(self, x_BLC: torch.Tensor, mod_B6C: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The part before attention: modulated norm -> (q, k, v)."""
        _, _, scale1, _, shift1, _ = mod_B6C.unsqueeze(2).unbind(1)  # each B1C
        return self.attn.project(self.norm(x_BLC) * (1 + scale1) + shift1)

    def finish(self, x_BLC: torch.Tensor, out_BHLc: torch.Tensor, mod_B6C: torch.Tensor) -> torch.Tensor:
        """The part after attention: gated residual of its output, then the modulated, gated feed-forward."""
        gate1, gate2, _, scale2, _, shift2 = mod_B6C.unsqueeze(2).unbind(1)
        x_BLC = x_BLC + self.attn.output(out_BHLc) * gate1
        h = self.norm(x_BLC) * (1 + scale2) + shift2
        return x_BLC + self.ffn(h) * gate2

    def forward(self, x_BLC: torch.Tensor, mod_B6C: torch.Tensor, attn_mask_LL: Optional[torch.Tensor],
                cache: Optional[LayerKVCache] = None, causal: bool = False) -> torch.Tensor:
        q_BHLc, k_BHLc, v_BHLc = self.stages.attention_inputs(self, x_BLC, mod_B6C)
        out_BHLc = self.attn.attend(q_BHLc, k_BHLc, v_BHLc, attn_mask_LL, cache, causal)
        return self.stages.finish(self, x_BLC, out_BHLc, mod_B6C)


class AdaLNHead(nn.Module):
    """Condition-modulated final norm followed by the projection to codebook logits."""

    def __init__(self, width: int, vocab: int, norm_eps: float):
        super().__init__()
        self.width = width
        self.norm = nn.LayerNorm(width, eps=norm_eps, elementwise_affine=False)
        self.ada = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, vocab)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def modulation(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """[B, 2, C]: scale, shift."""
        return self.ada(F.silu(cond_BD)).view(-1, 2, self.width)

    def forward(self, x_BLC: torch.Tensor, mod_B2C: torch.Tensor) -> torch.Tensor:
        scale, shift = mod_B2C.unsqueeze(2).unbind(1)
        return self.out(self.norm(x_BLC) * (1 + scale) + shift).float()


class BlockStages(NamedTuple):
    """How a block runs the pure tensor code on either side of its attention: the plain methods, or
    their torch.compile'd versions (`compiled_stages`)."""

    attention_inputs: Callable
    finish: Callable
    head: Callable


EAGER_STAGES = BlockStages(AdaLNBlock.attention_inputs, AdaLNBlock.finish, None)  # head None: the module's own call
AdaLNBlock.stages = EAGER_STAGES  # what every block runs until AdaLNTrunk.compile_stages says otherwise


@functools.lru_cache(maxsize=None)
def compiled_stages() -> BlockStages:
    """The stages compiled once per process for all blocks, models and sequence lengths.

    Between two attentions a block is ~15 elementwise ops and three matmuls; eagerly each op is its
    own pass over the activations (in bf16 on a CPU, with conversions in and out of fp32), which at
    generation's small batches costs about as much as the matmuls. Inductor fuses them into the
    matmuls' neighbours. The attention with its KV cache stays outside (its cache is Python state).
    One compiled graph serves every block of every model (the block is an input, its weights are
    read through it) and, compiled with dynamic shapes, every scale / step length; the first call
    compiles (tens of seconds on a CPU; needs a C++ compiler there), later ones reuse it."""
    return BlockStages(torch.compile(AdaLNBlock.attention_inputs, dynamic=True),
                       torch.compile(AdaLNBlock.finish, dynamic=True),
                       torch.compile(AdaLNHead.forward, dynamic=True))

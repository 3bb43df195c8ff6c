"""Plain pre-norm ViT blocks (torch SDPA attention) and the patchify/unpatchify maps of a C-channel image.

The tokenizer's encoder and decoder are both a stack of these blocks; what differs is only which
tokens go in (image patches + latent queries, or mask queries + quantized latents).
"""
from __future__ import annotations

from typing import Any, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"ViT width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x_BLD: torch.Tensor) -> torch.Tensor:
        B, L, D = x_BLD.shape
        qkv = self.qkv(x_BLD).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q_BHLd, k_BHLd, v_BHLd = qkv.unbind(0)
        out_BHLd = F.scaled_dot_product_attention(q_BHLd, k_BHLd, v_BHLd)
        return self.proj(out_BHLd.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))

    def forward(self, x_BLD: torch.Tensor) -> torch.Tensor:
        x_BLD = x_BLD + self.attn(self.norm1(x_BLD))
        return x_BLD + self.mlp(self.norm2(x_BLD))


class Transformer(nn.Module):
    """`depth` blocks followed by a final LayerNorm."""

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, x_BLD: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x_BLD = block(x_BLD)
        return self.norm(x_BLD)


def init_vit_weights(module: nn.Module) -> None:
    """ViT/DINOv2-style random init: truncated normal 0.02 for linears, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def patch_hw(patch_size: Any) -> Tuple[int, int]:
    """`tokenizer.patch_size` -> (ph, pw): an int is a square patch, [freq, time] a rectangle.

    A frequency-narrow rectangle (e.g. [4, 64]) makes each token one narrow band over a longer time
    span, where a steady harmonic is a single row rather than a slanted detail inside a square."""
    if isinstance(patch_size, bool):
        raise ValueError(f"tokenizer.patch_size={patch_size!r}: expected an int or [freq, time]")
    if isinstance(patch_size, int):
        sizes = (patch_size, patch_size)
    else:
        try:
            sizes = tuple(patch_size)
        except TypeError:
            sizes = ()
        if len(sizes) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in sizes):
            raise ValueError(f"tokenizer.patch_size={patch_size!r}: expected an int or [freq, time]")
    if min(sizes) < 1:
        raise ValueError(f"tokenizer.patch_size={patch_size!r}: sizes must be positive")
    return int(sizes[0]), int(sizes[1])


def patch_grid(image_hw: Tuple[int, int], patch_size: Any) -> Tuple[int, int]:
    """(H, W) -> number of patches along each axis; both must divide exactly."""
    H, W = image_hw
    ph, pw = patch_hw(patch_size)
    if H % ph or W % pw:
        raise ValueError(f"image size {H}x{W} is not divisible by tokenizer.patch_size={patch_size} ({ph}x{pw})")
    return H // ph, W // pw


def patchify(x_BCHW: torch.Tensor, patch_size: Any) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/ph)(W/pw), C ph pw], patches in row-major order."""
    B, C, H, W = x_BCHW.shape
    ph, pw = patch_hw(patch_size)
    gh, gw = H // ph, W // pw
    x = x_BCHW.reshape(B, C, gh, ph, gw, pw)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(B, gh * gw, C * ph * pw)


def unpatchify(x_BLP: torch.Tensor, channels: int, grid_hw: Tuple[int, int], patch_size: Any) -> torch.Tensor:
    """Inverse of `patchify`: [B, gh*gw, C ph pw] -> [B, C, gh ph, gw pw]."""
    B = x_BLP.shape[0]
    gh, gw = grid_hw
    ph, pw = patch_hw(patch_size)
    x = x_BLP.reshape(B, gh, gw, channels, ph, pw)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(B, channels, gh * ph, gw * pw)


def sincos_2d(grid_hw: Tuple[int, int], width: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position code [gh*gw, width] of grid cell centres in [0, 1]^2.

    Coordinates are normalised to the image, not counted in cells, so grids of different sizes
    over the same image (the patch grid and the latent grid) share one frame: a latent token and
    the patches it covers start out with similar codes, which lets attention find locality from
    the first step instead of learning geometry from random embeddings."""
    if width % 4:
        raise ValueError(f"sin-cos position code needs a width divisible by 4, got {width}")
    gh, gw = grid_hw
    quarter = width // 4
    # wavelengths from 2 image spans down to 1/16 of one: finer ones alias between grid cells and
    # would make distant cells look alike
    freqs = 2.0 ** torch.linspace(0.0, 5.0, quarter) * torch.pi
    ys = (torch.arange(gh, dtype=torch.float64) + 0.5) / gh
    xs = (torch.arange(gw, dtype=torch.float64) + 0.5) / gw
    y_hw, x_hw = torch.meshgrid(ys, xs, indexing="ij")
    ang_y = y_hw.reshape(-1, 1) * freqs.double()
    ang_x = x_hw.reshape(-1, 1) * freqs.double()
    return torch.cat([ang_y.sin(), ang_y.cos(), ang_x.sin(), ang_x.cos()], dim=1).float()

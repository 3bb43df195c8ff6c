"""Architecture settings of the tokenizer (ViT encoder/decoder + shared multi-scale quantizer) and of
the PatchGAN discriminator. How they are trained (loss weights, EMA, the discriminator's schedule)
is the tokenizer task's (mars_dist/tasks/tokenizer.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List


def _default_scales() -> List[List[int]]:
    return [[1, 1], [2, 2], [3, 3], [4, 4], [6, 6], [8, 8], [10, 10], [13, 13], [16, 16]]


@dataclass
class DiscriminatorConfig:
    channels: int = 64
    num_layers: int = 3


@dataclass
class TokenizerConfig:
    patch_size: Any = 16  # int (square) or [freq, time] in CMX pixels
    # latent queries start from the patches under them, decoder mask queries from the latent over them
    spatial_prior: bool = True
    pos_init: str = "sincos"  # sincos: 2-D sin-cos in one frame for patch and latent grids | random: N(0, 0.02)
    enc_width: int = 768
    enc_depth: int = 12
    enc_heads: int = 12
    dec_width: int = 768
    dec_depth: int = 12
    dec_heads: int = 12
    mlp_ratio: float = 4.0
    codebook_size: int = 16384
    codebook_dim: int = 32
    scales: List[List[int]] = field(default_factory=_default_scales)  # (h, w) per scale; last = latent grid
    beta: float = 0.25
    quant_dropout: float = 0.1  # fraction of a batch that keeps only the first n scales (n uniform in 1..K)
    phi_shared: int = 4  # number of partially shared phi convs
    phi_residual_ratio: float = 0.5
    dead_code_steps: int = 0  # replace codes unused (on every rank) for this many optimizer steps (0 = off)
    restart_buffer_size: int = 4096  # recent residual vectors kept as dead-code replacements

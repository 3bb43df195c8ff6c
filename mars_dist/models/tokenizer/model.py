"""The MARS spectrogram tokenizer: ViT encoder with latent query tokens, shared multi-scale quantizer, ViT decoder.

ImageFolder-style 1-D-to-grid latents: the encoder reads the CMX image's patches together with S
learnable latent tokens; only the latent tokens leave the encoder, laid out as the quantizer's last
(h, w) grid. The decoder reads gh*gw learnable mask tokens together with the quantized latents and
predicts the image patches from the mask tokens. The latent grid is therefore independent of the
patch grid, which is what lets the AR's token count be chosen freely.

Attention is global, but each query starts from its own image area (`spatial_prior`): a latent
query adds the average of the patch embeddings under it, a decoder mask query the normalised
latent content over it. Without that, a fresh decoder's near-uniform attention hands every output
patch the average of all latents, and a CPU-length run never gets past the mean envelope
(docs/tokenizer.md, "Tuning the small config").
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mars_dist.models.tokenizer.config import TokenizerConfig
from mars_dist.models.tokenizer.quantizer import MultiScaleQuantizer
from mars_dist.parallel.sharding import ShardingPlan
from mars_dist.models.tokenizer.vit import Transformer, init_vit_weights, patch_grid, patch_hw, patchify, sincos_2d, unpatchify


def regrid(tokens_BLD: torch.Tensor, src_hw: Tuple[int, int], dst_hw: Tuple[int, int]) -> torch.Tensor:
    """Tokens laid out row-major on a src grid -> the same image area on a dst grid: each dst cell
    averages the src cells it overlaps (adaptive average pooling: an average when shrinking, a copy
    when growing, per axis; identity when the grids match)."""
    if tuple(src_hw) == tuple(dst_hw):
        return tokens_BLD
    B, _, D = tokens_BLD.shape
    grid_BDhw = tokens_BLD.transpose(1, 2).reshape(B, D, *src_hw)
    out_BDhw = F.adaptive_avg_pool2d(grid_BDhw, tuple(dst_hw))
    return out_BDhw.flatten(2).transpose(1, 2)


class SpectrogramTokenizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig, in_shape: Sequence[int]):
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"tokenizer in_shape={tuple(in_shape)}: expected (C, H, W) from the shard manifest's cmx_shape")
        self.cfg = cfg
        self.in_shape = tuple(int(v) for v in in_shape)
        C, H, W = self.in_shape
        ph, pw = patch_hw(cfg.patch_size)
        self.grid_hw = patch_grid((H, W), cfg.patch_size)
        num_patches = self.grid_hw[0] * self.grid_hw[1]
        self.quantizer = MultiScaleQuantizer(
            cfg.codebook_size, cfg.codebook_dim, cfg.scales, beta=cfg.beta, phi_shared=cfg.phi_shared,
            phi_residual_ratio=cfg.phi_residual_ratio, quant_dropout=cfg.quant_dropout,
            dead_code_steps=cfg.dead_code_steps, restart_buffer_size=cfg.restart_buffer_size,
        )
        lh, lw = self.quantizer.latent_hw
        num_latents = lh * lw

        self.patch_embed = nn.Linear(C * ph * pw, cfg.enc_width)
        self.enc_pos = nn.Parameter(torch.zeros(1, num_patches, cfg.enc_width))
        self.latent_tokens = nn.Parameter(torch.zeros(1, num_latents, cfg.enc_width))
        self.encoder = Transformer(cfg.enc_width, cfg.enc_depth, cfg.enc_heads, cfg.mlp_ratio)
        self.to_latent = nn.Linear(cfg.enc_width, cfg.codebook_dim)

        self.from_latent = nn.Linear(cfg.codebook_dim, cfg.dec_width)
        # fhat starts tiny (codes init at std 0.02): normalised, the latent's content is not drowned
        # by the position embeddings it is added to, so the decoder sees it from the first step
        self.latent_norm = nn.LayerNorm(cfg.dec_width)
        self.dec_latent_pos = nn.Parameter(torch.zeros(1, num_latents, cfg.dec_width))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dec_width))
        self.dec_pos = nn.Parameter(torch.zeros(1, num_patches, cfg.dec_width))
        self.decoder = Transformer(cfg.dec_width, cfg.dec_depth, cfg.dec_heads, cfg.mlp_ratio)
        self.to_pixels = nn.Linear(cfg.dec_width, C * ph * pw)

        init_vit_weights(self)
        for param in (self.enc_pos, self.latent_tokens, self.dec_latent_pos, self.mask_token, self.dec_pos):
            nn.init.trunc_normal_(param, std=0.02)
        if cfg.pos_init == "sincos":
            self._init_sincos_positions()
        elif cfg.pos_init != "random":
            raise ValueError(f"tokenizer.pos_init={cfg.pos_init!r}: expected 'sincos' or 'random'")

    @torch.no_grad()
    def _init_sincos_positions(self) -> None:
        """Start every position embedding (and the latent queries) from one shared image frame.

        Patch and latent grids cover the same image, so `sincos_2d` gives a latent token the code of
        the patches under it, in the encoder and in the decoder; the embeddings stay learnable."""
        latent_hw = self.quantizer.latent_hw
        self.enc_pos.add_(sincos_2d(self.grid_hw, self.enc_pos.shape[-1]))
        self.latent_tokens.add_(sincos_2d(latent_hw, self.latent_tokens.shape[-1]))
        self.dec_pos.add_(sincos_2d(self.grid_hw, self.dec_pos.shape[-1]))
        self.dec_latent_pos.add_(sincos_2d(latent_hw, self.dec_latent_pos.shape[-1]))

    def sharding_plan(self) -> ShardingPlan:
        """Units: the quantizer's phi convs, then every encoder and decoder block; the quantizer's
        external codebook weight (mars_dist/parallel/sharding.py)."""
        quantizer = self.quantizer.sharding_plan()
        blocks = tuple(self.encoder.blocks) + tuple(self.decoder.blocks)
        return ShardingPlan(quantizer.units + blocks, external_parameters=quantizer.external_parameters)

    # ------------------------------------------------------------------ halves
    def encode_latent(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        """Image -> continuous latent f [B, codebook_dim, h, w] (before quantization)."""
        if tuple(x_BCHW.shape[1:]) != self.in_shape:
            raise ValueError(f"tokenizer input has shape {tuple(x_BCHW.shape)}: expected [B, {', '.join(map(str, self.in_shape))}]")
        B = x_BCHW.shape[0]
        patches_BLD = self.patch_embed(patchify(x_BCHW, self.cfg.patch_size)) + self.enc_pos
        queries_BSD = self.latent_tokens.expand(B, -1, -1)
        if self.cfg.spatial_prior:
            queries_BSD = queries_BSD + regrid(patches_BLD, self.grid_hw, self.quantizer.latent_hw)
        tokens_BLD = torch.cat([patches_BLD, queries_BSD], dim=1)
        latents_BSD = self.encoder(tokens_BLD)[:, patches_BLD.shape[1]:]
        lh, lw = self.quantizer.latent_hw
        return self.to_latent(latents_BSD).transpose(1, 2).reshape(B, self.cfg.codebook_dim, lh, lw)

    def decode_fhat(self, fhat_BChw: torch.Tensor) -> torch.Tensor:
        """Quantized latent [B, codebook_dim, h, w] -> image [B, C, H, W]."""
        B = fhat_BChw.shape[0]
        content_BSD = self.latent_norm(self.from_latent(fhat_BChw.flatten(2).transpose(1, 2)))
        latents_BSD = content_BSD + self.dec_latent_pos
        num_patches = self.dec_pos.shape[1]
        masks_BLD = self.mask_token.expand(B, num_patches, -1) + self.dec_pos
        if self.cfg.spatial_prior:
            masks_BLD = masks_BLD + regrid(content_BSD, self.quantizer.latent_hw, self.grid_hw)
        out_BLD = self.decoder(torch.cat([masks_BLD, latents_BSD], dim=1))[:, :num_patches]
        return unpatchify(self.to_pixels(out_BLD), self.in_shape[0], self.grid_hw, self.cfg.patch_size)

    # ------------------------------------------------------------------ public API
    def forward(self, x_BCHW: torch.Tensor) -> Dict[str, Any]:
        """-> {"recon": [B, C, H, W], "vq_loss": scalar, "stats": per-scale "usage"/"perplexity" [K]}."""
        fhat_BChw, vq_loss, stats = self.quantizer(self.encode_latent(x_BCHW))
        return {"recon": self.decode_fhat(fhat_BChw), "vq_loss": vq_loss, "stats": stats}

    @torch.no_grad()
    def encode(self, x_BCHW: torch.Tensor) -> List[torch.Tensor]:
        """Image -> token maps, one LongTensor [B, h_k, w_k] per scale."""
        return self.quantizer.encode(self.encode_latent(x_BCHW))

    def decode_indices(self, idx_list: Sequence[torch.Tensor]) -> torch.Tensor:
        """Token maps (all scales, or a coarse prefix) -> image."""
        return self.decode_fhat(self.quantizer.decode(idx_list))

    @property
    def scales(self) -> List[Tuple[int, int]]:
        return self.quantizer.scales

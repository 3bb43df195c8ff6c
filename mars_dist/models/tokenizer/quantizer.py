"""VAR's multi-scale residual quantizer with ONE codebook shared by all scales, for rectangular grids.

A latent f [B, C, h_K, w_K] is explained coarse to fine: at scale k the remaining residual is
area-downsampled to (h_k, w_k), each vector is looked up in the codebook by cosine similarity, the
chosen codes are bicubic-upsampled back to (h_K, w_K), refined by a 3x3 "phi" conv and subtracted
from the residual. The sum of the scale contributions is the quantized latent fhat. The token maps
r_1..r_K are what the next-scale AR models; `teacher_forcing_inputs` and `next_scale_input` are the
two views of fhat the AR needs in training and at inference.

Differences from VAR's code (same algorithm): (h, w) schedules instead of square side lengths;
quantizer dropout (a fraction of each batch keeps only its first n scales, so coarse prefixes decode
to something sensible, as ImageFolder/MARS train it); dead-code restart from a buffer of recent
residuals, with the decision summed over ranks so every rank edits the codebook identically (the
backend's ParallelContext does the collectives and the edit of a possibly sharded codebook).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mars_dist.parallel.context import LOCAL, ParallelContext
from mars_dist.parallel.sharding import ShardingPlan

Scale = Tuple[int, int]


def check_scales(scales: Sequence[Sequence[int]]) -> List[Scale]:
    """Validates a schedule of (h, w) grids: positive ints, each no larger than the last (the latent grid)."""
    out: List[Scale] = []
    for i, s in enumerate(scales):
        if len(s) != 2 or not all(isinstance(v, int) and v > 0 for v in s):
            raise ValueError(f"tokenizer.scales[{i}]={list(s)!r}: expected [h, w] with positive integers")
        out.append((int(s[0]), int(s[1])))
    if not out:
        raise ValueError("tokenizer.scales is empty: expected a list of [h, w] grids, coarse to fine")
    H, W = out[-1]
    for i, (h, w) in enumerate(out):
        if h > H or w > W:
            raise ValueError(f"tokenizer.scales[{i}]={[h, w]} is larger than the last (latent) grid {[H, W]}")
    return out


class Phi(nn.Conv2d):
    """h -> (1 - r) h + r conv3x3(h): a light refinement of an upsampled scale contribution."""

    def __init__(self, dim: int, residual_ratio: float):
        super().__init__(dim, dim, kernel_size=3, padding=1)
        self.residual_ratio = residual_ratio

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:
        return h_BChw * (1.0 - self.residual_ratio) + super().forward(h_BChw) * self.residual_ratio


class PhiPartiallyShared(nn.Module):
    """`num_phi` convs shared by K scales: scale k uses the conv whose tick is nearest to k / (K - 1).

    Fewer convs than scales keeps parameters low while coarse and fine scales still get different
    refinements (VAR's "partially shared" variant, its best).
    """

    def __init__(self, dim: int, residual_ratio: float, num_phi: int, num_scales: int):
        super().__init__()
        if num_phi < 1:
            raise ValueError(f"tokenizer.phi_shared={num_phi}: expected >= 1")
        self.phis = nn.ModuleList(Phi(dim, residual_ratio) for _ in range(num_phi))
        lo, hi = 1 / 3 / num_phi, 1 - 1 / 3 / num_phi
        ticks = [lo + (hi - lo) * i / max(num_phi - 1, 1) for i in range(num_phi)]
        positions = [si / max(num_scales - 1, 1) for si in range(num_scales)]
        self.phi_of_scale = [min(range(num_phi), key=lambda i: abs(ticks[i] - pos)) for pos in positions]

    def forward(self, h_BChw: torch.Tensor, si: int) -> torch.Tensor:
        return self.phis[self.phi_of_scale[si]](h_BChw)


def _resize(x_BChw: torch.Tensor, size: Scale, mode: str) -> torch.Tensor:
    if tuple(x_BChw.shape[-2:]) == tuple(size):
        return x_BChw
    if mode == "area":
        return F.interpolate(x_BChw, size=size, mode="area")
    return F.interpolate(x_BChw, size=size, mode="bicubic", align_corners=False)


def _perplexity(hits_V: torch.Tensor) -> torch.Tensor:
    p_V = hits_V / hits_V.sum().clamp_min(1)
    return torch.exp(-(p_V * torch.log(p_V.clamp_min(1e-12))).sum())


class MultiScaleQuantizer(nn.Module):
    def __init__(
        self,
        codebook_size: int,
        codebook_dim: int,
        scales: Sequence[Sequence[int]],
        beta: float = 0.25,
        phi_shared: int = 4,
        phi_residual_ratio: float = 0.5,
        quant_dropout: float = 0.0,
        dead_code_steps: int = 0,
        restart_buffer_size: int = 4096,
    ):
        super().__init__()
        if not 0.0 <= quant_dropout <= 1.0:
            raise ValueError(f"tokenizer.quant_dropout={quant_dropout}: expected a fraction in [0, 1]")
        self.scales: List[Scale] = check_scales(scales)
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.beta = beta
        self.quant_dropout = quant_dropout
        self.dead_code_steps = dead_code_steps
        self.codebook = nn.Embedding(codebook_size, codebook_dim)
        nn.init.trunc_normal_(self.codebook.weight, std=0.02)
        self.phi = PhiPartiallyShared(codebook_dim, phi_residual_ratio, phi_shared, len(self.scales))
        # Dead-code bookkeeping. Persistent buffers are checkpointed by every backend with the model.
        self.register_buffer("code_hits", torch.zeros(codebook_size), persistent=False)  # since last restart call
        self.register_buffer("steps_unused", torch.zeros(codebook_size, dtype=torch.long))
        self.register_buffer("recent_residuals", torch.zeros(restart_buffer_size, codebook_dim))
        self.register_buffer("recent_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("recent_next", torch.zeros((), dtype=torch.long))

    @property
    def latent_hw(self) -> Scale:
        return self.scales[-1]

    def sharding_plan(self) -> ShardingPlan:
        """The phi convs are units; the cosine lookup reads the codebook's weight without calling the
        embedding, so under ZeRO-3 that weight is an external parameter of the quantizer."""
        return ShardingPlan(tuple(self.phi.phis), external_parameters=((self, self.codebook.weight),))

    # ------------------------------------------------------------------ building blocks
    def lookup(self, rest_NC: torch.Tensor) -> torch.Tensor:
        """Nearest code by cosine similarity (l2-normalised residual and codes)."""
        sim_NV = F.normalize(rest_NC, dim=-1) @ F.normalize(self.codebook.weight, dim=-1).t()
        return sim_NV.argmax(dim=-1)

    def scale_contribution(self, si: int, idx_Bhw: torch.Tensor) -> torch.Tensor:
        """Codes of scale `si` -> their contribution to fhat at the latent resolution [B, C, H, W]."""
        h_BChw = self.codebook(idx_Bhw).permute(0, 3, 1, 2)
        return self.phi(_resize(h_BChw, self.latent_hw, "bicubic"), si)

    def _check_latent(self, f_BChw: torch.Tensor) -> None:
        if f_BChw.dim() != 4 or f_BChw.shape[1] != self.codebook_dim or tuple(f_BChw.shape[-2:]) != self.latent_hw:
            raise ValueError(
                f"quantizer input has shape {tuple(f_BChw.shape)}: expected [B, {self.codebook_dim}, "
                f"{self.latent_hw[0]}, {self.latent_hw[1]}] (codebook_dim x last scale)"
            )

    # ------------------------------------------------------------------ training
    def _kept_scales(self, B: int, device: torch.device) -> torch.Tensor:
        """Per sample, how many scales it keeps: K, or for a `quant_dropout` fraction uniform in 1..K."""
        K = len(self.scales)
        keep_B = torch.full((B,), K, device=device, dtype=torch.long)
        if self.training and self.quant_dropout > 0:
            dropped_B = torch.rand(B, device=device) < self.quant_dropout
            keep_B = torch.where(dropped_B, torch.randint(1, K + 1, (B,), device=device), keep_B)
        return keep_B

    def forward(self, f_BChw: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """Quantizes f; returns (fhat with straight-through gradient to f, vq loss, stats).

        vq loss per scale (VAR): beta * |sg(fhat_k) - f|^2 (commitment, trains the encoder) +
        |fhat_k - sg(f)|^2 (trains codebook and phi), averaged over scales and over the samples
        that keep that scale. stats: "usage" and "perplexity", float tensors [K] (this batch).
        """
        self._check_latent(f_BChw)
        with torch.autocast(device_type=f_BChw.device.type, enabled=False):
            f_BChw = f_BChw.float()
            B = f_BChw.shape[0]
            keep_B = self._kept_scales(B, f_BChw.device)
            f_nograd = f_BChw.detach()
            f_rest = f_nograd.clone()
            fhat_BChw = torch.zeros_like(f_nograd)
            vq_loss = f_BChw.new_zeros(())
            usage, perplexity = [], []
            for si, hw in enumerate(self.scales):
                rest_NC = _resize(f_rest, hw, "area").permute(0, 2, 3, 1).reshape(-1, self.codebook_dim)
                with torch.no_grad():
                    idx_N = self.lookup(rest_NC)
                hits_V = torch.bincount(idx_N, minlength=self.codebook_size).float()
                usage.append((hits_V > 0).float().mean())
                perplexity.append(_perplexity(hits_V))
                if self.training:
                    self._record(hits_V, rest_NC)
                kept_B = (keep_B > si).float()
                h_BChw = self.scale_contribution(si, idx_N.view(B, *hw)) * kept_B.view(B, 1, 1, 1)
                fhat_BChw = fhat_BChw + h_BChw
                f_rest = f_rest - h_BChw.detach()
                commit_B = (fhat_BChw.detach() - f_BChw).pow(2).mean(dim=(1, 2, 3))
                codebook_B = (fhat_BChw - f_nograd).pow(2).mean(dim=(1, 2, 3))
                vq_loss = vq_loss + ((self.beta * commit_B + codebook_B) * kept_B).sum() / kept_B.sum().clamp_min(1)
            vq_loss = vq_loss / len(self.scales)
            fhat_ste = (fhat_BChw.detach() - f_nograd) + f_BChw
        stats = {"usage": torch.stack(usage).detach(), "perplexity": torch.stack(perplexity).detach()}
        return fhat_ste, vq_loss, stats

    # ------------------------------------------------------------------ token maps
    @torch.no_grad()
    def encode(self, f_BChw: torch.Tensor) -> List[torch.Tensor]:
        """f -> token maps, one LongTensor [B, h_k, w_k] per scale (no dropout, no bookkeeping)."""
        self._check_latent(f_BChw)
        f_rest = f_BChw.float().clone()
        B = f_rest.shape[0]
        idx_list = []
        for si, hw in enumerate(self.scales):
            rest_NC = _resize(f_rest, hw, "area").permute(0, 2, 3, 1).reshape(-1, self.codebook_dim)
            idx_Bhw = self.lookup(rest_NC).view(B, *hw)
            f_rest = f_rest - self.scale_contribution(si, idx_Bhw)
            idx_list.append(idx_Bhw)
        return idx_list

    def _check_indices(self, si: int, idx_Bhw: torch.Tensor) -> None:
        if idx_Bhw.dim() != 3 or tuple(idx_Bhw.shape[-2:]) != self.scales[si]:
            raise ValueError(f"token map of scale {si} has shape {tuple(idx_Bhw.shape)}: expected [B, {self.scales[si][0]}, {self.scales[si][1]}]")

    def next_scale_input(
        self, si: int, fhat_BChw: Optional[torch.Tensor], idx_Bhw: torch.Tensor
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Adds scale `si`'s codes to fhat (None = zeros at si 0); returns (fhat, fhat area-downsampled
        to scale si+1), the AR's input for the next scale, or None after the last scale."""
        self._check_indices(si, idx_Bhw)
        h_BChw = self.scale_contribution(si, idx_Bhw)
        fhat_BChw = h_BChw if fhat_BChw is None else fhat_BChw + h_BChw
        if si == len(self.scales) - 1:
            return fhat_BChw, None
        return fhat_BChw, _resize(fhat_BChw, self.scales[si + 1], "area")

    def decode(self, idx_list: Sequence[torch.Tensor]) -> torch.Tensor:
        """Token maps of the first n <= K scales -> fhat [B, C, H, W] (a prefix gives a coarse fhat)."""
        if not 1 <= len(idx_list) <= len(self.scales):
            raise ValueError(f"decode got {len(idx_list)} token maps: expected 1..{len(self.scales)}")
        fhat_BChw = None
        for si, idx_Bhw in enumerate(idx_list):
            fhat_BChw, _ = self.next_scale_input(si, fhat_BChw, idx_Bhw)
        return fhat_BChw

    def teacher_forcing_inputs(self, idx_list: Sequence[torch.Tensor]) -> torch.Tensor:
        """The AR's inputs for scales 2..K: fhat after scales 1..k, area-downsampled to scale k+1,
        flattened row-major and concatenated -> x_BLC with L = sum of h*w over scales[1:]."""
        if len(idx_list) != len(self.scales):
            raise ValueError(f"teacher_forcing_inputs got {len(idx_list)} token maps: expected {len(self.scales)}")
        fhat_BChw, inputs = None, []
        for si, idx_Bhw in enumerate(idx_list[:-1]):
            fhat_BChw, next_BChw = self.next_scale_input(si, fhat_BChw, idx_Bhw)
            inputs.append(next_BChw.flatten(2).transpose(1, 2))
        if not inputs:
            B = idx_list[0].shape[0]
            return self.codebook.weight.new_zeros(B, 0, self.codebook_dim)
        return torch.cat(inputs, dim=1)

    # ------------------------------------------------------------------ dead-code restart
    @torch.no_grad()
    def _record(self, hits_V: torch.Tensor, rest_NC: torch.Tensor) -> None:
        """Counts code hits and keeps a few residual vectors of this batch in a ring buffer."""
        self.code_hits += hits_V
        if self.dead_code_steps <= 0:
            return
        size = self.recent_residuals.shape[0]
        n = min(rest_NC.shape[0], max(1, size // (4 * len(self.scales))))
        picked_nC = rest_NC[torch.randperm(rest_NC.shape[0], device=rest_NC.device)[:n]]
        slots = (self.recent_next + torch.arange(n, device=rest_NC.device)) % size
        self.recent_residuals[slots] = picked_nC
        self.recent_next.copy_((self.recent_next + n) % size)
        self.recent_filled.copy_(torch.clamp(self.recent_filled + n, max=size))

    @torch.no_grad()
    def restart_dead_codes(self, parallel: ParallelContext = LOCAL) -> int:
        """Call once per optimizer step on every rank. Codes that no rank used for `dead_code_steps`
        steps are replaced by random recent residuals (rank 0's, broadcast), so they re-enter the
        lookup where the data is. Returns how many codes were replaced (the same on every rank)."""
        if self.dead_code_steps <= 0:
            return 0
        hits_V = parallel.all_reduce_sum(self.code_hits.clone())  # code_hits is zeroed next
        self.code_hits.zero_()
        self.steps_unused.copy_(torch.where(hits_V > 0, torch.zeros_like(self.steps_unused), self.steps_unused + 1))
        dead_V = self.steps_unused >= self.dead_code_steps
        num_dead = int(dead_V.sum())
        filled = int(self.recent_filled)
        if num_dead == 0 or filled == 0:
            return 0
        pick = torch.randint(0, filled, (num_dead,), device=self.recent_residuals.device)
        new_nC = parallel.broadcast(self.recent_residuals[pick], src=0)
        with parallel.full_tensors([self.codebook.weight], writeback=True) as (weight_VC,):
            weight_VC[dead_V.to(weight_VC.device)] = new_nC.to(weight_VC.dtype).to(weight_VC.device)
        self.steps_unused[dead_V] = 0
        return num_dead

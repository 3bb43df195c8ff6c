"""Pieces of the families' training objectives that several families share: per-token
cross-entropy, per-scale figures, and the token pyramid as one sequence with its input vectors."""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mars_dist.models.generators.layout import PyramidLayout
from mars_dist.models.generators.trunk import code_vectors


def cross_entropy_BL(logits_BLV: torch.Tensor, target_BL: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy [B, L] in float32."""
    B, L, V = logits_BLV.shape
    return F.cross_entropy(logits_BLV.float().view(B * L, V), target_BL.view(B * L), reduction="none").view(B, L)


def per_scale_logs(ce_BL: torch.Tensor, correct_BL: torch.Tensor, level_L: torch.Tensor, scales: int) -> Dict[str, torch.Tensor]:
    """scale/ce_s{k} and scale/acc_s{k}: the mean cross-entropy and accuracy of each scale's tokens."""
    logs = {}
    for k in range(scales):
        at_k = level_L == k
        logs[f"scale/ce_s{k}"] = ce_BL[:, at_k].mean()
        logs[f"scale/acc_s{k}"] = correct_BL[:, at_k].mean()
    return logs


def every_token_loss(logits_BLV: torch.Tensor, target_BL: torch.Tensor, level_L: torch.Tensor,
                     scales: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """(mean cross-entropy over every token, logs: loss/ce, loss/acc and each scale's ce and accuracy):
    the objective of the families that predict every token of the pyramid (next-scale, next-token)."""
    ce_BL = cross_entropy_BL(logits_BLV, target_BL)
    loss = ce_BL.mean()
    with torch.no_grad():
        correct_BL = (logits_BLV.argmax(dim=-1) == target_BL).float()
        logs = {"loss/ce": loss.detach(), "loss/acc": correct_BL.mean(), **per_scale_logs(ce_BL, correct_BL, level_L, scales)}
    return loss, logs


@torch.no_grad()
def pyramid_sequence(layout: PyramidLayout, codebook: nn.Embedding, idx_list: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(idx_BL, x_BLC): the token maps as one sequence in the layout's order, and the tokens' code
    vectors (the input of the families that model the pyramid position by position)."""
    idx_BL = layout.flatten(idx_list)
    return idx_BL, code_vectors(codebook, idx_BL)

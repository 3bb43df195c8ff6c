"""The AR's condition token: a sum of NSynth label embeddings, each with a learned "null" entry.

The null entries are what classifier-free guidance needs: the unconditional branch is the
all-null token, and training replaces labels by their null entries at random so the model learns
both that branch and every partial condition (a label the user does not give is null).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
from torch import nn

from mars_dist.labels import CONDITION_CLASSES, NULL, check_labels, velocity_level


class ConditionEmbedding(nn.Module):
    """labels -> cond_BD = sum over the four labels of table_label[class or null]."""

    def __init__(self, dim: int, cond_drop_prob: float, label_drop_prob: float, init_std: float):
        super().__init__()
        self.cond_drop_prob = cond_drop_prob
        self.label_drop_prob = label_drop_prob
        self.tables = nn.ModuleDict({name: nn.Embedding(n + 1, dim) for name, n in CONDITION_CLASSES.items()})
        for table in self.tables.values():
            nn.init.trunc_normal_(table.weight, std=init_std)

    def class_indices(self, labels: Mapping[str, torch.Tensor], batch: int, device: torch.device) -> Dict[str, torch.Tensor]:
        """Raw labels -> table row per label (the null row where a label is missing or -1)."""
        check_labels(labels, batch)
        rows = {}
        for name, n in CONDITION_CLASSES.items():
            values = labels.get(name)
            if values is None:
                rows[name] = torch.full((batch,), n, dtype=torch.long, device=device)
                continue
            values = values.to(device=device, dtype=torch.long)
            if name == "velocity":
                values = velocity_level(values)
            rows[name] = torch.where(values == NULL, torch.full_like(values, n), values)
        return rows

    def drop(self, rows: Dict[str, torch.Tensor], generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        """Training-time label dropout: whole condition with cond_drop_prob, each label with label_drop_prob."""
        batch = next(iter(rows.values())).shape[0]
        device = next(iter(rows.values())).device
        drop_all = torch.rand(batch, device=device, generator=generator) < self.cond_drop_prob
        dropped = {}
        for name, n in CONDITION_CLASSES.items():
            drop = drop_all | (torch.rand(batch, device=device, generator=generator) < self.label_drop_prob)
            dropped[name] = torch.where(drop, torch.full_like(rows[name], n), rows[name])
        return dropped

    def embed(self, rows: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.tables[name](rows[name]) for name in CONDITION_CLASSES)

    def forward(self, labels: Mapping[str, torch.Tensor], batch: int) -> torch.Tensor:
        """cond_BD for these labels; in training mode with label dropout applied."""
        rows = self.class_indices(labels, batch, self.tables["pitch"].weight.device)
        return self.embed(self.drop(rows) if self.training else rows)

    def null(self, batch: int) -> torch.Tensor:
        """The unconditional token (every label null), [batch, dim], in any mode."""
        return self.embed(self.class_indices({}, batch, self.tables["pitch"].weight.device))

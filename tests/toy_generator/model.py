"""The toy family's model: every token of every scale predicted at once from the label condition.

No autoregression and no transformer: enough to train, export, sample and edit through the real
engine, export, generation and benchmark paths, with nothing of the built-in families' trunk."""
from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

import torch
from torch import nn

from mars_dist.models.generators.conditioning import ConditionEmbedding
from mars_dist.models.generators.sampling import guided_logits, sample_logits


class BagOfTokens(nn.Module):
    """labels -> logits [B, L, V] for all L tokens of the pyramid (scale-major, row-major)."""

    def __init__(self, width: int, scales: Sequence[Sequence[int]], vocab: int):
        super().__init__()
        self.scales = [(int(h), int(w)) for h, w in scales]
        self.num_tokens, self.vocab = sum(h * w for h, w in self.scales), vocab
        self.cond = ConditionEmbedding(width, cond_drop_prob=0.1, label_drop_prob=0.1, init_std=0.02)
        self.head = nn.Linear(width, self.num_tokens * vocab)

    def forward(self, labels: Mapping[str, torch.Tensor], batch: int) -> torch.Tensor:
        return self.head(self.cond(labels, batch)).view(batch, self.num_tokens, self.vocab)

    def maps(self, seq_BL: torch.Tensor) -> List[torch.Tensor]:
        out, start = [], 0
        for h, w in self.scales:
            out.append(seq_BL[:, start:start + h * w].reshape(-1, h, w))
            start += h * w
        return out

    @torch.no_grad()
    def generate(self, quantizer: nn.Module, labels: Mapping[str, torch.Tensor], batch: int, cfg_scale: float = 1.0,
                 top_k: int = 0, top_p: float = 0.0, temperature: float = 1.0, spread: float = 1.0,
                 generator: Optional[torch.Generator] = None, known: Optional[Sequence[torch.Tensor]] = None,
                 keep: Optional[Sequence[torch.Tensor]] = None) -> List[torch.Tensor]:
        """One pass: guided logits (cond against all-null), scaled by `spread`, drawn; kept tokens given."""
        logits_BLV = guided_logits(self(labels, batch), self({}, batch), cfg_scale) * spread
        seq_BL = sample_logits(logits_BLV, top_k, top_p, temperature, generator)
        if keep is not None:
            seq_BL = torch.where(torch.cat([m.flatten(1) for m in keep], 1), torch.cat([t.flatten(1) for t in known], 1),
                                 seq_BL)
        return self.maps(seq_BL)

    def sequential_steps(self) -> int:
        return 1

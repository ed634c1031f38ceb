"""Per-puzzle learned vectors stored as a buffer and trained sparsely (§1.2, §2.2).

The table is not an `nn.Parameter` (it is excluded from parameter counts, from the dense
optimiser and from EMA). In a training forward, the rows of the batch are copied into a
grad-enabled leaf tensor; after backward, `SignSGD` (trm_core.optim) sums the row gradients
per puzzle id and writes the update back into the table.
"""

from __future__ import annotations

import torch
from torch import nn


class PuzzleEmbedding(nn.Module):
    def __init__(self, num_ids: int, dim: int):
        super().__init__()
        self.num_ids = num_ids
        self.dim = dim
        # Zero init (§1.2): every puzzle starts from the same (empty) conditioning.
        self.register_buffer("weight", torch.zeros(num_ids, dim), persistent=True)
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, ids: torch.Tensor, track_grad: bool) -> torch.Tensor:
        rows = self.weight[ids]
        if not track_grad:
            return rows
        rows = rows.detach().requires_grad_(True)
        self.pending = (ids.detach(), rows)
        return rows

    def take_pending(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(ids, leaf rows with .grad) of the last tracked forward, cleared on read."""
        pending, self.pending = self.pending, None
        return pending

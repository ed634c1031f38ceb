"""Optimisers and learning-rate schedule of the TRM recipe (§2.1, §2.2).

- `AdamATan2`: Adam with atan2 in place of the ε-guarded division, decoupled weight decay, no ε,
  a = b = 1 (the `adam-atan2` CUDA package), here in pure PyTorch so it runs on any device.
- `SignSGD`: the sparse puzzle-embedding optimiser: gradients summed per unique puzzle id, then
  p ← p·(1 − lr·wd) − lr·sign(g) on the touched rows only.
- `warmup_lr`: linear warm-up from 0 over `warmup` steps, then cosine down to `min_ratio`
  (min_ratio = 1 gives the constant schedule TRM and HRM use).
"""

from __future__ import annotations

import math

import torch

from trm_core.distributed import gather_rows
from trm_core.puzzle_embedding import PuzzleEmbedding


class AdamATan2(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.0,
    ):
        if lr < 0:
            raise ValueError(f"AdamATan2 lr={lr} must be >= 0")
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                grad = p.grad
                m, v = state["exp_avg"], state["exp_avg_sq"]
                p.mul_(1 - lr * wd)
                m.lerp_(grad, 1 - beta1)
                v.lerp_(grad * grad, 1 - beta2)
                bias_correction1 = 1 - beta1**t
                bias_correction2_sqrt = math.sqrt(1 - beta2**t)
                p.add_(
                    torch.atan2(m, v.sqrt() / bias_correction2_sqrt), alpha=-lr / bias_correction1
                )
        return loss


class SignSGD:
    """Sparse SignSGD with decoupled weight decay for a `PuzzleEmbedding` table. With `gather`
    (data-parallel training) the ids and row gradients of every rank are gathered first, so
    each rank applies the update of the global batch to its copy of the table."""

    def __init__(
        self, table: PuzzleEmbedding, lr: float, weight_decay: float, gather: bool = False
    ):
        self.table = table
        self.gather = gather
        self.lr = lr
        self.weight_decay = weight_decay

    @torch.no_grad()
    def step(self) -> None:
        pending = self.table.take_pending()
        if pending is None:
            return
        ids, rows = pending
        if rows.grad is None:
            return
        row_grads = rows.grad
        if self.gather:
            ids, row_grads = gather_rows(ids), gather_rows(row_grads)
        unique_ids, inverse = torch.unique(ids, return_inverse=True)
        grad = torch.zeros(
            unique_ids.shape[0], rows.shape[-1], device=rows.device, dtype=row_grads.dtype
        )
        grad.index_add_(0, inverse, row_grads)
        weight = self.table.weight
        updated = weight[unique_ids] * (1 - self.lr * self.weight_decay) - self.lr * grad.sign()
        weight[unique_ids] = updated.to(weight.dtype)

    def state_dict(self) -> dict:
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def load_state_dict(self, state: dict) -> None:
        self.lr = state["lr"]
        self.weight_decay = state["weight_decay"]


def warmup_lr(
    base_lr: float, step: int, warmup: int, total: int | None = None, min_ratio: float = 1.0
) -> float:
    """Learning rate for optimizer step `step` (1-based, as upstream increments first)."""
    if step < warmup:
        return base_lr * step / max(1, warmup)
    if min_ratio >= 1.0 or not total:
        return base_lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

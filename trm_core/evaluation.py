"""Evaluation metrics (§4): every sequence runs all `halt_max_steps` supervision steps, no early
halting; a puzzle counts as solved only if every label token is right.

Task-specific scoring plugs in through `EvalHook`s: each sees the host-side batch (extra keys
such as a difficulty level or an ARC augmentation id pass through untouched), the final
predictions and the final halting probability, and returns its own metrics. The maze validity
check and ARC voting are hooks of this kind (they live with the datasets).
"""

from __future__ import annotations

from typing import Protocol

import torch


class EvalHook(Protocol):
    def update(
        self,
        batch: dict[str, torch.Tensor],
        predictions: torch.Tensor,
        q_halt_prob: torch.Tensor,
        valid: torch.Tensor,
    ) -> None:
        """predictions [B, L], q_halt_prob [B], valid [B] (False for padding rows); all on CPU."""

    def compute(self) -> dict[str, float]: ...


class GroupedExactAccuracy:
    """Exact accuracy per value of an integer batch key (e.g. `level` for difficulty levels)."""

    def __init__(self, key: str, labels_key: str = "labels"):
        self.key = key
        self.labels_key = labels_key
        self.solved: dict[int, int] = {}
        self.total: dict[int, int] = {}

    def update(self, batch, predictions, q_halt_prob, valid) -> None:
        labels = batch[self.labels_key]
        mask = labels != -100
        exact = ((predictions == labels) | ~mask).all(-1)
        for group, ok, is_valid in zip(
            batch[self.key].tolist(), exact.tolist(), valid.tolist(), strict=True
        ):
            if not is_valid:
                continue
            self.total[group] = self.total.get(group, 0) + 1
            self.solved[group] = self.solved.get(group, 0) + int(ok)

    def compute(self) -> dict[str, float]:
        return {
            f"exact_accuracy/{self.key}={g}": self.solved[g] / self.total[g]
            for g in sorted(self.total)
        }


class EvalAccumulator:
    """Sums over valid (non-padding) sequences across batches."""

    def __init__(self, halt_max_steps: int):
        self.count = 0
        self.exact = 0.0
        self.token_accuracy = 0.0
        self.lm_loss = 0.0
        self.halt_step = 0.0
        self.q_halt_accuracy = 0.0
        self.exact_by_step = [0.0] * halt_max_steps

    def add(
        self,
        *,
        valid,
        exact_final,
        token_fraction,
        lm_loss_per_seq,
        halt_step,
        q_halt_correct,
        exact_by_step,
    ) -> None:
        self.count += int(valid.sum())
        self.exact += float((exact_final & valid).sum())
        self.token_accuracy += float(token_fraction[valid].sum())
        self.lm_loss += float(lm_loss_per_seq[valid].sum())
        self.halt_step += float(halt_step[valid].float().sum())
        self.q_halt_accuracy += float((q_halt_correct & valid).sum())
        for i, per_step in enumerate(exact_by_step):
            self.exact_by_step[i] += float((per_step & valid).sum())

    def compute(self) -> dict[str, float]:
        n = max(self.count, 1)
        metrics = {
            "count": float(self.count),
            "exact_accuracy": self.exact / n,
            "token_accuracy": self.token_accuracy / n,
            "lm_loss": self.lm_loss / n,
            "halt_step": self.halt_step / n,
            "q_halt_accuracy": self.q_halt_accuracy / n,
        }
        for i, solved in enumerate(self.exact_by_step):
            metrics[f"exact_accuracy/step={i + 1}"] = solved / n
        return metrics

"""Losses of deep supervision (§1.7, §1.8): stablemax (or softmax) cross-entropy in float64,
averaged over each example's valid tokens, plus the ACT halting/continue BCE terms.

Labels use IGNORE_LABEL (−100) at positions that carry no target (the loaders map PAD to it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_LABEL = -100


def _stablemax_s(x: torch.Tensor) -> torch.Tensor:
    # s(x) = x + 1 for x ≥ 0 and 1 / (1 − x) for x < 0: positive, monotone, grows linearly.
    # The clamp keeps the unselected branch finite at x = 1 (else its 1/0 makes a NaN gradient,
    # common with bf16 logits); upstream adds 1e-30 to the denominator for the same reason.
    return torch.where(x < 0, 1 / (1 - x.clamp(max=0)), x + 1)


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    s = _stablemax_s(x)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token loss [B, L] in float64, zero where the label is IGNORE_LABEL."""
    valid = labels != IGNORE_LABEL
    safe_labels = torch.where(valid, labels, 0).long()
    logits64 = logits.to(torch.float64)
    if kind == "stablemax":
        logprobs = log_stablemax(logits64)
    elif kind == "softmax":
        logprobs = F.log_softmax(logits64, dim=-1)
    else:
        raise ValueError(
            f"train.loss={kind!r} is not allowed; choose one of ['stablemax', 'softmax']"
        )
    picked = torch.gather(logprobs, -1, safe_labels.unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, torch.zeros_like(picked))


def sequence_correctness(logits: torch.Tensor, labels: torch.Tensor):
    """(predictions, token_correct_fraction [B], seq_is_correct [B], valid_counts [B])."""
    valid = labels != IGNORE_LABEL
    counts = valid.sum(-1)
    predictions = logits.argmax(-1)
    correct = valid & (predictions == labels)
    fraction = correct.sum(-1) / counts.clamp_min(1)
    seq_is_correct = correct.sum(-1) == counts
    return predictions, fraction, seq_is_correct, counts


def act_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    q_halt: torch.Tensor,
    q_continue: torch.Tensor,
    target_q_continue: torch.Tensor | None,
    loss_kind: str,
    q_loss_weight: float,
):
    """Loss *summed* over the batch (the caller divides by the global batch size, §1.7).

    Returns (total, parts) where parts holds lm_loss, q_halt_loss, q_continue_loss and the
    per-example `seq_is_correct`, `token_fraction`, `valid_counts` for metrics.
    """
    _, fraction, seq_is_correct, counts = sequence_correctness(logits, labels)
    per_token = token_cross_entropy(logits, labels, loss_kind)
    lm_loss = (per_token.sum(-1) / counts.clamp_min(1)).sum()
    # Halting target: is the whole sequence already right? (no gradient into the target)
    q_halt_loss = F.binary_cross_entropy_with_logits(
        q_halt, seq_is_correct.to(q_halt.dtype), reduction="sum"
    )
    if target_q_continue is not None:
        q_continue_loss = F.binary_cross_entropy_with_logits(
            q_continue, target_q_continue, reduction="sum"
        )
    else:
        q_continue_loss = torch.zeros((), device=logits.device)
    total = lm_loss + q_loss_weight * (q_halt_loss + q_continue_loss)
    parts = {
        "lm_loss": lm_loss.detach(),
        "q_halt_loss": q_halt_loss.detach(),
        "q_continue_loss": q_continue_loss.detach(),
        "seq_is_correct": seq_is_correct,
        "token_fraction": fraction,
        "valid_counts": counts,
    }
    return total, parts

"""Stablemax cross-entropy in float64 (§1.8) and the ACT loss (§1.7), checked by hand."""

import math

import torch

from trm_core.losses import IGNORE_LABEL, act_loss, log_stablemax, token_cross_entropy


def test_stablemax_matches_its_definition():
    logits = torch.tensor([[1.0, -1.0, 0.0]])
    # s(1) = 2, s(-1) = 1/2, s(0) = 1  →  p = [2, 0.5, 1] / 3.5
    expected = torch.log(torch.tensor([[2.0, 0.5, 1.0]], dtype=torch.float64) / 3.5)
    torch.testing.assert_close(log_stablemax(logits.double()), expected)


def test_token_loss_is_float64_and_zero_on_ignored_positions():
    logits = torch.tensor([[[1.0, -1.0, 0.0], [0.0, 0.0, 3.0]]], dtype=torch.bfloat16)
    labels = torch.tensor([[0, IGNORE_LABEL]])
    loss = token_cross_entropy(logits, labels, "stablemax")
    assert loss.dtype == torch.float64
    assert math.isclose(loss[0, 0].item(), -math.log(2 / 3.5), rel_tol=1e-12)
    assert loss[0, 1].item() == 0.0


def test_act_loss_sums_per_example_token_means_plus_half_the_halting_bce():
    logits = torch.tensor(
        [
            [[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]],  # predicts 0 1 0: right on both valid tokens
            [[2.0, 0.0], [2.0, 0.0], [0.0, 0.0]],  # predicts 0 0 0: right on token 0 only
        ]
    )
    labels = torch.tensor([[0, 1, IGNORE_LABEL], [0, 1, 1]])
    q_halt = torch.tensor([0.5, -1.0])
    total, parts = act_loss(logits, labels, q_halt, torch.zeros(2), None, "softmax", 0.5)
    logp = torch.log_softmax(logits.double(), -1)
    ex0 = -(logp[0, 0, 0] + logp[0, 1, 1]) / 2
    ex1 = -(logp[1, 0, 0] + logp[1, 1, 1] + logp[1, 2, 1]) / 3
    bce = (
        torch.nn.functional.softplus(-torch.tensor(0.5))  # target 1 (all right)
        + torch.nn.functional.softplus(torch.tensor(-1.0))
    )  # target 0
    assert parts["seq_is_correct"].tolist() == [True, False]
    torch.testing.assert_close(parts["lm_loss"], ex0 + ex1)
    torch.testing.assert_close(total.double(), ex0 + ex1 + 0.5 * bce.double())
    torch.testing.assert_close(parts["token_fraction"], torch.tensor([1.0, 1 / 3]))


def test_continue_loss_is_added_when_a_target_is_given():
    logits = torch.zeros(1, 2, 3)
    labels = torch.zeros(1, 2, dtype=torch.long)
    q = torch.tensor([0.3])
    without, _ = act_loss(logits, labels, q, torch.tensor([0.7]), None, "stablemax", 0.5)
    with_target, _ = act_loss(
        logits, labels, q, torch.tensor([0.7]), torch.tensor([0.25]), "stablemax", 0.5
    )
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([0.7]), torch.tensor([0.25])
    )
    torch.testing.assert_close(with_target - without, 0.5 * bce.double())


def test_stablemax_gradient_is_finite_at_logit_one_in_bfloat16():
    logits = torch.tensor([[[1.0, 0.999, -1.0, 2.0]]], dtype=torch.bfloat16, requires_grad=True)
    token_cross_entropy(logits, torch.tensor([[2]]), "stablemax").sum().backward()
    assert torch.isfinite(logits.grad).all()

"""AdamATan2 checked against steps computed by hand (§2.2), SignSGD with decoupled decay on the
touched puzzle rows only, the warm-up schedule, and EMA."""

import math

import pytest
import torch

from trm_core.ema import EMA
from trm_core.optim import AdamATan2, SignSGD, warmup_lr
from trm_core.puzzle_embedding import PuzzleEmbedding


def test_adam_atan2_two_steps_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = AdamATan2([p], lr=0.1, betas=(0.9, 0.95), weight_decay=0.5)
    grads = [torch.tensor([0.5, -0.25]), torch.tensor([-1.0, 0.75])]
    value, m, v = [1.0, -2.0], [0.0, 0.0], [0.0, 0.0]
    for t, g in enumerate(grads, start=1):
        p.grad = g.clone()
        opt.step()
        for i in range(2):
            value[i] *= 1 - 0.1 * 0.5
            m[i] = 0.9 * m[i] + 0.1 * g[i].item()
            v[i] = 0.95 * v[i] + 0.05 * g[i].item() ** 2
            denom = math.sqrt(v[i]) / math.sqrt(1 - 0.95**t)
            value[i] -= 0.1 / (1 - 0.9**t) * math.atan2(m[i], denom)
        torch.testing.assert_close(p.detach(), torch.tensor(value), rtol=1e-6, atol=1e-7)


def test_adam_atan2_first_step_does_not_depend_on_the_gradient_scale():
    # At t = 1: m = (1−β1)·g, √v/√(1−β2) = |g|, so the step is lr·atan2(1−β1, 1)/(1−β1)·sign(g)
    # (bias correction 1 sits outside the atan2, as in the CUDA kernel); no ε anywhere.
    p = torch.nn.Parameter(torch.tensor([3.0, 3.0]))
    opt = AdamATan2([p], lr=0.01, betas=(0.9, 0.95), weight_decay=0.0)
    p.grad = torch.tensor([1e-20, -1e4])
    opt.step()
    step = 0.01 * math.atan2(0.1, 1.0) / 0.1
    torch.testing.assert_close(p.detach(), torch.tensor([3 - step, 3 + step]))


def test_sign_sgd_sums_gradients_per_id_and_updates_only_touched_rows():
    table = PuzzleEmbedding(num_ids=3, dim=2)
    with torch.no_grad():
        table.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]))
    rows = table(torch.tensor([0, 2, 0]), track_grad=True)
    rows.backward(torch.tensor([[1.0, -3.0], [-0.5, 0.0], [-2.0, 1.0]]))
    SignSGD(table, lr=0.1, weight_decay=0.5).step()
    decay = 1 - 0.1 * 0.5
    expected = torch.tensor(
        [
            [decay - 0.1 * -1, decay - 0.1 * -1],  # summed grads (-1, -2): signs (-, -)
            [1.0, 1.0],  # untouched: no decay either
            [decay + 0.1, decay - 0.0],  # grads (-0.5, 0): sign(0) = 0
        ]
    )
    torch.testing.assert_close(table.weight, expected)


def test_warmup_is_linear_from_zero_then_constant():
    assert warmup_lr(1e-4, 1, 2000) == pytest.approx(1e-4 / 2000)
    assert warmup_lr(1e-4, 1000, 2000) == pytest.approx(5e-5)
    assert warmup_lr(1e-4, 2000, 2000) == 1e-4
    assert warmup_lr(1e-4, 60000, 2000) == 1e-4
    # a decaying variant ends at min_ratio
    assert warmup_lr(1.0, 100, 10, total=100, min_ratio=0.1) == pytest.approx(0.1)


def test_ema_tracks_the_weights_and_swaps_them_in_temporarily():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, rate=0.9)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], torch.full((1, 2), 0.9 * 1 + 0.1 * 3))
    with ema.applied(model):
        torch.testing.assert_close(model.weight.detach(), torch.full((1, 2), 1.2))
    torch.testing.assert_close(model.weight.detach(), torch.full((1, 2), 3.0))

"""Which network calls carry gradient (§1.4, §1.5), checked against references written out by
hand here: `grad=full` backpropagates all n+1 calls of the last recursion and none of the first
T−1; `grad=one_step` only the last z-update and the last y-update. Parameter gradients are
compared to a tight tolerance, and against a differently-routed reference to show the test
can tell them apart."""

import pytest
import torch

from tests.conftest import random_batch, tiny_model_config
from trm_core import RecursiveReasoningModel


def _hand_reference(model, states, inputs, ids, differentiated):
    """Run T recursions of y_z updates; call k (0-based, in order) has autograd iff
    differentiated(k). Returns (logits, q_halt) like the model."""
    c = model.config
    x = model.embed(inputs, ids, torch.float64, track_grad=True)
    y, z = states
    z_net, y_net, rope = model.z_net, model.answer_net, model.rope
    k = 0
    for _ in range(c.T):
        for _ in range(c.n):
            with torch.set_grad_enabled(differentiated(k)):
                z = z_net(z, y + x, rope)
            k += 1
        with torch.set_grad_enabled(differentiated(k)):
            y = y_net(y, z, rope)
        k += 1
    return model.lm_head(y)[:, c.puzzle_emb_len :], model.q_head(y[:, 0])[:, 0]


def _grads(model, logits, q_halt, weights):
    loss = (logits * weights).sum() + q_halt.sum()
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {
        n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in model.named_parameters()
    }


def _setup(**overrides):
    cfg = tiny_model_config(T=3, n=2, **overrides)
    torch.manual_seed(0)
    model = RecursiveReasoningModel(cfg).double()
    with torch.no_grad():  # make the Q head and embeddings non-trivial so every path matters
        model.q_head.weight.normal_()
        model.puzzle_emb.weight.normal_()
    batch = random_batch(cfg, 3, seed=1)
    g = torch.Generator().manual_seed(2)
    states = tuple(
        torch.randn(3, cfg.total_seq_len, cfg.hidden, generator=g, dtype=torch.float64)
        for _ in range(2)
    )
    weights = torch.randn(3, cfg.seq_len, cfg.vocab_size, generator=g, dtype=torch.float64)
    return model, batch, states, weights


def _model_grads(model, batch, states, weights):
    out = model(states, batch["inputs"], batch["puzzle_ids"], track_grad=True)
    return _grads(model, out.logits, out.q_halt, weights)


def _reference_grads(model, batch, states, weights, differentiated):
    logits, q_halt = _hand_reference(
        model, states, batch["inputs"], batch["puzzle_ids"], differentiated
    )
    return _grads(model, logits, q_halt, weights)


def _assert_same(a, b):
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-10, atol=1e-12, msg=name)


def _differs(a, b):
    return any(not torch.allclose(a[n], b[n], rtol=1e-6, atol=1e-9) for n in a)


@pytest.mark.parametrize("net", ["single", "dual"])
def test_full_recursion_backprops_the_last_recursion_only(net):
    model, batch, states, weights = _setup(net=net)
    c = model.config
    calls = c.T * (c.n + 1)
    last_recursion = calls - (c.n + 1)
    got = _model_grads(model, batch, states, weights)
    expected = _reference_grads(model, batch, states, weights, lambda k: k >= last_recursion)
    _assert_same(got, expected)
    everything = _reference_grads(model, batch, states, weights, lambda k: True)
    assert _differs(got, everything)  # gradient through earlier recursions would change it


@pytest.mark.parametrize("net", ["single", "dual"])
def test_one_step_gradient_backprops_last_z_and_last_y_update_only(net):
    model, batch, states, weights = _setup(net=net, grad="one_step")
    c = model.config
    calls = c.T * (c.n + 1)
    got = _model_grads(model, batch, states, weights)
    expected = _reference_grads(model, batch, states, weights, lambda k: k >= calls - 2)
    _assert_same(got, expected)
    full = _reference_grads(model, batch, states, weights, lambda k: k >= calls - (c.n + 1))
    assert _differs(got, full)


def test_no_gradient_reaches_the_carried_states_when_earlier_recursions_are_no_grad():
    model, batch, states, _ = _setup()
    leaf_states = tuple(s.clone().requires_grad_(True) for s in states)
    out = model(leaf_states, batch["inputs"], batch["puzzle_ids"], track_grad=True)
    (out.logits.sum() + out.q_halt.sum()).backward()
    assert all(s.grad is None for s in leaf_states)
    assert all(not s.requires_grad for s in out.states)  # carried states come back detached


def test_with_a_single_recursion_gradient_reaches_the_input_states():
    model, batch, states, _ = _setup()
    model = RecursiveReasoningModel(model.config.replace(T=1)).double()
    leaf_states = tuple(s.clone().requires_grad_(True) for s in states)
    out = model(leaf_states, batch["inputs"], batch["puzzle_ids"], track_grad=True)
    out.logits.sum().backward()
    assert leaf_states[0].grad is not None and leaf_states[0].grad.abs().sum() > 0


def test_puzzle_embedding_rows_receive_gradient_in_training_forward():
    model, batch, states, _ = _setup()
    out = model(states, batch["inputs"], batch["puzzle_ids"], track_grad=True)
    out.logits.sum().backward()
    ids, rows = model.puzzle_emb.take_pending()
    assert torch.equal(ids, batch["puzzle_ids"])
    assert rows.grad is not None and rows.grad.shape == (3, model.config.hidden)

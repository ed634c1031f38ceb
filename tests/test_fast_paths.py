"""The CPU speed paths of trm_core compute exactly what the plain code computes (issue 14):
the SwiGLU activation's hand-written backward equals autograd's chunk → silu → mul chain to
the last bit (fp32 and bf16, contiguous and transposed inputs, widths with and without
vector-loop tails), reusing one bf16 weight copy across no-grad calls changes no value, and
the token embedding's gradient no longer depends on thread timing."""

from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import random_batch, tiny_model_config
from trm_core import RecursiveReasoningModel, layers
from trm_core import model as model_module
from trm_core.layers import SwiGLU, _SiluGate


def _chain(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def _value_and_grad(fn, gate_up: torch.Tensor, weights: torch.Tensor):
    leaf = gate_up.detach().requires_grad_(True)
    out = fn(leaf)
    out.backward(weights)
    return out.detach(), leaf.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(4, 40, 2 * 48), (3, 97, 2 * 512), (2, 512, 2 * 64)])
def test_silu_gate_equals_the_autograd_chain_bit_for_bit(dtype, shape):
    g = torch.Generator().manual_seed(0)
    gate_up = (3 * torch.randn(shape, generator=g)).to(dtype)
    weights = torch.randn(*shape[:-1], shape[-1] // 2, generator=g).to(dtype)
    want = _value_and_grad(_chain, gate_up, weights)
    got = _value_and_grad(_SiluGate.apply, gate_up, weights)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swiglu_on_a_transposed_input_equals_the_chain_above_and_below_the_size_switch(
    dtype, monkeypatch
):
    torch.manual_seed(0)
    mlp = SwiGLU(40, 2, 16)
    x = torch.randn(4, 40, 32).transpose(1, 2).to(dtype)  # the MLP mixer's [B, D, L] view
    weights = torch.randn(4, 32, 40).to(dtype)

    def run():
        leaf = x.detach().requires_grad_(True)
        mlp.zero_grad(set_to_none=True)
        out = mlp(leaf)
        out.backward(weights)
        return [out, leaf.grad, *(p.grad for p in mlp.parameters())]

    plain = run()  # this activation is below the switch: the plain chain
    monkeypatch.setattr(layers, "SILU_GATE_MIN_NUMEL", 0)
    monkeypatch.setattr(layers, "SILU_GATE_DEVICES", ("cpu", "cuda"))
    custom = run()
    assert all(torch.equal(a, b) for a, b in zip(plain, custom, strict=True))


def _bf16_step(model, batch, states):
    model.zero_grad(set_to_none=True)
    out = model(states, batch["inputs"], batch["puzzle_ids"], track_grad=True)
    (out.logits.float().square().mean() + out.q_halt.sum()).backward()
    return [out.logits, *out.states, *(p.grad for p in model.parameters() if p.grad is not None)]


@pytest.mark.parametrize("preset", ["trm_mlp", "hrm"])
def test_reusing_bf16_weight_copies_in_no_grad_calls_changes_no_value(preset, monkeypatch):
    cfg = tiny_model_config(preset=preset, hidden=32, heads=2)
    torch.manual_seed(0)
    model = RecursiveReasoningModel(cfg)
    batch = random_batch(cfg, 4, seed=1)
    states = model.initial_states(4, torch.bfloat16)
    reused = _bf16_step(model, batch, states)
    assert all(m.no_grad_cast is None for m in model.modules() if hasattr(m, "no_grad_cast"))
    # Cast at every call, as before issue 14.
    monkeypatch.setattr(model_module, "casts_reused", lambda module, dtype: nullcontext())
    per_call = _bf16_step(model, batch, states)
    assert all(torch.equal(a, b) for a, b in zip(reused, per_call, strict=True))


def test_token_embedding_gradient_is_the_same_on_every_run():
    # At this size, indexing's backward (tok_emb[inputs]) accumulated rows from 2 threads in
    # no fixed order; F.embedding sums them in order.
    cfg = tiny_model_config(vocab_size=8, seq_len=36, hidden=32, puzzle_emb_len=4)
    torch.manual_seed(0)
    model = RecursiveReasoningModel(cfg)
    batch = random_batch(cfg, 32, seed=0)
    grads = []
    for _ in range(4):
        model.zero_grad(set_to_none=True)
        emb = model.embed(batch["inputs"], batch["puzzle_ids"], torch.float32, track_grad=True)
        (emb * torch.linspace(-1, 1, emb.shape[-1])).sum().backward()
        grads.append(model.tok_emb.grad.clone())
    assert all(torch.equal(grads[0], g) for g in grads[1:])

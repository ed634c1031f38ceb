"""Building blocks shared by TRM and HRM (§1.1): casted linear layers, parameter-free RMSNorm,
SwiGLU, attention with RoPE, the sequence-axis MLP mixer (§1.3) and the post-norm block.

Weights are fp32 master copies cast to the activation dtype at call time, so the forward pass
can run in bfloat16 while the optimiser works in fp32.

Speed (issue 14) never changes a computed fp32 value (tests/test_fp32_reference.py): the SwiGLU
activation has a hand-written backward (used on CUDA) that performs the same elementwise ops as
autograd's chunk/silu/mul chain but writes the gradient of the fused projection in place (no
cat), and calls without autograd reuse one bf16 copy of each weight per forward instead of
casting it again at every call.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from trm_core.config import ModelConfig


def trunc_normal_(tensor: torch.Tensor, std: float = 1.0, bound: float = 2.0) -> torch.Tensor:
    """Truncated normal at ±bound·σ whose *post-truncation* std equals `std` (JAX-style, §1.1)."""
    if std == 0:
        return tensor.zero_()
    # Std of a standard normal truncated to [-bound, bound]; rescale so the result has `std`.
    pdf = math.exp(-0.5 * bound**2) / math.sqrt(2 * math.pi)
    z = math.erf(bound / math.sqrt(2))
    truncated_std = math.sqrt(1 - 2 * bound * pdf / z)
    with torch.no_grad():
        nn.init.trunc_normal_(tensor, mean=0.0, std=1.0, a=-bound, b=bound)
        tensor.mul_(std / truncated_std)
    return tensor


def ceil_to_multiple(value: int, multiple: int) -> int:
    return -(value // -multiple) * multiple


def swiglu_width(hidden: int, expansion: float, multiple: int = 256) -> int:
    """Intermediate width of the SwiGLU: round(expansion·h·2/3) rounded up to 256 (§1.1)."""
    return ceil_to_multiple(round(expansion * hidden * 2 / 3), multiple)


class CastedLinear(nn.Module):
    """Linear layer with fp32 weights cast to the input dtype; truncated LeCun-normal init."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        trunc_normal_(self.weight, std=1.0 / math.sqrt(in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        # A detached copy in the activation dtype, set by `casts_reused` for one forward.
        self.no_grad_cast: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        weight = self.no_grad_cast
        # Only calls without autograd may share the copy: differentiated calls keep their own
        # cast, so each call's weight gradient is still converted and summed in fp32 (§1.1).
        if weight is None or weight.dtype != x.dtype or torch.is_grad_enabled():
            weight = self.weight.to(x.dtype)
        return F.linear(x, weight, bias)


@contextlib.contextmanager
def casts_reused(module: nn.Module, dtype: torch.dtype):
    """Within the block, CastedLinear calls without autograd use one copy of their weight in
    `dtype` (the same values a per-call cast gives) instead of casting at every call."""
    layers = [m for m in module.modules() if isinstance(m, CastedLinear)]
    if dtype == torch.float32 or any(m.weight.dtype == dtype for m in layers):
        yield  # nothing to cast
        return
    try:
        with torch.no_grad():
            for m in layers:
                m.no_grad_cast = m.weight.to(dtype)
        yield
    finally:
        for m in layers:
            m.no_grad_cast = None


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last axis, computed in fp32, with no learnable scale (§1.1)."""
    dtype = x.dtype
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)
    return x32.to(dtype)


SILU_GATE_MIN_NUMEL = 1 << 20  # scale=mini's projections are ~0.13M values, paper's 9.5M
# Where the custom path runs. Not on CPU: there its strided out= writes cost more than the cat
# they save (TRM-MLP Sudoku batch 32 fp32, 2 threads, 2 runs each: 12.9 / 13.6 s per step with
# it, 12.7 / 12.1 s without); on CUDA it saves the silu activation's memory (unmeasured: no GPU
# was lent to the session that wrote it).
SILU_GATE_DEVICES = ("cuda",)


class _SiluGate(torch.autograd.Function):
    """silu(gate) · up for a fused projection [..., 2·inter] = (gate, up).

    Computes exactly what autograd's chunk → silu → mul chain computes, forward and backward
    (the same ATen ops on operands of the same shapes and strides, so even the vectorised and
    scalar tails of each loop fall on the same elements), but the backward writes both halves
    of the projection's gradient into one buffer instead of concatenating them, and it keeps
    only the projection for backward, recomputing silu(gate) instead of storing it.
    """

    @staticmethod
    def forward(ctx, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        out = F.silu(gate)
        out.mul_(up)
        ctx.save_for_backward(gate_up)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (gate_up,) = ctx.saved_tensors
        gate, up = gate_up.chunk(2, dim=-1)
        grad_gate_up = torch.empty_like(gate_up)
        grad_gate, grad_up = grad_gate_up.chunk(2, dim=-1)
        torch.mul(grad, up, out=grad_gate)  # d(out)/d(silu) · grad
        torch.ops.aten.silu_backward.grad_input(grad_gate, gate, grad_input=grad_gate)
        torch.mul(grad, F.silu(gate), out=grad_up)
        return grad_gate_up


class SwiGLU(nn.Module):
    """down(silu(gate) · up) with a fused gate/up projection."""

    def __init__(self, hidden: int, expansion: float, multiple: int):
        super().__init__()
        inter = swiglu_width(hidden, expansion, multiple)
        self.gate_up = CastedLinear(hidden, 2 * inter)
        self.down = CastedLinear(inter, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up(x)
        # Both paths compute the same values. The custom one saves a copy and memory on large
        # activations; on small ones its Python cost outweighs that, and inductor fuses the
        # plain chain itself (and does not trace the out= writes).
        if (
            gate_up.numel() < SILU_GATE_MIN_NUMEL
            or gate_up.device.type not in SILU_GATE_DEVICES
            or torch.compiler.is_compiling()
        ):
            gate, up = gate_up.chunk(2, dim=-1)
            return self.down(F.silu(gate) * up)
        return self.down(_SiluGate.apply(gate_up))


class RotaryEmbedding(nn.Module):
    """cos/sin tables for rotate-half RoPE over every position (puzzle slots included)."""

    def __init__(self, head_dim: int, positions: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(positions, dtype=torch.float32), inv_freq)
        angles = torch.cat((freqs, freqs), dim=-1)
        # Not persistent: derived from the config, so checkpoints stay small and portable.
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, heads, L, head_dim]; cos/sin: [L, head_dim]. Rotates in fp32 (bf16 tables lose
    precision at the 900-odd positions of 30×30 grids) and casts back."""
    x32 = x.float()
    return (x32 * cos + _rotate_half(x32) * sin).to(x.dtype)


class Attention(nn.Module):
    """Non-causal multi-head self-attention with a fused QKV projection (no GQA)."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = hidden // heads
        self.qkv = CastedLinear(hidden, 3 * hidden)
        self.out = CastedLinear(hidden, hidden)

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding | None) -> torch.Tensor:
        batch, length, hidden = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if rope is not None:
            q = apply_rope(q, rope.cos, rope.sin)
            k = apply_rope(k, rope.cos, rope.sin)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=False)
        return self.out(attended.transpose(1, 2).reshape(batch, length, hidden))


class Block(nn.Module):
    """Post-norm block: h ← norm(h + mixer(h)); h ← norm(h + SwiGLU(h)).

    With the MLP mixer the token-mixing SwiGLU acts along the sequence axis and — as in the
    official code (§1.3) — its residual add and RMSNorm happen while the tensor is still
    transposed, i.e. the norm runs over the sequence axis separately for each channel.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = config
        self.mixer_kind = c.mixer
        self.eps = c.norm_eps
        if c.mixer == "attention":
            self.mixer = Attention(c.hidden, c.heads)
        else:  # the token mixer's "hidden size" is the sequence length (§1.3)
            self.mixer = SwiGLU(c.total_seq_len, c.expansion, c.swiglu_multiple)
        self.mlp = SwiGLU(c.hidden, c.expansion, c.swiglu_multiple)

    def forward(self, h: torch.Tensor, rope: RotaryEmbedding | None) -> torch.Tensor:
        if self.mixer_kind == "attention":
            h = rms_norm(h + self.mixer(h, rope), self.eps)
        else:
            t = h.transpose(1, 2)
            t = rms_norm(t + self.mixer(t), self.eps)
            h = t.transpose(1, 2)
        return rms_norm(h + self.mlp(h), self.eps)


class ReasoningNet(nn.Module):
    """A stack of blocks called as net(h, injection): add the inputs, then run the blocks."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))

    def forward(
        self, h: torch.Tensor, injection: torch.Tensor | None, rope: RotaryEmbedding | None
    ) -> torch.Tensor:
        if injection is not None:
            h = h + injection
        for block in self.blocks:
            h = block(h, rope)
        return h

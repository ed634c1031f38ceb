"""The recursive reasoning model: TRM, HRM and every ablation of the TRM paper in one class.

One supervision step (§1.4) runs T recursions; each recursion makes n latent updates and one
answer update. Which calls carry gradient is decided by `ModelConfig.grad`:

- `full` (TRM): the first T−1 recursions run without autograd, the last one (n+1 calls) with it.
- `one_step` (HRM, §1.5): only the last latent update and the last answer update.

`net=single` uses one network for both kinds of update (TRM); `net=dual` uses a z-network
(HRM's f_L) and a y-network (f_H). `latents` selects the carried state (Table 2):
`y_z` = (y, z), `single_z` = (z,), `multiscale` = (y, z_1 … z_n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trm_core.config import ModelConfig
from trm_core.layers import (
    CastedLinear,
    ReasoningNet,
    RotaryEmbedding,
    casts_reused,
    trunc_normal_,
)
from trm_core.puzzle_embedding import PuzzleEmbedding

Q_HEAD_INIT_BIAS = -5.0  # σ(−5) ≈ 0.007: nothing halts early at the start of training (§1.1)


@dataclass
class ModelOutput:
    states: tuple[torch.Tensor, ...]  # detached carried states after this supervision step
    logits: torch.Tensor  # [B, seq_len, vocab], puzzle slots dropped
    q_halt: torch.Tensor  # [B] fp32
    q_continue: torch.Tensor  # [B] fp32


class RecursiveReasoningModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed_scale = math.sqrt(c.hidden)
        self.tok_emb = nn.Parameter(
            trunc_normal_(torch.empty(c.vocab_size, c.hidden), std=1.0 / math.sqrt(c.hidden))
        )
        self.puzzle_emb = (
            PuzzleEmbedding(c.num_puzzle_ids, c.puzzle_emb_dim)
            if c.puzzle_emb_dim > 0 and c.puzzle_emb_len > 0
            else None
        )
        self.pos_emb = (
            nn.Parameter(
                trunc_normal_(torch.empty(c.total_seq_len, c.hidden), std=1.0 / math.sqrt(c.hidden))
            )
            if c.pos_encoding == "learned"
            else None
        )
        self.rope = (
            RotaryEmbedding(c.hidden // c.heads, c.total_seq_len, c.rope_theta)
            if c.pos_encoding == "rope"
            else None
        )

        self.z_net = ReasoningNet(c)
        # `dual` adds a separate answer network; `single` reuses z_net for both updates.
        self.y_net = ReasoningNet(c) if c.net == "dual" else None

        self.lm_head = CastedLinear(c.hidden, c.vocab_size)
        self.q_head = CastedLinear(c.hidden, 2, bias=True)
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(Q_HEAD_INIT_BIAS)

        # Fixed initial states (§1.1): drawn once, persistent, never trained.
        self.register_buffer("y_init", trunc_normal_(torch.empty(c.hidden), std=1.0))
        self.register_buffer("z_init", trunc_normal_(torch.empty(c.hidden), std=1.0))
        # Multi-scale z keeps one initial vector per z_i, drawn in order after z_init (= z_1),
        # as the official trm_hier6 (L1_init … L6_init; TRM_SPEC §4 "Multi-scale z").
        for i in range(2, c.n + 1 if c.latents == "multiscale" else 2):
            self.register_buffer(f"z_init_{i}", trunc_normal_(torch.empty(c.hidden), std=1.0))

    @property
    def answer_net(self) -> ReasoningNet:
        return self.z_net if self.y_net is None else self.y_net

    # ---- states -------------------------------------------------------------------------
    def _init_vectors(self) -> list[torch.Tensor]:
        """The initial vector of each carried state, in carry order."""
        c = self.config
        if c.latents == "y_z":
            return [self.y_init, self.z_init]
        if c.latents == "single_z":
            return [self.z_init]
        return [self.y_init, self.z_init] + [
            getattr(self, f"z_init_{i}") for i in range(2, c.n + 1)
        ]

    def initial_states(self, batch_size: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        shape = (batch_size, self.config.total_seq_len, self.config.hidden)
        return tuple(v.to(dtype).expand(shape).clone() for v in self._init_vectors())

    def reset_states(
        self, states: tuple[torch.Tensor, ...], reset: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Restart the slots where `reset` [B] is true from the initial vectors."""
        mask = reset.view(-1, 1, 1)
        return tuple(
            torch.where(mask, v.to(s.dtype), s)
            for s, v in zip(states, self._init_vectors(), strict=True)
        )

    # ---- input --------------------------------------------------------------------------
    def embed(
        self, inputs: torch.Tensor, puzzle_ids: torch.Tensor, dtype: torch.dtype, track_grad: bool
    ) -> torch.Tensor:
        c = self.config
        if inputs.shape[-1] != c.seq_len:
            raise ValueError(
                f"input sequence length {inputs.shape[-1]} does not match model.seq_len="
                f"{c.seq_len} (the mixer and positions were built for it)"
            )
        # F.embedding, as upstream: its backward sums repeated tokens in a fixed order, where
        # indexing (tok_emb[inputs]) accumulates from several threads in no fixed order.
        emb = F.embedding(inputs, self.tok_emb.to(dtype))
        if c.puzzle_emb_len > 0:
            batch = inputs.shape[0]
            if self.puzzle_emb is not None:
                flat = self.puzzle_emb(puzzle_ids, track_grad=track_grad).to(dtype)
            else:
                flat = emb.new_zeros(batch, 0)
            # Zero-pad the vector into puzzle_emb_len slots (§1.2): slot 0 carries it.
            flat = F.pad(flat, (0, c.puzzle_emb_len * c.hidden - flat.shape[-1]))
            emb = torch.cat((flat.view(batch, c.puzzle_emb_len, c.hidden), emb), dim=1)
        if self.pos_emb is not None:
            emb = 0.707106781 * (emb + self.pos_emb.to(dtype))  # keeps the sum at unit scale
        return self.embed_scale * emb

    # ---- one supervision step -----------------------------------------------------------
    def first_grad_call(self) -> int:
        """Index of the first network call (of T·(n+1)) that is differentiated."""
        c = self.config
        return c.calls_per_step - c.grad_calls_per_step

    def forward(
        self,
        states: tuple[torch.Tensor, ...],
        inputs: torch.Tensor,
        puzzle_ids: torch.Tensor,
        track_grad: bool,
    ) -> ModelOutput:
        c = self.config
        dtype = states[0].dtype
        x = self.embed(inputs, puzzle_ids, dtype, track_grad)
        first_grad = self.first_grad_call()
        call_index = 0

        def call(net: ReasoningNet, h: torch.Tensor, injection: torch.Tensor | None):
            nonlocal call_index
            differentiated = track_grad and call_index >= first_grad
            call_index += 1
            if not track_grad:  # caller controls autograd (e.g. inference_mode)
                return net(h, injection, self.rope)
            with torch.set_grad_enabled(differentiated):
                return net(h, injection, self.rope)

        states = list(states)
        with casts_reused(self, dtype):
            for _ in range(c.T):
                if c.latents == "y_z":
                    y, z = states
                    injection = y + x  # y is fixed during the n latent updates
                    for _ in range(c.n):
                        z = call(self.z_net, z, injection)
                    y = call(self.answer_net, y, z)
                    states = [y, z]
                elif c.latents == "single_z":
                    (z,) = states
                    for _ in range(c.n):
                        z = call(self.z_net, z, x)
                    z = call(self.answer_net, z, None)
                    states = [z]
                else:  # multiscale: z_i = net(Σ z, y + x); y = net(y, Σ z)
                    y, zs = states[0], states[1:]
                    for i in range(c.n):
                        zs[i] = call(self.z_net, torch.stack(zs).sum(0), y + x)
                    y = call(self.answer_net, y, torch.stack(zs).sum(0))
                    states = [y, *zs]

        answer = states[0]
        logits = self.lm_head(answer)[:, c.puzzle_emb_len :]
        q = self.q_head(answer[:, 0]).float()
        return ModelOutput(
            states=tuple(s.detach() for s in states),  # no gradient across supervision steps
            logits=logits,
            q_halt=q[:, 0],
            q_continue=q[:, 1],
        )

    def compile_nets(self) -> None:
        """torch.compile the reasoning networks (the hot loop); state_dict keys are unchanged."""
        self.z_net.compile(dynamic=False)
        if self.y_net is not None:
            self.y_net.compile(dynamic=False)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, as the papers count them (puzzle table and init states excluded)."""
    return sum(p.numel() for p in model.parameters())

"""Exponential moving average of the trainable weights (§2.1: rate 0.999, used for evaluation
and checkpoints; the puzzle-embedding buffer is not averaged)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, rate: float):
        self.rate = rate
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        names, params = zip(*model.named_parameters(), strict=True)
        # One fused multi-tensor kernel instead of a launch per parameter.
        torch._foreach_lerp_(
            [self.shadow[n] for n in names], [p.detach() for p in params], 1 - self.rate
        )

    @contextlib.contextmanager
    def applied(self, model: nn.Module):
        """Swap the averaged weights into `model` for the duration of the block."""
        backup = {}
        with torch.no_grad():
            for name, p in model.named_parameters():
                backup[name] = p.detach().clone()
                p.copy_(self.shadow[name])
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(backup[name])

    def state_dict(self) -> dict:
        return {"rate": self.rate, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        self.rate = state["rate"]
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)

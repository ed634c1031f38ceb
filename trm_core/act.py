"""Deep supervision with carried slots and adaptive halting (§1.6, §1.7).

The code of the paper does not loop N_sup times per mini-batch: it keeps B persistent slots.
Each call of `supervision_step` advances every slot by one supervision step:

1. slots that halted last time restart from the initial states, their step counter goes to 0
   and their data is replaced by the row at the same index of the fresh batch (the other rows
   of the fresh batch are discarded, as upstream);
2. one forward pass (§1.4); the carried states come back detached;
3. halting: at `halt_max_steps` always; in training also when the Q head says so (q_halt > 0
   for TRM, q_halt > q_continue with `act_continue`), unless an exploration draw (prob 0.1,
   re-drawn every step as upstream) vetoes halting before a random minimum in [2, N_sup].
Evaluation never halts early.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trm_core.model import ModelOutput, RecursiveReasoningModel

MODEL_INPUT_KEYS = ("inputs", "labels", "puzzle_ids")


@dataclass
class Carry:
    states: tuple[torch.Tensor, ...]
    steps: torch.Tensor  # int32 [B]: supervision steps taken by the slot's current example
    halted: torch.Tensor  # bool [B]
    data: dict[str, torch.Tensor]  # the example each slot is working on

    def state_dict(self) -> dict:
        return {
            "states": list(self.states),
            "steps": self.steps,
            "halted": self.halted,
            "data": dict(self.data),
        }

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device) -> Carry:
        return cls(
            states=tuple(s.to(device) for s in state["states"]),
            steps=state["steps"].to(device),
            halted=state["halted"].to(device),
            data={k: v.to(device) for k, v in state["data"].items()},
        )


def initial_carry(
    model: RecursiveReasoningModel, batch: dict[str, torch.Tensor], dtype: torch.dtype
) -> Carry:
    """Every slot starts halted, so the first step loads the whole batch."""
    size = batch["inputs"].shape[0]
    device = batch["inputs"].device
    return Carry(
        states=model.initial_states(size, dtype),
        steps=torch.zeros(size, dtype=torch.int32, device=device),
        halted=torch.ones(size, dtype=torch.bool, device=device),
        data={k: torch.zeros_like(batch[k]) for k in MODEL_INPUT_KEYS},
    )


@dataclass
class StepResult:
    output: ModelOutput
    target_q_continue: torch.Tensor | None  # only with act_continue in training


def supervision_step(
    model: RecursiveReasoningModel,
    carry: Carry,
    batch: dict[str, torch.Tensor],
    *,
    training: bool,
    generator: torch.Generator | None = None,
    draw_rows: tuple[int, int] | None = None,
) -> tuple[Carry, StepResult]:
    """`draw_rows=(global size, first row)`: this carry is a block of a larger batch's slots
    (one rank of data-parallel training); the exploration draws are made for the whole batch
    and this block's are used, so the ranks together halt as one process would."""
    cfg = model.config
    reset = carry.halted
    states = model.reset_states(carry.states, reset)
    steps = torch.where(reset, 0, carry.steps)
    data = {}
    for key in MODEL_INPUT_KEYS:
        mask = reset.view(-1, *([1] * (batch[key].dim() - 1)))
        data[key] = torch.where(mask, batch[key], carry.data[key])

    output = model(states, data["inputs"], data["puzzle_ids"], track_grad=training)

    steps = steps + 1
    is_last = steps >= cfg.halt_max_steps
    halted = is_last
    target_q_continue = None
    if training and cfg.halt_max_steps > 1:
        with torch.no_grad():
            halted = halted | would_halt(model, output)
            size = steps.shape[0]
            full, first = draw_rows or (size, 0)
            block = slice(first, first + size)
            explore = (
                torch.rand(full, device=steps.device, generator=generator)[block]
                < cfg.halt_exploration_prob
            )
            min_steps = torch.randint(
                2,
                cfg.halt_max_steps + 1,
                (full,),
                device=steps.device,
                generator=generator,
                dtype=steps.dtype,
            )[block]
            halted = halted & (steps >= explore * min_steps)
            if cfg.act_continue:
                # HRM's Q-learning target: a second, no-grad forward from the new carry (§1.7).
                nxt = model(output.states, data["inputs"], data["puzzle_ids"], track_grad=False)
                target_q_continue = torch.sigmoid(
                    torch.where(is_last, nxt.q_halt, torch.maximum(nxt.q_halt, nxt.q_continue))
                )
    new_carry = Carry(states=output.states, steps=steps, halted=halted, data=data)
    return new_carry, StepResult(output=output, target_q_continue=target_q_continue)


def would_halt(model: RecursiveReasoningModel, output: ModelOutput) -> torch.Tensor:
    """The Q head's halting decision, without exploration (used to report halting steps)."""
    if model.config.act_continue:
        return output.q_halt > output.q_continue
    return output.q_halt > 0

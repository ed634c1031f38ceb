"""Deep supervision with carried slots (§1.6) and halting (§1.7): halted slots restart from the
initial states with fresh data, the others keep theirs; states are detached between steps;
training halts on the Q head (TRM: q_halt > 0; act_continue: q_halt > q_continue) subject to
exploration; evaluation never halts early; the continue target uses a second no-grad forward."""

import torch

from tests.conftest import random_batch, tiny_model_config
from trm_core import RecursiveReasoningModel
from trm_core.act import initial_carry, supervision_step


def _model(**overrides):
    torch.manual_seed(0)
    return RecursiveReasoningModel(tiny_model_config(**overrides))


def _set_q_bias(model, halt, cont):
    with torch.no_grad():
        model.q_head.bias.copy_(torch.tensor([halt, cont]))


def test_halted_slots_restart_with_fresh_data_and_the_others_keep_theirs():
    model = _model(halt_exploration_prob=0.0)
    first, second = random_batch(model.config, 6, seed=1), random_batch(model.config, 6, seed=2)
    carry = initial_carry(model, first, torch.float32)
    carry, _ = supervision_step(model, carry, first, training=True)
    assert torch.equal(carry.data["inputs"], first["inputs"])  # all slots start halted
    assert carry.steps.tolist() == [1] * 6

    halted = torch.tensor([True, False, True, False, False, True])
    carry.halted = halted
    before = carry.states
    carry, _ = supervision_step(model, carry, second, training=True)
    for key in ("inputs", "labels", "puzzle_ids"):
        expected = torch.where(
            halted.view(-1, *[1] * (first[key].dim() - 1)), second[key], first[key]
        )
        assert torch.equal(carry.data[key], expected)
    assert carry.steps.tolist() == [1, 2, 1, 2, 2, 1]

    # A restarted slot computes exactly what a fresh carry on the same row computes; a kept
    # slot continues from its own state.
    fresh = model(
        model.initial_states(6, torch.float32),
        second["inputs"],
        second["puzzle_ids"],
        track_grad=False,
    )
    kept = model(before, first["inputs"], first["puzzle_ids"], track_grad=False)
    for slot in range(6):
        reference = fresh if halted[slot] else kept
        torch.testing.assert_close(carry.states[0][slot], reference.states[0][slot])


def test_carried_states_are_detached_after_a_training_step():
    model = _model()
    batch = random_batch(model.config, 4, seed=1)
    carry, result = supervision_step(
        model, initial_carry(model, batch, torch.float32), batch, training=True
    )
    assert result.output.logits.requires_grad
    assert all(s.grad_fn is None and not s.requires_grad for s in carry.states)


def test_trm_halts_when_q_halt_is_positive():
    model = _model(halt_exploration_prob=0.0)
    batch = random_batch(model.config, 4, seed=1)
    _set_q_bias(model, 10.0, -10.0)
    carry, _ = supervision_step(
        model, initial_carry(model, batch, torch.float32), batch, training=True
    )
    assert carry.halted.all()
    _set_q_bias(model, -10.0, 10.0)
    carry, _ = supervision_step(
        model, initial_carry(model, batch, torch.float32), batch, training=True
    )
    assert not carry.halted.any()


def test_act_continue_halts_when_q_halt_beats_q_continue():
    model = _model(act_continue=True, halt_exploration_prob=0.0)
    batch = random_batch(model.config, 4, seed=1)
    _set_q_bias(model, 2.0, 3.0)  # q_halt > 0 but below q_continue: keep going
    carry, _ = supervision_step(
        model, initial_carry(model, batch, torch.float32), batch, training=True
    )
    assert not carry.halted.any()
    _set_q_bias(model, -2.0, -3.0)  # q_halt < 0 but above q_continue: halt
    carry, _ = supervision_step(
        model, initial_carry(model, batch, torch.float32), batch, training=True
    )
    assert carry.halted.all()


def test_every_slot_halts_at_the_step_limit():
    model = _model(halt_exploration_prob=0.0)
    batch = random_batch(model.config, 4, seed=1)
    _set_q_bias(model, -10.0, 10.0)
    carry = initial_carry(model, batch, torch.float32)
    for step in range(1, model.config.halt_max_steps + 1):
        carry, _ = supervision_step(model, carry, batch, training=True)
        assert carry.halted.all() == (step == model.config.halt_max_steps)


def test_exploration_vetoes_halting_before_a_random_minimum_of_at_least_two():
    model = _model(halt_exploration_prob=1.0, halt_max_steps=6)
    batch = random_batch(model.config, 256, seed=1)
    _set_q_bias(model, 10.0, -10.0)  # the Q head always wants to halt
    generator = torch.Generator().manual_seed(0)
    carry, _ = supervision_step(
        model, initial_carry(model, batch, torch.float32), batch, training=True, generator=generator
    )
    assert not carry.halted.any()  # minimum is at least 2 steps
    halted_at = torch.zeros(256, dtype=torch.int32)
    for step in range(2, 7):
        carry.halted = torch.zeros(256, dtype=torch.bool)  # keep slots, observe decisions
        carry, _ = supervision_step(model, carry, batch, training=True, generator=generator)
        halted_at = torch.where((halted_at == 0) & carry.halted, step, halted_at)
    # The minimum is re-drawn every step: at step 2 a slot halts iff the draw was 2 (1 in 5).
    assert (halted_at == 2).float().mean() > 0.1
    assert (halted_at > 2).any()


def test_evaluation_never_halts_early():
    model = _model()
    batch = random_batch(model.config, 4, seed=1)
    _set_q_bias(model, 10.0, -10.0)
    carry = initial_carry(model, batch, torch.float32)
    with torch.inference_mode():
        for step in range(1, model.config.halt_max_steps + 1):
            carry, result = supervision_step(model, carry, batch, training=False)
            assert carry.halted.all() == (step == model.config.halt_max_steps)
            assert result.target_q_continue is None


def test_continue_target_comes_from_a_second_forward_of_the_new_carry():
    model = _model(act_continue=True, halt_exploration_prob=0.0)
    with torch.no_grad():
        model.q_head.weight.normal_()
    batch = random_batch(model.config, 4, seed=1)
    carry = initial_carry(model, batch, torch.float32)
    carry, _ = supervision_step(model, carry, batch, training=True)
    carry.halted = torch.zeros(4, dtype=torch.bool)
    carry.steps = torch.tensor([1, model.config.halt_max_steps - 1, 1, 1], dtype=torch.int32)
    new_carry, result = supervision_step(model, carry, batch, training=True)
    with torch.no_grad():
        nxt = model(new_carry.states, batch["inputs"], batch["puzzle_ids"], track_grad=False)
    is_last = new_carry.steps >= model.config.halt_max_steps
    assert is_last.tolist() == [False, True, False, False]
    expected = torch.sigmoid(
        torch.where(is_last, nxt.q_halt, torch.maximum(nxt.q_halt, nxt.q_continue))
    )
    torch.testing.assert_close(result.target_q_continue, expected)
    assert not result.target_q_continue.requires_grad

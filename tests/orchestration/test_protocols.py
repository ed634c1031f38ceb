"""Evaluation protocols on a tiny model (issue 12): each knob does what it says.

- deeper test-time recursion really runs more supervision steps, and its first N_sup steps are
  the trained evaluation's;
- the paper protocol's answer is the Trainer's own evaluation, exactly;
- Q-head halting answers at the first step the Q head says halt;
- voting maps every augmented answer back before counting, and ranks by count, then mean
  σ(q_halt), then the identity first;
- ARC votes pooled over two checkpoints equal a vote computed by hand, and differ from the
  per-checkpoint vote where they should;
- checkpoint selections and protocol files fail or choose as stated.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from datasets import arc
from datasets.test_time import sample_transforms
from orchestration.protocols import (
    ArcScorer,
    ExactScorer,
    Protocol,
    answer_steps,
    load_protocols,
    select,
    selections,
    vote,
)
from orchestration.rescore import _transform_plan, protocol_answers
from tests.conftest import random_batch, tiny_model_config, tiny_train_config
from trm_core import Trainer
from trm_core.trainer import Prediction

PAPER = Protocol(name="paper", label="paper")


def trained_tiny(steps: int = 6) -> Trainer:
    cfg = tiny_model_config(halt_max_steps=3)
    trainer = Trainer(cfg, tiny_train_config(), device="cpu")
    for step in range(steps):
        trainer.train_step(random_batch(cfg, 8, seed=step))
    return trainer


def test_deeper_recursion_runs_more_steps_and_keeps_the_trained_ones():
    trainer = trained_tiny()
    batch = random_batch(trainer.model_config, 5, seed=99)
    calls = []
    forward = trainer.model.forward
    trainer.model.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    with trainer.evaluation_weights():
        trained = trainer.predict(batch, 3)
        trained_calls = len(calls)
        deeper = trainer.predict(batch, 12)
    assert trained_calls == 3 and len(calls) - trained_calls == 12
    assert deeper.tokens.shape[:2] == (12, 5) and deeper.halts.shape == (12, 5)
    torch.testing.assert_close(deeper.tokens[:3], trained.tokens, rtol=0, atol=0)
    torch.testing.assert_close(deeper.q_halt_prob[:3], trained.q_halt_prob, rtol=0, atol=0)
    assert Protocol("d", "d", supervision_factor=4).steps(3) == 12


def test_protocol_steps_absolute_and_factor():
    assert Protocol("a", "a", supervision_steps=64).steps(16) == 64
    assert Protocol("a", "a", supervision_factor=4).steps(16) == 64
    assert PAPER.steps(16) == 16


def test_paper_protocol_equals_the_trainers_evaluation():
    trainer = trained_tiny()
    cfg = trainer.model_config
    batches = [random_batch(cfg, 7, seed=s) for s in (11, 12, 13)]
    with trainer.evaluation_weights():  # make some rows solved, so exact accuracy is not 0
        for batch in batches:
            batch["labels"][:3] = trainer.predict(batch, cfg.halt_max_steps).tokens[-1, :3]
    logged = trainer.evaluate(batches)
    scorer = ExactScorer(PAPER, cfg.halt_max_steps)
    with trainer.evaluation_weights():
        for batch in batches:
            prediction = trainer.predict(batch, cfg.halt_max_steps)
            answers = protocol_answers(PAPER, [(None, prediction)], [0], cfg.halt_max_steps)
            scorer.update({k: np.asarray(v) for k, v in batch.items()}, answers)
            # the answer is the argmax of the last step, as evaluate() scores it
            assert np.array_equal(answers[0][0], prediction.tokens[-1].numpy())
    scored = scorer.compute()
    assert logged["exact_accuracy"] >= 9 / 21
    assert scored["exact_accuracy"] == logged["exact_accuracy"]
    assert scored["token_accuracy"] == pytest.approx(logged["token_accuracy"], abs=1e-12)
    assert scored["count"] == logged["count"]


def test_q_head_halting_answers_at_the_first_halting_step():
    halts = np.array(
        [
            [False, True, False],
            [True, True, False],
            [False, True, False],
            [True, True, False],
        ]
    )  # [steps, rows]
    assert answer_steps(halts, 4, "q_head").tolist() == [1, 0, 3]
    assert answer_steps(halts, 2, "q_head").tolist() == [1, 0, 1]  # never halted: the last
    assert answer_steps(halts, 4, "all").tolist() == [3, 3, 3]
    tokens = torch.arange(4 * 3 * 2, dtype=torch.int16).reshape(4, 3, 2)
    prediction = Prediction(tokens, torch.linspace(0, 1, 12).reshape(4, 3), torch.tensor(halts))
    protocol = Protocol("q", "q", halting="q_head")
    ((grid, confidence),) = protocol_answers(protocol, [(None, prediction)], [0], 4)
    assert grid.tolist() == [tokens[1, 0].tolist(), tokens[0, 1].tolist(), tokens[3, 2].tolist()]
    # q[step, row] = (3·step + row) / 11
    assert confidence.tolist() == pytest.approx([3 / 11, 1 / 11, 11 / 11])


def test_vote_ranks_by_count_then_confidence_then_identity_first():
    a, b, c = [1, 1], [2, 2], [3, 3]
    candidates = np.array([[a, b, a], [b, b, c], [a, c, b]])  # [K=3, B=3, L=2]
    confidence = np.array([[0.1, 0.9, 0.5], [0.2, 0.1, 0.5], [0.3, 0.9, 0.5]])
    chosen = vote(candidates, confidence)
    assert chosen[0].tolist() == a  # a twice beats b once
    assert chosen[1].tolist() == b  # b twice (K=0,1) beats c once
    assert chosen[2].tolist() == a  # three distinct, equal confidence: the identity's


def test_vote_breaks_equal_counts_by_mean_confidence():
    candidates = np.array([[[1]], [[2]], [[1]], [[2]]])
    confidence = np.array([[0.2], [0.9], [0.3], [0.8]])
    assert vote(candidates, confidence)[0].tolist() == [2]  # mean 0.85 vs 0.25


def mini_manifest() -> dict:
    return {"task": "sudoku_mini", "arguments": {"box": [2, 3]}}


def solved_sudoku_rows() -> np.ndarray:
    """Two valid 6×6 solutions as tokens (digit d → d + 1)."""
    base = np.array(
        [
            [1, 2, 3, 4, 5, 6],
            [4, 5, 6, 1, 2, 3],
            [2, 3, 1, 5, 6, 4],
            [5, 6, 4, 2, 3, 1],
            [3, 1, 2, 6, 4, 5],
            [6, 4, 5, 3, 1, 2],
        ]
    )
    return np.stack([base.reshape(-1), base[::-1].reshape(-1)]) + 1


def test_voting_maps_augmented_answers_back_before_counting():
    """A model that answers every augmented copy correctly (in the augmented frame) must score
    100 % after voting: every answer is mapped back to the original frame first. Two of the
    eight copies answer wrongly; the majority still wins."""
    labels = solved_sudoku_rows()
    protocol = Protocol("v", "v", votes=8)
    manifest = mini_manifest()
    plan, uses = _transform_plan([protocol], "sudoku_mini", manifest, trained=2)
    assert len(plan) == 8 and plan[0][0] is None and all(t is not None for t, _ in plan[1:])
    predictions = []
    for i, (transform, steps) in enumerate(plan):
        seen = labels if transform is None else transform.apply(labels)
        answer = seen.copy()
        if i in (0, 3):  # wrong in two copies, the identity among them
            answer[:, :4] = 2
        tokens = torch.tensor(np.stack([answer] * steps), dtype=torch.int16)
        predictions.append(
            (
                transform,
                Prediction(
                    tokens, torch.full((steps, 2), 0.5), torch.zeros(steps, 2, dtype=torch.bool)
                ),
            )
        )
    answers = protocol_answers(protocol, predictions, uses["v"], trained=2)
    for i, (grid, _) in enumerate(answers):
        assert np.array_equal(grid, labels) == (i not in (0, 3))
    scorer = ExactScorer(protocol, 2)
    scorer.update({"labels": labels}, answers)
    assert scorer.compute()["exact_accuracy"] == 1.0
    # not mapping back (voting in the augmented frames) would not be 100 %
    raw = [
        (predictions[i][1].tokens[-1].numpy().astype(np.int64), q)
        for i, (_, q) in enumerate(answers)
    ]
    wrong = ExactScorer(protocol, 2)
    wrong.update({"labels": labels}, raw)
    assert wrong.compute()["exact_accuracy"] < 1.0


def test_transform_plan_shares_the_identity_and_runs_the_most_steps():
    deeper = Protocol("deeper", "d", supervision_factor=4)
    voting = Protocol("voting", "v", votes=3)
    plan, uses = _transform_plan([PAPER, deeper, voting], "sudoku_mini", mini_manifest(), 4)
    assert [steps for _, steps in plan] == [16, 4, 4]
    assert uses == {"paper": [0], "deeper": [0], "voting": [0, 1, 2]}
    drawn = sample_transforms("sudoku_mini", mini_manifest(), 3, 0)
    assert plan[1][0] == drawn[1] and plan[2][0] == drawn[2]


def arc_tokens(grid: list[list[int]]) -> np.ndarray:
    """A 30×30 ARC token grid holding `grid` (colours) top-left, closed by EOS."""
    tokens = np.zeros((arc.SIDE, arc.SIDE), dtype=np.int64)
    g = np.asarray(grid) + 2
    h, w = g.shape
    tokens[:h, :w] = g
    tokens[h, : w + 1] = 1
    tokens[: h + 1, w] = 1
    return tokens.reshape(-1)


def arc_batch(guesses: list[np.ndarray], truth: np.ndarray) -> tuple[dict, list]:
    n = len(guesses)
    identity_code = arc.pack_colour_maps(np.arange(arc.NUM_COLOURS)[None].repeat(n, 0))
    batch = {
        "labels": np.stack([truth] * n),
        "arc_task": np.zeros(n, dtype=np.int64),
        "arc_test_pair": np.zeros(n, dtype=np.int64),
        "arc_version": np.arange(n, dtype=np.int64),
        "arc_dihedral": np.zeros(n, dtype=np.int64),
        "arc_colour_code": np.asarray(identity_code, dtype=np.int64),
    }
    return batch, [(np.stack(guesses), np.full(n, 0.5))]


def test_pooled_arc_votes_equal_a_hand_computed_vote_over_two_checkpoints():
    a, b = arc_tokens([[1, 2], [3, 4]]), arc_tokens([[5]])
    manifest = {"arc": {"test_pairs_per_task": [1]}}
    first, second = [a, a, a], [b, b, a]  # three versions, two checkpoints; the truth is a
    pooled = ArcScorer(PAPER, 2, manifest)
    for guesses in (first, second):
        pooled.update(*arc_batch(guesses, a))
    per_checkpoint = ArcScorer(Protocol("p", "p", arc_votes="per_checkpoint"), 2, manifest)
    per_checkpoint.update(*arc_batch(second, a))
    # by hand: pooled a = 3 + 1 = 4 votes, b = 2 → a first; the second checkpoint alone: b 2, a 1
    assert pooled.compute()["ARC/pass@1"] == 1.0
    assert per_checkpoint.compute()["ARC/pass@1"] == 0.0
    assert per_checkpoint.compute()["ARC/pass@2"] == 1.0
    # votes=K keeps the first K versions only: version 0 of the second checkpoint says b
    first_version = ArcScorer(Protocol("k", "k", votes=1, arc_votes="per_checkpoint"), 2, manifest)
    first_version.update(*arc_batch(second, a))
    assert first_version.compute()["ARC/pass@1"] == 0.0


def test_selections_final_best_on_validation_best_on_test():
    test = [(100, 0.5), (200, 0.7), (300, 0.6)]
    validation = [(100, 0.4), (200, 0.3), (300, 0.4)]  # tie → the later checkpoint
    chosen = selections(test, validation)
    assert chosen == {"final": (300, 0.6), "best_validation": (300, 0.6), "best_test": (200, 0.7)}
    assert selections(test, None)["best_validation"] is None
    assert selections([], None) == {"final": None, "best_validation": None, "best_test": None}


def test_protocol_files_are_validated(tmp_path: Path):
    protocols, default = load_protocols()
    assert default[0] == "paper" and {"deeper", "q_halt", "voting"} <= set(default)
    assert protocols["paper"].knobs() == PAPER.knobs()  # the paper's file is all defaults
    for text, message in [
        ("halting: sometimes\n", "halting='sometimes'"),
        ("votes: 0\n", "votes=0"),
        ("supervision_steps: 8\nsupervision_factor: 2\n", "sets both"),
        ("depth: 3\n", "unknown field"),
        ("default: maybe\n", "default='maybe'"),
    ]:
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(ValueError, match=message):
            load_protocols(tmp_path)
    with pytest.raises(ValueError, match="unknown protocol"):
        select(["deepest"])


def test_ARC_has_no_transforms_to_sample():
    with pytest.raises(ValueError, match="arc1"):
        sample_transforms("arc1", {"task": "arc1"}, 2, 0)


def test_a_trials_pooled_arc_vote_resumes_from_its_checkpointed_state():
    """Training pools ARC votes over evaluations (the official evaluator) and checkpoints the
    pool: a trial resumed between two evaluations votes exactly as an unbroken one."""
    a, b = arc_tokens([[1, 2], [3, 4]]), arc_tokens([[5]])
    expected = [1]
    unbroken = arc.ArcVoting(test_pairs_per_task=expected)
    assert arc.ArcVoting.pools_evaluations
    first, second = arc_batch([a, a, a], a), arc_batch([b, b, a], a)
    for batch, answers in (first, second):
        unbroken.update(batch, answers[0][0], answers[0][1], np.ones(3, dtype=bool))
    before = arc.ArcVoting(test_pairs_per_task=expected)
    before.update(first[0], first[1][0][0], first[1][0][1], np.ones(3, dtype=bool))
    saved = torch.load(_round_trip(before.state_dict()), weights_only=False)
    resumed = arc.ArcVoting(test_pairs_per_task=expected)
    resumed.load_state_dict(saved)
    resumed.update(second[0], second[1][0][0], second[1][0][1], np.ones(3, dtype=bool))
    assert resumed.compute() == unbroken.compute()
    assert resumed.compute()["ARC/pass@1"] == 1.0  # a: 4 votes over both evaluations, b: 2


def _round_trip(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer

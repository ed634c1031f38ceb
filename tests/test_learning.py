"""Learning check: a scaled-down TRM-MLP (hidden 64) learns 4×4 Sudoku to ≥ 95 % exact accuracy
on held-out puzzles whose solution grids never appear in training, on 2 CPU cores (≈ 50 s).
Uses the quick-start configuration, so the README's demo figure is what this test asserts."""

import pytest
import torch

from datasets import tiny_sudoku
from datasets.loader import TrainBatches, eval_batches
from orchestration.quickstart import MODEL, TRAIN
from trm_core import GroupedExactAccuracy, TrainConfig, Trainer


@pytest.mark.slow
def test_small_trm_learns_4x4_sudoku_on_held_out_grids():
    torch.set_num_threads(2)
    train, test = tiny_sudoku.build(train_size=6000, test_size=500, seed=0)
    assert not set(map(bytes, test.labels)) & set(map(bytes, train.labels))  # disjoint solutions
    trainer = Trainer(MODEL, TrainConfig(seed=0, **TRAIN), device="cpu")
    assert MODEL.hidden <= 128
    metrics = trainer.fit(
        TrainBatches(train, TRAIN["global_batch_size"], seed=0),
        800,
        eval_batches=lambda: eval_batches(test, 250),
        hooks=lambda: [GroupedExactAccuracy("givens")],
    )
    assert metrics["count"] == 500
    assert metrics["exact_accuracy"] >= 0.95, metrics
    assert metrics["exact_accuracy/givens=4"] >= 0.85, metrics  # the hardest level learns too

"""Tiny Sudoku (datasets.tiny_sudoku): 4×4 puzzles for quick learning checks and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import tiny_sudoku
from datasets.build_steps import Progress, check_counts, manifest_body, write_splits
from datasets.task import Task, TokenLayout, generated_source, grouped_exact_accuracy

LAYOUT = TokenLayout(
    ("PAD", "blank", "1", "2", "3", "4"), tiny_sudoku.CELLS, (tiny_sudoku.SIDE, tiny_sudoku.SIDE)
)


def build(staging: Path, progress: Progress, *, train: int, test: int, seed: int) -> dict[str, Any]:
    check_counts(1, train=train, test=test)
    train_arrays, test_arrays = tiny_sudoku.build(train, test, seed)
    progress("generated 4x4 puzzles")
    splits = write_splits(staging, progress, train=train_arrays, test=test_arrays)
    return manifest_body(
        {"train": train, "test": test}, seed, generated_source({}), LAYOUT, 1, splits
    )


TASKS = (
    Task(
        name="tiny_sudoku",
        builder_version=1,
        build=build,
        stages=2,
        layout=lambda arguments: LAYOUT,
        cli_arguments=lambda args: dict(train=args.train, test=args.test),
        eval_columns=("givens",),
        eval_hooks=grouped_exact_accuracy("givens"),
    ),
)

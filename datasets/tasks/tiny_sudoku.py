"""Tiny Sudoku (datasets.tiny_sudoku): 4×4 puzzles for quick learning checks and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import test_time, tiny_sudoku
from datasets.build_steps import Progress, check_counts, manifest_body, write_splits
from datasets.task import Task, TokenLayout, generated_source, grouped_exact_accuracy

LAYOUT = TokenLayout(
    ("PAD", "blank", "1", "2", "3", "4"), tiny_sudoku.CELLS, (tiny_sudoku.SIDE, tiny_sudoku.SIDE)
)


def build(
    staging: Path, progress: Progress, *, train: int, test: int, seed: int, validation: int = 0
) -> dict[str, Any]:
    check_counts(1, train=train, test=test)
    check_counts(0, validation=validation)
    arrays = tiny_sudoku.build_splits(train, test, seed, validation_size=validation)
    progress("generated 4x4 puzzles")
    splits = write_splits(staging, progress, **arrays)
    body = manifest_body(
        {"train": train, "test": test, "validation": validation},
        seed,
        generated_source({}),
        LAYOUT,
        1,
        splits,
    )
    if validation:
        body["validation_source"] = (
            f"{validation} puzzles drawn like train from the training solution grids by their "
            "own seeded stream; none is identical to a training puzzle"
        )
    return body


TASKS = (
    Task(
        name="tiny_sudoku",
        builder_version=2,  # 2: optional validation split; `validation` in the arguments
        build=build,
        stages=2,
        layout=lambda arguments: LAYOUT,
        cli_arguments=lambda args: dict(
            train=args.train, test=args.test, validation=args.validation
        ),
        eval_columns=("givens",),
        eval_hooks=grouped_exact_accuracy("givens"),
        test_time_transforms=test_time.box_sudoku_transforms((2, 2)),
    ),
)

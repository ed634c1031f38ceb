"""Sudoku-Extreme (TRM_SPEC §3.2): the published CSV, 1000 puzzles × 1000 augmentations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datasets import overlap, sudoku
from datasets.arrays import PuzzleArrays
from datasets.build_steps import (
    Progress,
    check_counts,
    csv_source_identity,
    manifest_body,
    source_files,
    write_splits,
)
from datasets.task import Task, TokenLayout

LAYOUT = TokenLayout(tuple(sudoku.TOKEN_NAMES), sudoku.CELLS, (sudoku.SIDE, sudoku.SIDE))
identity = csv_source_identity("sudoku")


def build(
    staging: Path,
    progress: Progress,
    *,
    source: str,
    subsample: int | None,
    augment: int,
    seed: int,
    test_limit: int | None,
) -> dict[str, Any]:
    check_counts(1, " (omit it to keep all)", subsample=subsample, test_limit=test_limit)
    check_counts(0, augment=augment)
    files = source_files("sudoku", source)
    rng = np.random.default_rng([seed, 0])

    def sampled(total: int) -> np.ndarray:  # the same rows whether streamed or read whole
        if subsample is None:
            return np.arange(total)
        if subsample > total:
            raise ValueError(
                f"--subsample {subsample} exceeds the {total} training puzzles of the source"
            )
        return np.sort(rng.choice(total, subsample, replace=False))

    train_rows = sudoku.read_csv(files["train"], keep=sampled)
    test_rows = sudoku.read_csv(
        files["test"],
        keep=None if test_limit is None else lambda total: np.arange(min(test_limit, total)),
    )
    progress("read and validated CSV")
    found = overlap.sudoku_overlap(train_rows.questions, test_rows.questions)
    progress("counted duplicates and test puzzles in train")
    questions, answers = sudoku.augment(train_rows, augment, seed)
    progress(f"augmented {len(train_rows.questions)} puzzles x {augment + 1}")

    def arrays(q: np.ndarray, a: np.ndarray, groups: int, ratings: np.ndarray) -> PuzzleArrays:
        inputs, labels = sudoku.to_tokens(q, a)
        return PuzzleArrays.one_example_per_puzzle(
            inputs,
            labels,
            np.full(groups, len(q) // groups),
            sudoku.VOCAB_SIZE,
            extras={"rating": np.repeat(ratings, len(q) // groups)},
        )

    train = arrays(questions, answers, len(train_rows.questions), train_rows.ratings)
    test = arrays(
        test_rows.questions, test_rows.answers, len(test_rows.questions), test_rows.ratings
    )
    splits = write_splits(staging, progress, train=train, test=test)
    return manifest_body(
        {"subsample": subsample, "augment": augment, "test_limit": test_limit},
        seed,
        identity({"source": source}),
        LAYOUT,
        1,
        splits,
        overlap=found,
    )


TASKS = (
    Task(
        name="sudoku",
        builder_version=2,  # 2: the manifest records overlap counts
        build=build,
        stages=4,
        layout=lambda arguments: LAYOUT,
        cli_arguments=lambda args: dict(
            source=args.source,
            subsample=args.subsample or None,
            augment=args.augment,
            test_limit=args.test_limit,
        ),
        source_identity=identity,
        needs_source=True,
    ),
)

"""Sudoku-Extreme (TRM_SPEC §3.2): the published CSV, 1000 puzzles × 1000 augmentations.

`--validation N` adds N unaugmented validation puzzles (for choosing checkpoints; never the
test split), drawn (seeded) from the train CSV's rows outside the subsample, so the training
puzzles stay exactly those of the build without it; when every row is used for training
(`--subsample 0`) they are carved out of train instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datasets import overlap, sudoku, test_time
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
    validation: int = 0,
) -> dict[str, Any]:
    check_counts(1, " (omit it to keep all)", subsample=subsample, test_limit=test_limit)
    check_counts(0, augment=augment, validation=validation)
    files = source_files("sudoku", source)
    rng = np.random.default_rng([seed, 0])
    held_out = np.random.default_rng([seed, 2])  # validation rows: a stream of their own
    train_count = 0  # rows of the selection that are training rows (the rest: validation)

    def sampled(total: int) -> np.ndarray:  # the same rows whether streamed or read whole
        nonlocal train_count
        if subsample is None:
            if validation >= total:
                raise ValueError(
                    f"--validation {validation} would leave no training puzzles of the "
                    f"source's {total}: allowed 0 to {total - 1} with --subsample 0"
                )
            chosen = np.arange(total)
        else:
            if subsample > total:
                raise ValueError(
                    f"--subsample {subsample} exceeds the {total} training puzzles of the source"
                )
            chosen = np.sort(rng.choice(total, subsample, replace=False))
            if validation > total - subsample:
                raise ValueError(
                    f"--validation {validation} exceeds the {total - subsample} train rows of "
                    f"the source outside --subsample {subsample}: allowed 0 to "
                    f"{total - subsample}"
                )
        if not validation:
            train_count = len(chosen)
            return chosen
        # Validation rows: outside the subsample (or, keeping all rows, carved out of train).
        pool = np.arange(total) if subsample is None else np.delete(np.arange(total), chosen)
        picked = np.sort(held_out.choice(pool, validation, replace=False))
        if subsample is None:
            chosen = np.delete(chosen, picked)
        train_count = len(chosen)
        return np.concatenate([chosen, picked])

    read = sudoku.read_csv(files["train"], keep=sampled)
    train_rows = read.take(slice(0, train_count))
    validation_rows = read.take(slice(train_count, None))
    test_rows = sudoku.read_csv(
        files["test"],
        keep=None if test_limit is None else lambda total: np.arange(min(test_limit, total)),
    )
    progress("read and validated CSV")
    found = overlap.sudoku_overlap(
        train_rows.questions,
        test_rows.questions,
        validation_questions=validation_rows.questions if validation else None,
    )
    progress("counted duplicates and test (and validation) puzzles in train")
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
    held = {"test": test_rows}
    if validation:
        held["validation"] = validation_rows
    unaugmented = {  # one puzzle per group
        name: arrays(rows.questions, rows.answers, len(rows.questions), rows.ratings)
        for name, rows in held.items()
    }
    splits = write_splits(staging, progress, train=train, **unaugmented)
    body = manifest_body(
        {
            "subsample": subsample,
            "augment": augment,
            "test_limit": test_limit,
            "validation": validation,
        },
        seed,
        identity({"source": source}),
        LAYOUT,
        1,
        splits,
        overlap=found,
    )
    if validation:
        body["validation_source"] = (
            f"{validation} unaugmented rows drawn (seeded) from the train CSV's rows "
            + (
                "outside the training subsample"
                if subsample is not None
                else "and removed from train"
            )
        )
    return body


TASKS = (
    Task(
        name="sudoku",
        # 2: the manifest records overlap counts; 3: optional validation split, `validation`
        # in the arguments
        builder_version=3,
        build=build,
        stages=4,
        layout=lambda arguments: LAYOUT,
        cli_arguments=lambda args: dict(
            source=args.source,
            subsample=args.subsample or None,
            augment=args.augment,
            test_limit=args.test_limit,
            validation=args.validation,
        ),
        source_identity=identity,
        needs_source=True,
        test_time_transforms=test_time.box_sudoku_transforms((3, 3)),
    ),
)

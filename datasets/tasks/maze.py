"""Maze-Hard (TRM_SPEC §3.3): the published 30×30 CSV, dihedral augmentation optional.

`--validation N` carves N mazes (seeded) out of the train CSV's rows into a validation split
(for choosing checkpoints; never the test split), removed from train and never dihedrally
augmented, with the test split's extras. The default is 0: the published train CSV holds the
paper's 1000 training mazes, so any validation split shrinks the paper's training set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datasets import maze, overlap, test_time
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

SIDE = 30  # every Maze-Hard grid is 30×30, row-major
LAYOUT = TokenLayout(tuple(maze.TOKEN_NAMES), SIDE * SIDE, (SIDE, SIDE))
identity = csv_source_identity("maze")


def build(
    staging: Path,
    progress: Progress,
    *,
    source: str,
    dihedral: bool,
    seed: int,
    validation: int = 0,
) -> dict[str, Any]:
    check_counts(0, validation=validation)
    files = source_files("maze", source)
    parsed = {split: maze.read_csv(path) for split, path in files.items()}
    progress("read and validated CSV (shortest paths checked)")
    if validation:
        total = len(parsed["train"][0])
        if validation >= total:
            raise ValueError(
                f"--validation {validation} would leave no training mazes of the source's "
                f"{total}: allowed 0 to {total - 1}"
            )
        picked = np.sort(np.random.default_rng([seed, 2]).choice(total, validation, replace=False))
        kept = np.delete(np.arange(total), picked)
        train = parsed.pop("train")
        parsed = {
            "train": tuple(column[kept] for column in train),
            "validation": tuple(column[picked] for column in train),
            **parsed,
        }
    found = overlap.maze_overlap(
        parsed["train"][0],
        parsed["test"][0],
        validation_questions=parsed["validation"][0] if validation else None,
    )
    progress("counted duplicates and test (and validation) mazes in train")
    arrays = {}
    for split, (questions, answers, ratings, paths) in parsed.items():
        copies = 8 if dihedral and split == "train" else 1  # held-out splits: never augmented
        if copies > 1:
            questions, answers = maze.dihedral_copies(questions), maze.dihedral_copies(answers)
        arrays[split] = PuzzleArrays.one_example_per_puzzle(
            questions,
            answers,
            np.full(len(ratings), copies),
            maze.VOCAB_SIZE,
            extras={
                "rating": np.repeat(ratings, copies),
                "num_shortest_paths": np.repeat(paths, copies),
            },
        )
    splits = write_splits(staging, progress, **arrays)
    body = manifest_body(
        {"dihedral": dihedral, "validation": validation},
        seed,
        identity({"source": source}),
        LAYOUT,
        1,
        splits,
        overlap=found,
    )
    if validation:
        body["validation_source"] = (
            f"{validation} rows carved (seeded) out of the train CSV: removed from train, "
            "never dihedrally augmented"
        )
    return body


def hooks(manifest) -> list:
    return [maze.MazeValidity()]


TASKS = (
    Task(
        name="maze",
        # 2: the manifest records overlap counts; 3: optional validation split, `validation`
        # in the arguments
        builder_version=3,
        build=build,
        stages=3,
        layout=lambda arguments: LAYOUT,
        cli_arguments=lambda args: dict(
            source=args.source, dihedral=args.dihedral, validation=args.validation
        ),
        source_identity=identity,
        needs_source=True,
        eval_hooks=hooks,
        test_time_transforms=test_time.maze_transforms,
    ),
)

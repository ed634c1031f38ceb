"""Maze-Hard (TRM_SPEC §3.3): the published 30×30 CSV, dihedral augmentation optional."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datasets import maze, overlap
from datasets.arrays import PuzzleArrays
from datasets.build_steps import (
    Progress,
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
    staging: Path, progress: Progress, *, source: str, dihedral: bool, seed: int
) -> dict[str, Any]:
    files = source_files("maze", source)
    parsed = {split: maze.read_csv(path) for split, path in files.items()}
    progress("read and validated CSV (shortest paths checked)")
    found = overlap.maze_overlap(parsed["train"][0], parsed["test"][0])
    progress("counted duplicates and test mazes in train")
    arrays = {}
    for split, (questions, answers, ratings, paths) in parsed.items():
        copies = 8 if dihedral and split == "train" else 1  # test is never augmented
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
    return manifest_body(
        {"dihedral": dihedral},
        seed,
        identity({"source": source}),
        LAYOUT,
        1,
        splits,
        overlap=found,
    )


def hooks(manifest) -> list:
    return [maze.MazeValidity()]


TASKS = (
    Task(
        name="maze",
        builder_version=2,  # 2: the manifest records overlap counts
        build=build,
        stages=3,
        layout=lambda arguments: LAYOUT,
        cli_arguments=lambda args: dict(source=args.source, dihedral=args.dihedral),
        source_identity=identity,
        needs_source=True,
        eval_hooks=hooks,
    ),
)

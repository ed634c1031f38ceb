"""Mini Sudoku (datasets.mini_sudoku): generated box Sudoku with graded blanks, the `scale=mini`
stand-in for Sudoku-Extreme, scored overall and per blank level; `--validation N` adds a
validation split generated like train (datasets.mini_sudoku)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import mini_sudoku, test_time
from datasets.build_steps import Progress, check_counts, manifest_body, write_splits
from datasets.task import Arguments, Task, TokenLayout, generated_source, grouped_exact_accuracy


def layout(arguments: Arguments) -> TokenLayout:
    rows, cols = arguments.get("box") or mini_sudoku.DEFAULT_BOX
    side = rows * cols
    return TokenLayout(tuple(mini_sudoku.token_names(side)), side * side, (side, side))


def build(
    staging: Path,
    progress: Progress,
    *,
    train: int,
    test: int,
    seed: int,
    blanks: list[int] | None = None,
    box: list[int] | None = None,
    validation: int = 0,
) -> dict[str, Any]:
    levels = tuple(blanks or mini_sudoku.DEFAULT_BLANKS)
    box = tuple(box or mini_sudoku.DEFAULT_BOX)
    grid = layout({"box": box})
    check_counts(1, train=train, test=test)
    check_counts(0, validation=validation)
    arrays = mini_sudoku.build_splits(train, test, seed, levels, box, validation)
    progress(f"generated {grid.grid[0]}x{grid.grid[1]} puzzles")
    splits = write_splits(staging, progress, **arrays)
    body = manifest_body(
        {
            "train": train,
            "test": test,
            "blanks": list(levels),
            "box": list(box),
            "validation": validation,
        },
        seed,
        generated_source({}),
        grid,
        1,
        splits,
    )
    if validation:
        body["validation_source"] = (
            f"{validation} puzzles generated like train (same balanced mix of blank levels) "
            "from their own seeded stream of random full grids; none has a training question"
        )
    return body


TASKS = (
    Task(
        name="sudoku_mini",
        builder_version=2,  # 2: optional validation split; `validation` in the arguments
        build=build,
        stages=2,
        layout=layout,
        cli_arguments=lambda args: dict(
            train=args.train,
            test=args.test,
            blanks=args.blanks,
            box=args.box,
            validation=args.validation,
        ),
        eval_columns=("blanks",),
        eval_hooks=grouped_exact_accuracy("blanks"),
        test_time_transforms=test_time.box_sudoku_transforms(),
    ),
)

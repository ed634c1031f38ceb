"""Mini Sudoku: small puzzles with a graded number of blanks, the `scale=mini` stand-in for
Sudoku-Extreme (shared/docs/MINI_SCALE.md: a single difficulty is a cliff, a mix of levels gives a
graded score, so the baseline lands between 10 % and 90 % and arms can differ).

Boxes of any shape: 3×3 (9×9 grids, default levels 30/35/40/45 blanks) or 2×3 (6×6 grids, what
`scale=mini` uses so that all of Table 1 fits 15 minutes on two cores: 40 tokens instead of 81).
Every puzzle has a unique solution without a solver call per level: each starts from a random
*minimal* puzzle (datasets.generators.box_sudoku) and keeps the givens of a random subset of its
blanks filled in; a puzzle with more consistent givens than a unique one is unique too. Train
and test come from independent seeded streams of random full grids. Tokens follow
Sudoku-Extreme (PAD 0, blank 1, digit d → d + 1); an extra `blanks` column gives the level.

An optional validation split (for choosing checkpoints; never the test split) is generated like
train, with the same balanced mix of levels, from a third seeded stream: the training puzzles
are the same whatever its size. A candidate whose question is identical to a training question
is replaced (from further streams), so no validation input occurs in train.

    python -m datasets.build sudoku_mini --train 6000 --test 500 --seed 0
    python -m datasets.build sudoku_mini --box 2 3 --blanks 14 17 20 23 --validation 500
"""

from __future__ import annotations

import numpy as np

from datasets import sudoku
from datasets.arrays import PuzzleArrays
from datasets.generators import box_sudoku
from datasets.generators import sudoku as sudoku_generator

DEFAULT_BOX = (3, 3)
DEFAULT_BLANKS = (30, 35, 40, 45)


def token_names(side: int) -> list[str]:
    return ["PAD", "blank", *[str(d) for d in range(1, side + 1)]]


def make_puzzles(
    count: int,
    blanks: tuple[int, ...],
    seed: int,
    stream: int,
    box: tuple[int, int] = DEFAULT_BOX,
    levels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(questions with 0 = blank, solutions, blank counts), levels balanced and shuffled, or
    the blank count of each puzzle given as `levels` ([count])."""
    stream_seed = seed * 1_000 + stream
    if box == (3, 3):  # the 9x9 generator propagates constraints: ~25x faster at this size
        minimal, solutions = sudoku_generator.random_minimal_puzzles(count, stream_seed)
    else:
        minimal, solutions = box_sudoku.random_minimal_puzzles(count, *box, seed=stream_seed)
    rng = np.random.default_rng([seed, stream])
    if levels is None:
        levels = np.resize(np.asarray(blanks), count)
        rng.shuffle(levels)
    minimal_blanks = (minimal == 0).sum(1)
    if (levels > minimal_blanks).any():
        raise ValueError(
            f"blanks={blanks}: a minimal puzzle had only {minimal_blanks.min()} "
            "blanks; use fewer blanks"
        )
    # Rank the minimal puzzle's blank cells randomly; keep the `level` lowest-ranked blank.
    keys = np.where(minimal == 0, rng.random(minimal.shape), np.inf)
    ranks = keys.argsort(1).argsort(1)
    questions = np.where(ranks < levels[:, None], 0, solutions).astype(np.uint8)
    return questions, solutions, levels


TRAIN_STREAM, TEST_STREAM, VALIDATION_STREAM = 1, 2, 3
VALIDATION_ROUNDS = 20  # streams 3, 4, ... tried for replacements before giving up


def validation_puzzles(
    count: int,
    blanks: tuple[int, ...],
    seed: int,
    box: tuple[int, int],
    train_questions: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` puzzles like train's (balanced, shuffled levels) from the validation stream,
    none with a question identical to one of `train_questions`: such a candidate is replaced by
    one of the same level from the next stream."""
    levels = np.resize(np.asarray(blanks), count)
    np.random.default_rng([seed, VALIDATION_STREAM, 0]).shuffle(levels)
    seen = {bytes(row) for row in np.ascontiguousarray(train_questions, dtype=np.uint8)}
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    need = levels
    for round_ in range(VALIDATION_ROUNDS):
        if not len(need):
            break
        stream = VALIDATION_STREAM + round_
        questions, solutions, got = make_puzzles(len(need), blanks, seed, stream, box, need)
        fresh = np.array([bytes(row) not in seen for row in questions], dtype=bool)
        parts.append((questions[fresh], solutions[fresh], got[fresh]))
        need = got[~fresh]
    if len(need):
        raise ValueError(
            f"--validation {count}: could not find {len(need)} puzzles whose questions differ "
            "from every training puzzle's (the training set covers nearly all puzzles of these "
            "levels); allowed: fewer validation or training puzzles, or more blanks"
        )
    questions, solutions, got = (np.concatenate(column) for column in zip(*parts, strict=True))
    return questions, solutions, got


def build_splits(
    train: int,
    test: int,
    seed: int,
    blanks: tuple[int, ...] = DEFAULT_BLANKS,
    box: tuple[int, int] = DEFAULT_BOX,
    validation: int = 0,
) -> dict[str, PuzzleArrays]:
    """{"train", "test"} and, when `validation` > 0, "validation" (see the module docstring)."""
    box = tuple(box)
    if box not in ((2, 2), (2, 3), (3, 3)):
        raise ValueError(f"box={list(box)}: choose [2, 2] (4x4), [2, 3] (6x6) or [3, 3] (9x9)")
    side = box[0] * box[1]
    if min(blanks) < 1 or max(blanks) >= side * side:
        raise ValueError(f"blanks={blanks} must lie in [1, {side * side - 1}] for {side}x{side}")
    if validation < 0:
        raise ValueError(f"--validation {validation} is not allowed: give 0 or more")

    def arrays(questions: np.ndarray, solutions: np.ndarray, levels: np.ndarray) -> PuzzleArrays:
        inputs, labels = sudoku.to_tokens(questions, solutions)
        return PuzzleArrays.one_example_per_puzzle(
            inputs,
            labels,
            np.ones(len(questions), dtype=np.int64),
            side + 2,
            extras={"blanks": levels.astype(np.int64)},
        )

    blanks = tuple(blanks)
    train_puzzles = make_puzzles(train, blanks, seed, TRAIN_STREAM, box)
    splits = {
        "train": arrays(*train_puzzles),
        "test": arrays(*make_puzzles(test, blanks, seed, TEST_STREAM, box)),
    }
    if validation:
        splits["validation"] = arrays(
            *validation_puzzles(validation, blanks, seed, box, train_puzzles[0])
        )
    return splits


def build(
    train: int,
    test: int,
    seed: int,
    blanks: tuple[int, ...] = DEFAULT_BLANKS,
    box: tuple[int, int] = DEFAULT_BOX,
) -> tuple[PuzzleArrays, PuzzleArrays]:
    """(train, test) without a validation split (`build_splits` makes one)."""
    splits = build_splits(train, test, seed, blanks, box)
    return splits["train"], splits["test"]

"""Mini Sudoku: 9×9 puzzles with a graded number of blanks, the `scale=mini` stand-in for
Sudoku-Extreme (shared/docs/MINI_SCALE.md: a single difficulty is a cliff, a mix of 30/35/40/45
blanks gives a graded score, so the baseline lands between 10 % and 90 % and arms can differ).

Every puzzle has a unique solution without calling a solver per puzzle: each starts from a
random *minimal* puzzle (unique, ≈ 55–60 blanks; datasets.generators.sudoku) and keeps the
givens of a random subset of its blanks filled in, and a puzzle with more consistent givens than
a unique one is unique too. Train and test come from independent seeded streams of random full
grids. Tokens follow Sudoku-Extreme (vocab 11); an extra `blanks` column gives the level.

    python -m datasets.build sudoku_mini --train 6000 --test 500 --seed 0
"""

from __future__ import annotations

import numpy as np

from datasets import sudoku
from datasets.arrays import PuzzleArrays
from datasets.generators.sudoku import random_minimal_puzzles

DEFAULT_BLANKS = (30, 35, 40, 45)


def make_puzzles(
    count: int, blanks: tuple[int, ...], seed: int, stream: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(questions with 0 = blank, solutions, blank counts), levels balanced and shuffled."""
    minimal, solutions = random_minimal_puzzles(count, seed * 1_000 + stream)
    rng = np.random.default_rng([seed, stream])
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


def build(
    train: int, test: int, seed: int, blanks: tuple[int, ...] = DEFAULT_BLANKS
) -> tuple[PuzzleArrays, PuzzleArrays]:
    if min(blanks) < 1 or max(blanks) > 64:
        raise ValueError(f"blanks={blanks} must lie in [1, 64]")

    def arrays(count: int, stream: int) -> PuzzleArrays:
        questions, solutions, levels = make_puzzles(count, tuple(blanks), seed, stream)
        inputs, labels = sudoku.to_tokens(questions, solutions)
        return PuzzleArrays.one_example_per_puzzle(
            inputs,
            labels,
            np.ones(count, dtype=np.int64),
            sudoku.VOCAB_SIZE,
            extras={"blanks": levels.astype(np.int64)},
        )

    return arrays(train, 1), arrays(test, 2)

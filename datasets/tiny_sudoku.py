"""4×4 Sudoku with unique solutions: a tiny synthetic grid task for learning checks and the
quick-start demo (not one of the paper's datasets).

There are exactly 288 valid 4×4 grids, so uniqueness of a puzzle is checked exactly by matching
its givens against all of them (vectorised, no solver). The split is by solution grid: no test
puzzle shares its solution with a training puzzle. Tokens follow the Sudoku layout of
TRM_SPEC §3.2: PAD = 0, blank = 1, digit d = d + 1, so the vocabulary has 6 tokens.

An optional validation split (for choosing checkpoints; never the test split) is drawn like
train from the training solution grids, with its own seeded stream (the training puzzles are
the same whatever its size), and no validation puzzle is identical to a training puzzle.

    python -m datasets.tiny_sudoku   # prints a few puzzles
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

from datasets.arrays import PuzzleArrays

SIDE = 4
CELLS = SIDE * SIDE
VOCAB_SIZE = SIDE + 2  # PAD, blank, digits 1..4
MIN_GIVENS = 4  # no 4×4 puzzle with fewer givens has a unique solution


@functools.cache
def _solution_grids() -> np.ndarray:
    perms = np.array(list(itertools.permutations(range(1, SIDE + 1))), dtype=np.uint8)
    idx = np.stack(np.meshgrid(*[np.arange(len(perms))] * SIDE, indexing="ij"), -1).reshape(
        -1, SIDE
    )
    grids = perms[idx]  # [24^4, 4 rows, 4 cols]; rows are valid by construction
    columns_ok = np.all(np.sort(grids, axis=1) == np.arange(1, SIDE + 1)[:, None], axis=(1, 2))
    boxes = grids.reshape(-1, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4).reshape(-1, SIDE, SIDE)
    boxes_ok = np.all(np.sort(boxes, axis=2) == np.arange(1, SIDE + 1), axis=(1, 2))
    return grids[columns_ok & boxes_ok].reshape(-1, CELLS)


def all_solution_grids() -> np.ndarray:
    """The 288 valid 4×4 grids, uint8 [288, 16], digits 1..4, in lexicographic order."""
    return _solution_grids().copy()


def count_solutions(puzzles: np.ndarray, grids: np.ndarray) -> np.ndarray:
    """Number of valid grids consistent with each puzzle's givens (0 = blank)."""
    agrees = (puzzles[:, None, :] == 0) | (puzzles[:, None, :] == grids[None, :, :])
    return agrees.all(-1).sum(-1)


def make_puzzles(
    solutions: np.ndarray,
    count: int,
    givens: tuple[int, ...],
    seed: int,
    grids: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` unique-solution puzzles drawn from `solutions`, spread evenly over the given
    counts in `givens`, in a shuffled order. Returns (puzzles, solutions, given counts).
    Puzzles equal to a row of `exclude` ([n, 16], 0 = blank) are never drawn."""
    if min(givens) < MIN_GIVENS or max(givens) > CELLS:
        raise ValueError(f"givens={givens} must lie in [{MIN_GIVENS}, {CELLS}]")
    grids = all_solution_grids() if grids is None else grids
    excluded = None if exclude is None else _row_keys(exclude)
    rng = np.random.default_rng(seed)
    per_level = np.full(len(givens), count // len(givens))
    per_level[: count % len(givens)] += 1
    kept_p, kept_s = [], []
    for level, wanted in zip(givens, per_level, strict=True):
        level_p, level_s, found, barren = [], [], 0, 0
        while found < wanted:
            draw = 8 * (wanted - found) + 64
            sol = solutions[rng.integers(0, len(solutions), draw)]
            # Keep the `level` cells with the smallest random keys.
            ranks = rng.random((draw, CELLS)).argsort(1).argsort(1)
            puzzles = np.where(ranks < level, sol, 0).astype(np.uint8)
            unique = count_solutions(puzzles, grids) == 1
            if excluded is not None:
                unique &= ~np.isin(_row_keys(puzzles), excluded)
                barren = 0 if unique.any() else barren + 1
                if barren == MAX_BARREN_ROUNDS:
                    raise ValueError(
                        f"no puzzle with {level} givens outside the excluded ones in "
                        f"{MAX_BARREN_ROUNDS} rounds of draws: nearly all are excluded"
                    )
            level_p.append(puzzles[unique])
            level_s.append(sol[unique])
            found += int(unique.sum())
        kept_p.append(np.concatenate(level_p)[:wanted])
        kept_s.append(np.concatenate(level_s)[:wanted])
    order = rng.permutation(count)
    given_counts = np.repeat(np.asarray(givens), per_level)
    return np.concatenate(kept_p)[order], np.concatenate(kept_s)[order], given_counts[order]


MAX_BARREN_ROUNDS = 200  # rounds of draws without a single new puzzle before giving up


def _row_keys(puzzles: np.ndarray) -> np.ndarray:
    """A 4×4 puzzle (16 cells of 0..4) as one int64, exactly: 3 bits per cell."""
    cells = np.asarray(puzzles, dtype=np.int64).reshape(-1, CELLS)
    return (cells << (3 * np.arange(CELLS, dtype=np.int64))).sum(1)


TRAIN_STREAM, TEST_STREAM, VALIDATION_STREAM = 1, 2, 3


def build_splits(
    train_size: int,
    test_size: int,
    seed: int,
    givens: tuple[int, ...] = (4, 5, 6, 7),
    test_fraction_of_grids: float = 1 / 6,
    validation_size: int = 0,
) -> dict[str, PuzzleArrays]:
    """{"train", "test"} and, when `validation_size` > 0, "validation" (module docstring)."""
    if validation_size < 0:
        raise ValueError(f"--validation {validation_size} is not allowed: give 0 or more")
    grids = all_solution_grids()
    order = np.random.default_rng([seed, 0]).permutation(len(grids))
    n_test = max(1, round(len(grids) * test_fraction_of_grids))
    test_grids, train_grids = grids[order[:n_test]], grids[order[n_test:]]

    def to_arrays(puzzles: np.ndarray, answers: np.ndarray, counts: np.ndarray) -> PuzzleArrays:
        return PuzzleArrays.one_example_per_puzzle(
            inputs=(puzzles + 1).astype(np.uint8),  # blank 0 → 1, digit d → d + 1
            labels=(answers + 1).astype(np.uint8),
            group_sizes=np.ones(len(puzzles), dtype=np.int64),
            vocab_size=VOCAB_SIZE,
            extras={"givens": counts.astype(np.int64)},
        )

    def draw(solutions: np.ndarray, count: int, stream: int, exclude=None):
        return make_puzzles(solutions, count, givens, seed * 1000 + stream, grids, exclude)

    train = draw(train_grids, train_size, TRAIN_STREAM)
    splits = {
        "train": to_arrays(*train),
        "test": to_arrays(*draw(test_grids, test_size, TEST_STREAM)),
    }
    if validation_size:
        try:
            found = draw(train_grids, validation_size, VALIDATION_STREAM, exclude=train[0])
        except ValueError as err:
            raise ValueError(
                f"--validation {validation_size}: {err} (by the {train_size} training "
                "puzzles); allowed: fewer validation or training puzzles"
            ) from None
        splits["validation"] = to_arrays(*found)
    return splits


def build(
    train_size: int,
    test_size: int,
    seed: int,
    givens: tuple[int, ...] = (4, 5, 6, 7),
    test_fraction_of_grids: float = 1 / 6,
) -> tuple[PuzzleArrays, PuzzleArrays]:
    """Train and test sets whose solution grids are disjoint; each puzzle is its own group
    and carries a `givens` extra column (for accuracy by difficulty). `build_splits` also
    makes a validation split."""
    splits = build_splits(train_size, test_size, seed, givens, test_fraction_of_grids)
    return splits["train"], splits["test"]


def render(tokens: np.ndarray) -> str:
    digits = np.where(tokens >= 2, tokens - 1, 0).reshape(SIDE, SIDE)
    return "\n".join(" ".join(str(d) if d else "." for d in row) for row in digits)


if __name__ == "__main__":
    train, test = build(train_size=4, test_size=2, seed=0)
    for i in range(2):
        print(render(train.inputs[i]), "\n->\n" + render(train.labels[i]), "\n")

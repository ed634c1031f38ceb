"""Sudoku of any box shape (4×4 with 2×2 boxes, 6×6 with 2×3 boxes, 9×9 with 3×3 boxes):
random full grids and random *minimal* puzzles (unique solution; removing any given makes it
ambiguous), compiled with numba.

The solver is a depth-first search over bitmask candidates that fills the blank cell with the
fewest candidates first and stops at `limit` solutions, so uniqueness costs one call with
limit 2. Every random choice comes from numba's generator seeded by the caller.

    from datasets.generators.box_sudoku import random_minimal_puzzles
    puzzles, solutions = random_minimal_puzzles(100, box_rows=2, box_cols=3, seed=0)
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _popcount(mask: int) -> int:
    count = 0
    while mask:
        mask &= mask - 1
        count += 1
    return count


@numba.njit(cache=True)
def _nth_bit(mask: int, n: int) -> int:
    """The n-th (0-based) set bit of `mask`, as a one-bit mask."""
    while True:
        low = mask & -mask
        if n == 0:
            return low
        mask ^= low
        n -= 1


@numba.njit(cache=True)
def _solve(
    grid: np.ndarray, box_rows: int, box_cols: int, limit: int, randomize: bool, out: np.ndarray
) -> int:
    """Number of solutions of `grid` (0 = blank), counted up to `limit`; the first one found
    is written to `out`. With `randomize`, digits are tried in random order."""
    side = box_rows * box_cols
    cells = side * side
    stacks = side // box_cols
    full = (1 << side) - 1
    rows = np.zeros(side, np.int64)
    cols = np.zeros(side, np.int64)
    boxes = np.zeros(side, np.int64)
    work = grid.copy()
    blanks = np.empty(cells, np.int64)
    n_blank = 0
    for i in range(cells):
        r, c = i // side, i % side
        b = (r // box_rows) * stacks + c // box_cols
        v = work[i]
        if v == 0:
            blanks[n_blank] = i
            n_blank += 1
            continue
        bit = 1 << (v - 1)
        if (rows[r] | cols[c] | boxes[b]) & bit:
            return 0  # the givens already clash
        rows[r] |= bit
        cols[c] |= bit
        boxes[b] |= bit
    cell_at = np.empty(max(n_blank, 1), np.int64)
    untried = np.empty(max(n_blank, 1), np.int64)
    found = 0
    depth = 0
    choose = True
    while True:
        if choose:
            if depth == n_blank:  # every blank filled: a solution
                found += 1
                if found == 1:
                    out[:] = work
                if found >= limit:
                    return found
                depth -= 1
                if depth < 0:
                    return found
                choose = False
                continue
            best, best_count, best_mask = -1, side + 1, 0
            for k in range(n_blank):
                i = blanks[k]
                if work[i] != 0:
                    continue
                r, c = i // side, i % side
                b = (r // box_rows) * stacks + c // box_cols
                mask = full & ~(rows[r] | cols[c] | boxes[b])
                count = _popcount(mask)
                if count < best_count:
                    best, best_count, best_mask = i, count, mask
                    if count <= 1:
                        break
            cell_at[depth] = best
            untried[depth] = best_mask  # empty when a cell has no candidate: backtrack below
            choose = False
        cell = cell_at[depth]
        r, c = cell // side, cell % side
        b = (r // box_rows) * stacks + c // box_cols
        if work[cell] != 0:  # undo this depth's previous digit
            bit = 1 << (work[cell] - 1)
            rows[r] ^= bit
            cols[c] ^= bit
            boxes[b] ^= bit
            work[cell] = 0
        mask = untried[depth]
        if mask == 0:
            depth -= 1
            if depth < 0:
                return found
            continue
        n = np.random.randint(0, _popcount(mask)) if randomize else 0
        bit = _nth_bit(mask, n)
        untried[depth] = mask ^ bit
        rows[r] |= bit
        cols[c] |= bit
        boxes[b] |= bit
        digit = 1
        while (1 << (digit - 1)) != bit:
            digit += 1
        work[cell] = digit
        depth += 1
        choose = True


@numba.njit(cache=True)
def _minimal_puzzles(count: int, box_rows: int, box_cols: int, seed: int):
    np.random.seed(seed)
    side = box_rows * box_cols
    cells = side * side
    puzzles = np.zeros((count, cells), np.uint8)
    solutions = np.zeros((count, cells), np.uint8)
    scratch = np.zeros(cells, np.uint8)
    for p in range(count):
        empty = np.zeros(cells, np.uint8)
        _solve(empty, box_rows, box_cols, 1, True, solutions[p])  # a random full grid
        puzzle = solutions[p].copy()
        for cell in np.random.permutation(cells):  # drop givens while the solution stays unique
            kept = puzzle[cell]
            puzzle[cell] = 0
            if _solve(puzzle, box_rows, box_cols, 2, False, scratch) != 1:
                puzzle[cell] = kept
        puzzles[p] = puzzle
    return puzzles, solutions


def _check_box(box_rows: int, box_cols: int) -> int:
    side = box_rows * box_cols
    if box_rows < 1 or box_cols < 1 or side > 16:
        raise ValueError(f"box {box_rows}x{box_cols}: sides must be >= 1 with a product <= 16")
    return side


def random_minimal_puzzles(
    count: int, box_rows: int, box_cols: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(puzzles with 0 = blank, solutions), uint8 [count, side²], row-major; each puzzle has a
    unique solution and no redundant given."""
    _check_box(box_rows, box_cols)
    return _minimal_puzzles(count, box_rows, box_cols, seed)


def count_solutions(puzzle: np.ndarray, box_rows: int, box_cols: int, limit: int = 2) -> int:
    """Solutions of one puzzle (0 = blank), counted up to `limit`."""
    side = _check_box(box_rows, box_cols)
    grid = np.asarray(puzzle, np.uint8).reshape(-1)
    if grid.size != side * side or grid.max(initial=0) > side:
        raise ValueError(f"a {side}x{side} puzzle needs {side * side} cells with values 0..{side}")
    return int(_solve(grid, box_rows, box_cols, limit, False, np.zeros_like(grid)))


def is_valid_solution(grids: np.ndarray, box_rows: int, box_cols: int) -> np.ndarray:
    """Whether each full grid has every digit once per row, column and box (vectorised)."""
    side = _check_box(box_rows, box_cols)
    g = np.asarray(grids).reshape(-1, side, side)
    digits = np.arange(1, side + 1)
    boxes = g.reshape(-1, side // box_rows, box_rows, side // box_cols, box_cols)
    boxes = boxes.transpose(0, 1, 3, 2, 4).reshape(-1, side, side)
    return np.all(
        [
            np.all(np.sort(u, axis=2) == digits, axis=(1, 2))
            for u in (g, g.transpose(0, 2, 1), boxes)
        ],
        axis=0,
    )

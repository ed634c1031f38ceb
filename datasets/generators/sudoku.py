"""Sudoku-Extreme substitute: seeded, offline generation of easy and hard 9×9 puzzles written in
the published CSV layout (`source,question,answer,rating`; 81-char row-major strings, '.' blank).

    python -m datasets.generators.sudoku --train 1000 --test 2000 --seed 0 --out data/sudoku_gen

(`python -m datasets.generate sudoku ...` calls `main` here.) DATASETS.md ("Sudoku-Extreme:
what it is, ...") gives the recipe followed here:
- the rater is a strong solver: naked and hidden singles, locked candidates (pointing and
  claiming) and naked pairs, then guesses chosen by MRV over cells *and* digit-in-unit places.
  A guess is tdoku-style binary: "cell = digit", and on failure "cell ≠ digit" (not a guess).
  `rating` = guesses of the search that finds the solution and proves it unique, averaged
  over 8 random isomorphs of the puzzle (seeded from the puzzle itself, so a puzzle's rating
  does not depend on the batch it is rated in). A weak rater would be gamed by the search.
  Calibration: random minimal puzzles ≈ 1–1.3 (median 0); Inkala's, Golden Nugget and Easter
  Monster ≈ 80, 145, 115 (about half that counting only guesses before the first solution).
- easy puzzles: random full grids, then givens removed in random order while the solution
  stays unique, giving minimal puzzles.
- hard puzzles: a vicinity beam search from random minimal puzzles. Neighbours are −1 clue,
  −1+1 clue (remove a clue, then add one that rules out a second solution, which may move
  to another solution grid) and +1 clue; unique-solution neighbours are rated and the top B
  kept. Every unique puzzle the beam rates is a by-product, so one beam yields many hard
  puzzles. All puzzles of one beam (its lineage) go to train or to test, never both.
- no two output puzzles are equivalent under the sudoku symmetries: puzzles are keyed by an
  invariant of the symmetry group (equal for equivalent puzzles), and a repeated key is dropped.

Cost on one core: ≈ 900 random minimal puzzles/s; ≈ 3500 easy ratings/s; a default beam
(B = 10, 60 steps) takes 3–20 s and yields 0–700 puzzles rated ≥ 20; `--train 1000 --test 2000`
takes ≈ 2.5–3 min (plus ≈ 25 s of numba compilation on the first run, cached after).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numba import njit

ALL = 0x1FF  # candidate bits for digits 1..9
PLACED = 0x200  # set once a single has been propagated to its peers
CSV_HEADER = "source,question,answer,rating"
EASY_SOURCE = "generated-easy"
HARD_SOURCE = "generated-hard"


def _unit_tables() -> tuple[np.ndarray, ...]:
    cells = np.arange(81)
    row, col = cells // 9, cells % 9
    box = (row // 3) * 3 + col // 3
    same = (row[:, None] == row) | (col[:, None] == col) | (box[:, None] == box)
    np.fill_diagonal(same, False)
    peers = np.nonzero(same)[1].reshape(81, 20)
    # 27 units: rows 0-8, columns 9-17, boxes 18-26; each lists its cells in increasing order.
    units = np.concatenate(
        [np.argsort(k * 81 + cells, kind="stable").reshape(9, 9) for k in (row, col, box)]
    )
    member = np.zeros((27, 81), bool)
    member[np.arange(27)[:, None], units] = True
    # Box-line intersections (3 cells each): the 54 places where locked candidates act.
    both = member[18:, None, :] & member[None, :18, :]
    b, line = np.nonzero(both.sum(-1) == 3)
    inter = np.nonzero(both[b, line])[1].reshape(-1, 3)
    box_rest = np.nonzero(member[18 + b] & ~member[line])[1].reshape(-1, 6)
    line_rest = np.nonzero(member[line] & ~member[18 + b])[1].reshape(-1, 6)
    masks = np.arange(1024)
    pop = ((masks[:, None] >> np.arange(9)) & 1).sum(1)
    log2 = np.zeros(1024, np.int64)
    log2[1 << np.arange(9)] = np.arange(9)
    # Contiguous int64 copies: numba freezes these into the compiled code (and can cache it).
    tables = (units, peers, inter, box_rest, line_rest, pop, log2)
    return tuple(np.ascontiguousarray(t, dtype=np.int64) for t in tables)


UNITS, PEERS, INTER, BOX_REST, LINE_REST, POP, LOG2 = _unit_tables()


# ---------------------------------------------------------------------------------------------
# Solver (numba). A state is int64[81] of candidate bits, plus PLACED once propagated.


@njit(cache=True)
def _init_state(puzzle: np.ndarray, cand: np.ndarray) -> None:
    for c in range(81):
        v = puzzle[c]
        cand[c] = (1 << (v - 1)) if v > 0 else ALL


@njit(cache=True)
def _eliminate(cand: np.ndarray, c: int, digits: int) -> bool:
    """Remove `digits` from cell c; False when the cell is left empty."""
    q = cand[c]
    if q & digits:
        q &= ~digits
        cand[c] = q
        return (q & ALL) != 0
    return True


@njit(cache=True)
def _propagate(cand: np.ndarray, queue: np.ndarray) -> bool:
    """Apply singles, locked candidates and naked pairs until none applies; False on a
    contradiction. Cheap rules run first; any change restarts the loop."""
    while True:
        n = 0
        for c in range(81):
            m = cand[c]
            if m == 0:
                return False
            if m < PLACED and POP[m] == 1:
                queue[n] = c
                n += 1
        # Naked singles: place each and remove its digit from the 20 peers.
        while n > 0:
            n -= 1
            c = queue[n]
            m = cand[c]
            if m >= PLACED:
                continue
            cand[c] = m | PLACED
            for p in PEERS[c]:
                q = cand[p]
                if q & m:
                    q &= ~m
                    cand[p] = q
                    if (q & ALL) == 0:
                        return False  # also catches a placed peer holding the same digit
                    if q < PLACED and POP[q] == 1:
                        queue[n] = p
                        n += 1
        # Hidden singles: a digit with one place left in a unit goes there.
        found = False
        for u in range(27):
            once = 0
            twice = 0
            for k in range(9):
                m = cand[UNITS[u, k]] & ALL
                twice |= once & m
                once |= m
            if once != ALL:
                return False  # some digit has no place in this unit
            only = once & ~twice
            if only:
                for k in range(9):
                    c = UNITS[u, k]
                    m = cand[c]
                    hit = m & only
                    if hit and m < PLACED and m != hit:
                        if POP[hit] > 1:
                            return False  # two digits need this one cell
                        cand[c] = hit
                        found = True
        if found:
            continue
        # Locked candidates: a digit of a box confined to one line leaves the rest of the line
        # (pointing); a digit of a line confined to one box leaves the rest of the box (claiming).
        changed = False
        for i in range(INTER.shape[0]):
            mi = (cand[INTER[i, 0]] | cand[INTER[i, 1]] | cand[INTER[i, 2]]) & ALL
            mb = 0
            ml = 0
            for k in range(6):
                mb |= cand[BOX_REST[i, k]]
                ml |= cand[LINE_REST[i, k]]
            pointing = mi & ~mb & ml & ALL
            if pointing:
                changed = True
                for k in range(6):
                    if not _eliminate(cand, LINE_REST[i, k], pointing):
                        return False
            claiming = mi & ~ml & mb & ALL
            if claiming:
                changed = True
                for k in range(6):
                    if not _eliminate(cand, BOX_REST[i, k], claiming):
                        return False
        if changed:
            continue
        # Naked pairs: two cells of a unit with the same two candidates own those digits.
        for u in range(27):
            for a in range(8):
                m = cand[UNITS[u, a]]
                if m >= PLACED or POP[m] != 2:
                    continue
                for b in range(a + 1, 9):
                    if cand[UNITS[u, b]] == m:
                        for k in range(9):
                            c = UNITS[u, k]
                            if k != a and k != b and cand[c] & m:
                                changed = True
                                if not _eliminate(cand, c, m):
                                    return False
                        break
        if not changed:
            return True


@njit(cache=True)
def _choose(cand: np.ndarray, randomize: bool) -> tuple[int, int]:
    """The guess to make: (cell, digit bit) with the fewest alternatives over unplaced cells and
    over digit-in-unit places (ties go to cells). (-1, 0) when every cell is placed. With
    `randomize`, ties between cells and the digit are random (used to draw full grids)."""
    best = 10
    cell = -1
    start = np.random.randint(81) if randomize else 0
    for j in range(81):
        c = (start + j) % 81
        m = cand[c]
        if m < PLACED and POP[m] < best:
            best = POP[m]
            cell = c
            if best == 2:
                break
    if cell < 0:
        return -1, 0
    m = cand[cell]
    if randomize:
        pick = np.random.randint(POP[m])
        for d in range(9):
            if m & (1 << d):
                if pick == 0:
                    return cell, 1 << d
                pick -= 1
    if best > 2:
        for u in range(27):
            for d in range(9):
                bit = 1 << d
                count = 0
                first = -1
                for k in range(9):
                    if cand[UNITS[u, k]] & bit:
                        count += 1
                        if first < 0:
                            first = UNITS[u, k]
                if 1 < count < best:
                    best = count
                    cell = first
                    m = bit
                    if best == 2:
                        return cell, bit
    return cell, m & -m


# One explicit signature: otherwise numba compiles a copy per literal `limit`/`randomize`.
@njit(
    "UniTuple(int64, 3)(int64[::1], int64, boolean, uint8[::1], int64[:, ::1], int64[::1])",
    cache=True,
)
def _search(
    cand: np.ndarray,
    limit: int,
    randomize: bool,
    solution: np.ndarray,
    stack: np.ndarray,
    queue: np.ndarray,
) -> tuple[int, int, int]:
    """Depth-first search from state `cand` (modified). Returns (solutions found, at most
    `limit`; guesses made before the first solution, or all if none; guesses made in all).
    The first solution is written to `solution` as digits 1..9."""
    cells = np.empty(82, np.int64)
    bits = np.empty(82, np.int64)
    found = 0
    guesses = 0
    first = -1
    depth = 0
    ok = _propagate(cand, queue)
    while True:
        if ok:
            cell, bit = _choose(cand, randomize)
            if cell < 0:
                if found == 0:
                    for c in range(81):
                        solution[c] = LOG2[cand[c] & ALL] + 1
                    first = guesses
                found += 1
                if found >= limit:
                    break
                ok = False
                continue
            stack[depth, :] = cand
            cells[depth] = cell
            bits[depth] = bit
            depth += 1
            cand[cell] = bit
            guesses += 1
            ok = _propagate(cand, queue)
        else:
            if depth == 0:
                break
            depth -= 1
            cand[:] = stack[depth]
            cand[cells[depth]] &= ~bits[depth]
            ok = _propagate(cand, queue)
    if first < 0:
        first = guesses
    return found, first, guesses


@njit(cache=True)
def _puzzle_seed(puzzle: np.ndarray, seed: int) -> int:
    h = seed % 2147483629
    for c in range(81):
        h = (h * 1000003 + puzzle[c] + 1) % 2147483629
    return h


@njit(cache=True)
def _random_isomorph(puzzle: np.ndarray, out: np.ndarray) -> None:
    """A random member of the puzzle's symmetry class: digit relabelling, transpose, bands and
    rows within bands, stacks and columns within stacks."""
    digits = np.random.permutation(9) + 1
    rows = np.empty(9, np.int64)
    cols = np.empty(9, np.int64)
    for lines in (rows, cols):
        groups = np.random.permutation(3)
        for g in range(3):
            inner = np.random.permutation(3)
            for k in range(3):
                lines[3 * g + k] = 3 * groups[g] + inner[k]
    transpose = np.random.random() < 0.5
    for r in range(9):
        for c in range(9):
            src = rows[c] * 9 + cols[r] if transpose else rows[r] * 9 + cols[c]
            v = puzzle[src]
            out[r * 9 + c] = digits[v - 1] if v > 0 else 0


@njit(cache=True)
def _solve_and_rate(
    puzzles: np.ndarray, isomorphs: int, seed: int, full_tree: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = puzzles.shape[0]
    solutions = np.zeros((n, 81), np.uint8)
    counts = np.zeros(n, np.int64)
    ratings = np.zeros(n, np.float64)
    cand = np.empty(81, np.int64)
    stack = np.empty((82, 81), np.int64)
    queue = np.empty(81, np.int64)
    scratch = np.empty(81, np.uint8)
    variant = np.empty(81, np.uint8)
    for i in range(n):
        _init_state(puzzles[i], cand)
        found, first, total = _search(cand, 2, False, scratch, stack, queue)
        counts[i] = found
        if found > 0:
            solutions[i] = scratch
        if isomorphs <= 0:
            ratings[i] = total if full_tree else first
            continue
        np.random.seed(_puzzle_seed(puzzles[i], seed))
        acc = 0
        for _ in range(isomorphs):
            _random_isomorph(puzzles[i], variant)
            _init_state(variant, cand)
            found, first, total = _search(cand, 2 if full_tree else 1, False, scratch, stack, queue)
            acc += total if full_tree else first
        ratings[i] = acc / isomorphs
    return solutions, counts, ratings


def _as_puzzles(puzzles: np.ndarray) -> np.ndarray:
    p = np.ascontiguousarray(puzzles, dtype=np.uint8).reshape(-1, 81)
    if p.size and p.max() > 9:
        raise ValueError(f"puzzle cells must be 0 (blank) or 1..9, got max {p.max()}")
    return p


def solve_and_rate(
    puzzles: np.ndarray, isomorphs: int = 8, seed: int = 0, full_tree: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve and rate puzzles uint8/int8 [N, 81] (0 = blank, 1..9 = given).

    Returns (solutions uint8 [N, 81]: the first solution found, zeros when there is none;
    number of solutions capped at 2, int64 [N]; rating float64 [N]). The rating is the number
    of guesses of the search that finds the solution and proves it unique (stops at a second
    one), averaged over `isomorphs` random isomorphs of each puzzle, seeded by `seed` and the
    puzzle's own cells; with `isomorphs=0`, that count on the puzzle as given. With
    `full_tree=False` it counts only the guesses made before the first solution (about half,
    and noisier: coefficient of variation ≈ 0.22 against ≈ 0.13 over 8 isomorphs).
    """
    return _solve_and_rate(_as_puzzles(puzzles), int(isomorphs), int(seed), bool(full_tree))


# ---------------------------------------------------------------------------------------------
# Random minimal puzzles (easy).


@njit(cache=True)
def _is_needed(puzzle: np.ndarray, grid: np.ndarray, c: int, cand, stack, queue, scratch) -> bool:
    """Given puzzle's unique solution `grid`, whether cell c's given is needed: blanked, is
    there a solution with a different digit there? (An existence search, cheaper than
    counting two solutions.) Leaves that other solution in `scratch`."""
    keep = puzzle[c]
    puzzle[c] = 0
    _init_state(puzzle, cand)
    puzzle[c] = keep
    cand[c] = ALL & ~(1 << (grid[c] - 1))
    found, _, _ = _search(cand, 1, False, scratch, stack, queue)
    return found > 0


@njit(cache=True)
def _random_minimal(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    np.random.seed(seed)
    puzzles = np.zeros((count, 81), np.uint8)
    grids = np.zeros((count, 81), np.uint8)
    cand = np.empty(81, np.int64)
    stack = np.empty((82, 81), np.int64)
    queue = np.empty(81, np.int64)
    scratch = np.empty(81, np.uint8)
    for i in range(count):
        cand[:] = ALL
        _search(cand, 1, True, grids[i], stack, queue)
        puzzles[i] = grids[i]
        for c in np.random.permutation(81):
            if not _is_needed(puzzles[i], grids[i], c, cand, stack, queue, scratch):
                puzzles[i, c] = 0
    return puzzles, grids


def random_minimal_puzzles(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` random minimal puzzles: a random full grid, then its cells blanked in random
    order whenever the solution stays unique. Returns (puzzles, solutions), uint8 [count, 81].
    The first k puzzles of a larger count are the same as those of count k."""
    return _random_minimal(int(count), int(seed) % 2147483647)


# ---------------------------------------------------------------------------------------------
# Vicinity beam search (hard).


@njit(cache=True)
def _neighbours(puzzle: np.ndarray, grid: np.ndarray, plus_one: int) -> np.ndarray:
    """Candidate neighbours of a unique puzzle (not yet checked for uniqueness): for each given
    r, the puzzle without r if that stays unique; otherwise, with a second solution S2 in hand,
    the puzzle without r plus one clue at a cell where the solutions differ, taking its digit
    from either solution (the S2 ones move to another grid). Plus `plus_one` random +1 clues."""
    cand = np.empty(81, np.int64)
    stack = np.empty((82, 81), np.int64)
    queue = np.empty(81, np.int64)
    other = np.empty(81, np.uint8)
    out = np.empty((4096, 81), np.uint8)
    n = 0
    for r in range(81):
        if puzzle[r] == 0:
            continue
        base = puzzle.copy()
        base[r] = 0
        if not _is_needed(puzzle, grid, r, cand, stack, queue, other):
            out[n] = base
            n += 1
            continue
        for c in range(81):
            if other[c] == grid[c] or base[c] != 0 or n + 2 > out.shape[0]:
                continue
            out[n] = base
            out[n, c] = other[c]
            n += 1
            if c != r:
                out[n] = base
                out[n, c] = grid[c]
                n += 1
    blanks = np.nonzero(puzzle == 0)[0]
    for c in np.random.permutation(blanks)[:plus_one]:
        if n < out.shape[0]:
            out[n] = puzzle
            out[n, c] = grid[c]
            n += 1
    return out[:n]


class BeamResult(NamedTuple):
    """Every unique-solution puzzle a beam rated in full (its seeds included), in visiting order."""

    puzzles: np.ndarray  # uint8 [M, 81]
    solutions: np.ndarray  # uint8 [M, 81]
    ratings: np.ndarray  # float64 [M], as the beam rated them (biased up by the selection)
    iteration: np.ndarray  # int64 [M]: 0 for the seeds, k for puzzles first reached at step k


def beam_search(
    seed_puzzles: np.ndarray,
    beam_width: int,
    iterations: int,
    seed: int,
    neighbours_per_puzzle: int = 64,
    isomorphs: int = 8,
    plus_one: int = 2,
) -> BeamResult:
    """Vicinity beam search for hard puzzles from unique-solution `seed_puzzles` [S, 81].

    Each step draws up to `neighbours_per_puzzle` neighbours of every beam puzzle (see
    `_neighbours`), keeps the unique-solution ones not seen before, screens them by their
    rating as given (one search, no isomorphs), rates the best 2B over `isomorphs` isomorphs,
    and keeps the top `beam_width` of those and the current beam (elitist: a beam puzzle
    stays until a neighbour beats it). Returns every puzzle rated over isomorphs.
    """
    rng = np.random.default_rng([seed, 7])
    seeds = _as_puzzles(seed_puzzles)
    grids, counts, ratings = solve_and_rate(seeds, isomorphs, seed)
    if np.any(counts != 1):
        raise ValueError(
            f"beam_search needs unique-solution seed puzzles; rows {np.nonzero(counts != 1)[0]}"
            " have 0 or several solutions"
        )
    seen = {p.tobytes() for p in seeds}
    kept_p, kept_s, kept_r, kept_i = [seeds], [grids], [ratings], [np.zeros(len(seeds), np.int64)]
    top = np.argsort(-ratings, kind="stable")[:beam_width]
    beam_p, beam_s, beam_r = seeds[top], grids[top], ratings[top]
    for step in range(1, iterations + 1):
        pool = []
        for p, s in zip(beam_p, beam_s, strict=True):
            _seed_numba(int(rng.integers(2**31 - 1)))
            cands = _neighbours(p, s, plus_one)
            take = rng.permutation(len(cands))[:neighbours_per_puzzle]
            pool.append(cands[np.sort(take)])
        pool = np.concatenate(pool)
        fresh = [k for k, key in enumerate(map(bytes, pool)) if not (key in seen or seen.add(key))]
        pool = pool[fresh]
        sols, counts, quick = solve_and_rate(pool, 0, seed)
        pool, sols, quick = pool[counts == 1], sols[counts == 1], quick[counts == 1]
        if len(pool) == 0:
            break
        best = np.argsort(-quick, kind="stable")[: 2 * beam_width]
        pool, sols = pool[best], sols[best]
        _, _, rated = solve_and_rate(pool, isomorphs, seed)
        kept_p.append(pool)
        kept_s.append(sols)
        kept_r.append(rated)
        kept_i.append(np.full(len(pool), step, np.int64))
        beam_p = np.concatenate([beam_p, pool])
        beam_s = np.concatenate([beam_s, sols])
        beam_r = np.concatenate([beam_r, rated])
        top = np.argsort(-beam_r, kind="stable")[:beam_width]
        beam_p, beam_s, beam_r = beam_p[top], beam_s[top], beam_r[top]
    return BeamResult(
        np.concatenate(kept_p),
        np.concatenate(kept_s),
        np.concatenate(kept_r),
        np.concatenate(kept_i),
    )


@njit(cache=True)
def _seed_numba(seed: int) -> None:
    np.random.seed(seed)  # numba keeps its own generator, apart from numpy's


# ---------------------------------------------------------------------------------------------
# Symmetry invariant, rows, the mixed data set and its CSV files.


def symmetry_keys(puzzles: np.ndarray) -> list[bytes]:
    """A key per puzzle that is equal for puzzles equivalent under the sudoku symmetries
    (digit relabelling, transpose, band/row and stack/column permutations). Unequal keys
    prove two puzzles inequivalent; equal keys may (rarely) join inequivalent ones, which only
    makes the dedupe a little stricter. Per given: its row's and band's given counts paired
    with its column's and stack's (sorted, for the transpose), its box's count and how often
    its digit is given; the key is the sorted multiset of these."""
    p = _as_puzzles(puzzles).reshape(-1, 9, 9)
    given = p > 0
    row = given.sum(2)  # [N, 9]
    col = given.sum(1)
    band = row.reshape(-1, 3, 3).sum(2)
    stack = col.reshape(-1, 3, 3).sum(2)
    box = given.reshape(-1, 3, 3, 3, 3).sum((2, 4))  # [N, band, stack]
    digit_count = np.stack([(p == d).sum((1, 2)) for d in range(10)], 1)  # [N, 10]
    r = (row * 32 + np.repeat(band, 3, 1))[:, :, None]  # [N, 9, 1]
    c = (col * 32 + np.repeat(stack, 3, 1))[:, None, :]  # [N, 1, 9]
    lo, hi = np.minimum(r, c), np.maximum(r, c)
    bx = np.repeat(np.repeat(box, 3, 1), 3, 2)
    dc = np.take_along_axis(digit_count, p.reshape(-1, 81).astype(np.int64), 1).reshape(p.shape)
    feature = ((lo * 1024 + hi) * 16 + bx) * 16 + dc
    feature = np.where(given, feature, -1).reshape(-1, 81)
    return [bytes(k) for k in np.sort(feature, 1).astype(np.int64)]


def random_isomorphs(puzzles: np.ndarray, seed: int) -> np.ndarray:
    """One random symmetry transform of each puzzle (seeded by `seed` and the puzzle)."""
    return _random_isomorphs(_as_puzzles(puzzles), int(seed))


@njit(cache=True)
def _random_isomorphs(puzzles: np.ndarray, seed: int) -> np.ndarray:
    out = np.empty_like(puzzles)
    for i in range(puzzles.shape[0]):
        np.random.seed(_puzzle_seed(puzzles[i], seed))
        _random_isomorph(puzzles[i], out[i])
    return out


class SudokuRow(NamedTuple):
    """One CSV row; `lineage` (not written) names the beam or random draw it came from."""

    source: str
    question: str
    answer: str
    rating: float
    lineage: str


_CHARS = np.frombuffer(b".123456789", np.uint8)


def to_strings(grids: np.ndarray) -> list[str]:
    """uint8 [N, 81] (0 = blank) → 81-char strings, '.' for blank."""
    return [s.decode() for s in _CHARS[_as_puzzles(grids)].view("S81").ravel()]


def from_strings(lines: Sequence[str]) -> np.ndarray:
    """81-char strings ('.' or '0' blank) → uint8 [N, 81]."""
    raw = np.frombuffer("".join(lines).encode(), np.uint8).reshape(-1, 81)
    return np.where(raw == ord("."), 0, raw - ord("0")).astype(np.uint8)


def _derived_seed(*path: int) -> int:
    """An independent seed in [0, 2**31) for each purpose and index (numba takes 32-bit seeds)."""
    return int(np.random.SeedSequence(list(path)).generate_state(1)[0] >> 1)


def _split_counts(total: int, hard_fraction: float) -> tuple[int, int]:
    hard = round(total * hard_fraction)
    return total - hard, hard


def generate(
    train: int,
    test: int,
    seed: int,
    hard_fraction: float = 0.74,
    beam_width: int = 10,
    iterations: int = 60,
    neighbours_per_puzzle: int = 64,
    hard_min_rating: float = 20.0,
    max_per_beam: int = 150,
    isomorphs: int = 8,
    max_beams: int = 1000,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[SudokuRow], list[SudokuRow]]:
    """Generate (train rows, test rows): `hard_fraction` of each split hard, the rest easy.

    Easy rows are random minimal puzzles, each its own lineage. Hard rows come from beams, each
    seeded with `beam_width` fresh random minimal puzzles; a beam's puzzles rated at least
    `hard_min_rating` are re-rated with isomorphs independent of the beam's (its selection
    biases its own ratings up), those still at least `hard_min_rating` are kept, and at most
    `max_per_beam` of them, drawn at random, go to one split: whichever has the larger share of
    its hard rows still to fill. No two rows are equivalent under the sudoku symmetries
    (`symmetry_keys`). The `rating` column is the re-rating. Rows are shuffled within a split.
    Same arguments, same rows.
    """
    if min(train, test, seed) < 0 or not 0.0 <= hard_fraction <= 1.0:
        raise ValueError(
            "need train, test, seed ≥ 0 and 0 ≤ hard_fraction ≤ 1; got "
            f"train={train}, test={test}, seed={seed}, hard_fraction={hard_fraction}"
        )
    say = progress or (lambda _msg: None)
    rate_seed = _derived_seed(seed, 1)  # isomorphs apart from the beams', whose picks they check
    rows: dict[str, list[SudokuRow]] = {"train": [], "test": []}
    seen: set[bytes] = set()
    dropped = [0]  # rows left out as equivalent to one already kept

    def admit(split, source, lineages, puzzles, solutions, ratings, limit) -> int:
        """Append up to `limit` rows whose symmetry class is new; returns how many."""
        keys = symmetry_keys(puzzles)
        questions, answers = to_strings(puzzles), to_strings(solutions)
        added = 0
        for k, key in enumerate(keys):
            if added == limit:
                break
            if key in seen:
                dropped[0] += 1
                continue
            seen.add(key)
            rows[split].append(
                SudokuRow(source, questions[k], answers[k], float(ratings[k]), lineages[k])
            )
            added += 1
        return added

    # Easy: random minimal puzzles, each its own lineage; a spare 5 % covers equivalent repeats.
    easy = {s: _split_counts(n, hard_fraction)[0] for s, n in (("train", train), ("test", test))}
    for split, stream in (("train", 1), ("test", 2)):
        if easy[split] == 0:
            continue
        puzzles, solutions = random_minimal_puzzles(
            easy[split] * 21 // 20 + 8, _derived_seed(seed, 2, stream)
        )
        _, _, ratings = solve_and_rate(puzzles, isomorphs, rate_seed)
        lineages = [f"easy-{split}-{k}" for k in range(len(puzzles))]
        got = admit(split, EASY_SOURCE, lineages, puzzles, solutions, ratings, easy[split])
        if got < easy[split]:
            raise RuntimeError(
                f"only {got} distinct easy puzzles for {split}, wanted {easy[split]}"
            )
        say(f"easy {split}: {got} random minimal puzzles")

    # Hard: beams, each lineage wholly in one split.
    need = {
        "train": _split_counts(train, hard_fraction)[1],
        "test": _split_counts(test, hard_fraction)[1],
    }
    have = {"train": 0, "test": 0}
    rng = np.random.default_rng([seed, 5])
    beam = 0
    while open_splits := [s for s in ("train", "test") if have[s] < need[s]]:
        if beam == max_beams:
            raise RuntimeError(
                f"{max_beams} beams gave {have} hard puzzles, short of {need}: lower "
                f"hard_min_rating ({hard_min_rating}) or raise iterations ({iterations})"
            )
        split = max(open_splits, key=lambda s: (need[s] - have[s]) / need[s])
        start = time.perf_counter()
        seeds, _ = random_minimal_puzzles(beam_width, _derived_seed(seed, 3, beam))
        found = beam_search(
            seeds,
            beam_width,
            iterations,
            _derived_seed(seed, 4, beam),
            neighbours_per_puzzle=neighbours_per_puzzle,
            isomorphs=isomorphs,
        )
        hard = found.ratings >= hard_min_rating
        puzzles, solutions = found.puzzles[hard], found.solutions[hard]
        _, _, ratings = solve_and_rate(puzzles, isomorphs, rate_seed)
        keep = np.nonzero(ratings >= hard_min_rating)[0]
        keep = rng.permutation(keep)
        limit = min(max_per_beam, need[split] - have[split])
        added = admit(
            split,
            HARD_SOURCE,
            [f"beam-{beam}"] * len(keep),
            puzzles[keep],
            solutions[keep],
            ratings[keep],
            limit,
        )
        have[split] += added
        say(
            f"beam {beam} → {split}: {added} hard puzzles (of {len(found.ratings)} rated, "
            f"{len(keep)} ≥ {hard_min_rating:g}, max {found.ratings.max():.0f}) "
            f"in {time.perf_counter() - start:.1f} s; train {have['train']}/{need['train']}, "
            f"test {have['test']}/{need['test']}"
        )
        beam += 1
    say(f"{dropped[0]} puzzles left out as equivalent to kept ones")
    out = []
    for split, stream in (("train", 1), ("test", 2)):
        order = np.random.default_rng([seed, 6, stream]).permutation(len(rows[split]))
        out.append([rows[split][k] for k in order])
    return out[0], out[1]


def write_csv(
    directory: str | Path, train_rows: Sequence[SudokuRow], test_rows: Sequence[SudokuRow]
) -> None:
    """Write train.csv and test.csv in the published layout (header `source,question,answer,
    rating`; ratings written in full, shortest form)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.csv", train_rows), ("test.csv", test_rows)):
        lines = [CSV_HEADER] + [
            f"{r.source},{r.question},{r.answer},{np.format_float_positional(r.rating, trim='-')}"
            for r in rows
        ]
        (directory / name).write_text("\n".join(lines) + "\n", newline="\n")


def rating_summary(ratings: Sequence[float] | np.ndarray) -> str:
    """A short distribution: count, mean, percentiles and counts by bucket."""
    r = np.asarray(ratings, np.float64)
    if r.size == 0:
        return "n=0"
    q = np.percentile(r, [10, 25, 50, 75, 90, 99])
    edges = [0, 1, 3, 10, 30, 100, 300]
    labels = ["0", "(0,1]", "(1,3]", "(3,10]", "(10,30]", "(30,100]", "(100,300]", ">300"]
    bucket = np.where(r == 0, 0, np.searchsorted(edges, r, side="left"))
    counts = np.bincount(bucket, minlength=len(labels))
    return (
        f"n={r.size} mean={r.mean():.2f} max={r.max():.1f} "
        + "p10/25/50/75/90/99="
        + "/".join(f"{x:.1f}" for x in q)
        + " | "
        + " ".join(f"{lab}:{c}" for lab, c in zip(labels, counts, strict=True) if c)
    )


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m datasets.generators.sudoku", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="directory for train.csv and test.csv")
    ap.add_argument("--hard-fraction", type=float, default=0.74)
    ap.add_argument("--beam-width", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=60, help="beam steps per beam")
    ap.add_argument("--hard-min-rating", type=float, default=20.0)
    ap.add_argument("--max-per-beam", type=int, default=150, help="hard puzzles kept per beam")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    train, test = generate(
        args.train,
        args.test,
        args.seed,
        hard_fraction=args.hard_fraction,
        beam_width=args.beam_width,
        iterations=args.iterations,
        hard_min_rating=args.hard_min_rating,
        max_per_beam=args.max_per_beam,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    write_csv(args.out, train, test)
    print(
        f"wrote {len(train)} train and {len(test)} test rows to {args.out} "
        f"in {time.perf_counter() - start:.0f} s"
    )
    for split, rows in (("train", train), ("test", test)):
        for source in (EASY_SOURCE, HARD_SOURCE):
            ratings = [r.rating for r in rows if r.source == source]
            print(f"{split:5s} {source:14s} {rating_summary(ratings)}")


if __name__ == "__main__":
    main()

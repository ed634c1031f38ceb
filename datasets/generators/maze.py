"""Offline substitute for Maze-Hard (HF sapientinc/maze-30x30-hard-1k): random-wall 30×30
mazes whose shortest path is long, written in the published CSV layout (DATASETS.md
"Maze-Hard", TRM_SPEC §3.3).

    python -m datasets.generators.maze --train 1000 --test 1000 --seed 0 --out data/maze
    python -m datasets.generate maze --train 1000 --test 1000 --seed 0 --out data/maze

Files: `train.csv` and `test.csv` with header `source,question,answer,rating,num_shortest_paths`.
`question` and `answer` are size² characters (row-major) over "# SGo": wall, open, start, goal,
path. The answer is the question with the interior cells of one shortest path marked 'o'.

Recipe (Searchformer-style, Lehnert et al. 2024). Per candidate: a wall count W uniform over the
integers [round(0.3·n), round(0.5·n)] (270..450 of n = 900), the walls a uniform W-subset of
the cells, then S and G distinct and uniform among the free cells. One (S, G) per wall layout,
so kept mazes follow the recipe's law conditioned on the filter (several pairs per layout would
favour layouts with many long pairs). The kernel draws S and G first and each other cell only
when a search touches it (same law, checked against exact enumeration in the tests).
A candidate is kept when `steps >= min_path_length`, where steps = number of moves from S to G =
`rating` = (number of 'o' cells) + 1; the default 111 is the spec's "longer than 110". The
published set shows 110–154; its lower end 110 suggests a count or a filter one lower than ours
(e.g. ≥ 110), which `--min-path-length 110` reproduces. Duplicates (up to the 8 dihedral
transforms) are dropped within a set, and the test set excludes every train maze.
Seed 0, 1000 + 1000: steps 111–146 (median 114, 82 % below 120), wall fraction 0.30–0.47
(mean 0.37), num_shortest_paths 16 to 2.6e12, median 4.8e6 (train) and 5.7e6 (test).

Label tie-break (random-wall mazes have millions of shortest paths, so exact match needs one
rule, applied to train and test alike): walk from S, always stepping to a neighbour whose BFS
distance to G is one less, trying the directions in the fixed order up, right, down, left.
Equivalently: the lexicographically smallest move string (U < R < D < L) among shortest paths,
or the branch of S in the BFS tree rooted at G whose parent pointers prefer up/right/down/left.
Why this rule: each cell's successor is a function of its four neighbours' distances only — the
same translation-invariant, local rule at every cell — so a grid model can compute the label as
two local waves (distances spreading from G, then the marking spreading from S along the
pointers). Rules that depend on the path's history (fewest turns) or on absolute position (hug
the diagonal) have no such local form. The rule is not dihedral-invariant: a transformed label is
still a valid shortest path of the transformed maze, but usually not the one the rule picks
there; `solve` relabels a transformed maze if consistent labels are wanted.

`num_shortest_paths` is counted exactly by dynamic programming over the BFS layers from G, in
int64 saturating at 2^63 − 1 (`SATURATED`; an open 64×64 grid reaches it, these mazes do not).

Representations: arrays hold ASCII codes of "# SGo" (uint8; `row.tobytes().decode()` is the CSV
string) or TRM tokens (wall 1, open 2, S 3, G 4, path 5, PAD 0; vocab 6). Functions that take
grids accept either, or str, and tell them apart by value (tokens are all ≤ 5, codes ≥ 32).

Determinism: candidates come in fixed pools of numpy PCG64([seed, stream]) words, read in order,
so the output depends only on the arguments (not on `workers`), and a smaller `count` gives a
prefix of a larger one.

Speed: about 1 candidate in 74,000 is kept, at 2.5–5 µs each (lazy drawing and a branch-free
bidirectional BFS), so 2.8–5 mazes per second per core: 2.8 per CPU-second measured on a 2-core
machine busy with other jobs (the low end), where 1000 + 1000 took 18 min. `workers` threads
(default: all usable cores) add the free cores.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from numba import njit

from datasets.dihedral import DIHEDRAL_INVERSE, DIHEDRAL_NAMES  # noqa: F401 (re-exported)

CHARSET = "# SGo"
PAD, WALL, OPEN, START, GOAL, PATH = 0, 1, 2, 3, 4, 5  # TRM tokens (TRM_SPEC §3.3)
UNDRAWN = 0  # generator-internal: a cell whose state is not drawn yet
VOCAB_SIZE = 6
SATURATED = np.iinfo(np.int64).max  # num_shortest_paths ceiling
CSV_COLUMNS = ("source", "question", "answer", "rating", "num_shortest_paths")

_CODES = np.frombuffer(CHARSET.encode("ascii"), dtype=np.uint8)  # token t ↔ _CODES[t - 1]
_TOKEN_OF_CODE = np.zeros(256, dtype=np.uint8)  # unknown characters → PAD (never valid)
_TOKEN_OF_CODE[_CODES] = np.arange(WALL, PATH + 1, dtype=np.uint8)
# Fixed, so the stream (and the output) does not depend on `count`: 2 MiB of random words
# (~3400 candidates of a 30×30 maze) per kernel call, at most 64 kept mazes per call.
_RANDOM_WORDS = 1 << 18
_KEPT_PER_CALL = 64
_MAX_FRUITLESS_CANDIDATES = 50_000_000  # give up when the filter is (nearly) unsatisfiable


# ---------------------------------------------------------------------------------------------
# numba kernels (flat row-major token grids)


@njit(cache=True)
def _neighbour(cell, direction, size):
    """Neighbour of `cell` in direction 0..3 = up, right, down, left; -1 off the grid."""
    row = cell // size
    col = cell - row * size
    if direction == 0:
        return cell - size if row > 0 else -1
    if direction == 1:
        return cell + 1 if col < size - 1 else -1
    if direction == 2:
        return cell + size if row < size - 1 else -1
    return cell - 1 if col > 0 else -1


@njit(cache=True)
def _bfs(grid, size, source, target, dist, queue):
    """Distances from `source` through non-wall cells into `dist` (-1 = not reached), visiting
    cells in `queue` order (non-decreasing distance). Stops as soon as `target` is reached
    (target -1: never). Returns the number of cells queued."""
    dist[:] = -1
    dist[source] = 0
    queue[0] = source
    head, tail = 0, 1
    while head < tail:
        cell = queue[head]
        head += 1
        for direction in range(4):
            nb = _neighbour(cell, direction, size)
            if nb >= 0 and dist[nb] < 0 and grid[nb] != WALL:
                dist[nb] = dist[cell] + 1
                queue[tail] = nb
                tail += 1
                if nb == target:
                    return tail
    return tail


@njit(cache=True)
def _u32(raw, pos):
    """The pos-th 32-bit value of a stream of 64-bit words (high half first)."""
    shift = np.uint64(32 - 32 * (pos & 1))
    return np.int64((raw[pos >> 1] >> shift) & np.uint64(0xFFFFFFFF))


@njit(cache=True)
def _expand(grid, width, queue, seen, seen_other, stamp, head, tail, raw, pos, walls_left,
            cells_end):  # fmt: skip
    """Grow one side of a bidirectional BFS by one layer (queue[head:tail]) on a padded grid,
    drawing cells on first touch. Returns (new tail, whether the sides met, pos, walls_left).
    Branch-free, because walls are random and branches on them would mispredict."""
    met = 0
    new_tail = tail
    for q in range(head, tail):
        cell = queue[q]
        for nb in (cell - width, cell + 1, cell + width, cell - 1):
            state = grid[nb]
            undrawn = np.int64(state == UNDRAWN)
            # Wall with probability walls_left / cells_left (cells_left = cells_end - pos):
            # the walls are then a uniform subset whatever order the cells are drawn in.
            wall = np.int64((_u32(raw, pos) * (cells_end - pos)) >> 32 < walls_left)
            state = state + undrawn * (OPEN - wall)  # UNDRAWN is 0: becomes WALL or OPEN
            grid[nb] = state
            pos += undrawn
            walls_left -= undrawn * wall
            fresh = np.int64(state == OPEN) & np.int64(seen[nb] != stamp)
            seen[nb] += fresh * (stamp - seen[nb])
            queue[new_tail] = nb
            new_tail += fresh
            met |= fresh & np.int64(seen_other[nb] == stamp)
    return new_tail, met > 0, pos, walls_left


@njit(cache=True, nogil=True)  # nogil: threads run kernel calls in parallel
def _search(raw, size, low, high, min_steps, out_grids, out_steps):
    """Candidates drawn from the 32-bit values of `raw`, one after another, until fewer than
    one candidate's worth of values is left or the outputs are full. Each candidate: wall count
    W uniform in [low, high], S and G distinct uniform cells, and the W walls a uniform subset
    of the other cells — the same distribution as walls first and S, G among the free cells.
    Cells are drawn lazily, only when the bidirectional BFS touches them, which is what makes a
    rejected candidate cheap; kept ones are completed in cell order. Kept grids (tokens, S and
    G marked) and their steps go to the outputs. Returns (candidates, kept)."""
    n = size * size
    width = size + 2  # a border of walls removes bounds checks
    # Whole uint64 words, so a reset copies 8 cells at a time (numba's grid[:] = ... is slower).
    template = np.full((width * width + 7) // 8 * 8, WALL, dtype=np.uint8)
    cell_at = np.empty(n, dtype=np.int64)
    for c in range(n):
        cell_at[c] = (c // size + 1) * width + c % size + 1
        template[cell_at[c]] = UNDRAWN
    grid = np.empty_like(template)
    template_words, grid_words = template.view(np.uint64), grid.view(np.uint64)
    seen_s = np.zeros(width * width, dtype=np.int32)  # == candidate number: reached
    seen_g = np.zeros(width * width, dtype=np.int32)
    queue_s = np.empty(width * width, dtype=np.int32)
    queue_g = np.empty(width * width, dtype=np.int32)
    pos, candidates, kept = 0, 0, 0
    # A candidate uses at most n + 1 values; `_expand` may read (not use) one more.
    while 2 * len(raw) - pos >= n + 2 and kept < len(out_steps):
        candidates += 1
        walls_left = low + ((_u32(raw, pos) * (high - low + 1)) >> 32)
        s = (_u32(raw, pos + 1) * n) >> 32
        g = (_u32(raw, pos + 2) * (n - 1)) >> 32
        if g >= s:
            g += 1
        pos += 3
        cells_end = pos + n - 2
        start, goal = cell_at[s], cell_at[g]
        for i in range(len(template_words)):
            grid_words[i] = template_words[i]
        grid[start] = OPEN
        grid[goal] = OPEN
        seen_s[start] = candidates
        seen_g[goal] = candidates
        queue_s[0] = start
        queue_g[0] = goal
        head_s, tail_s, head_g, tail_g = 0, 1, 0, 1
        # Layers grown so far on both sides; when the sides first meet it is the distance.
        steps, met = 0, False
        while not met and head_s < tail_s and head_g < tail_g:
            steps += 1
            if tail_s - head_s <= tail_g - head_g:  # grow the smaller frontier
                new_tail, met, pos, walls_left = _expand(
                    grid, width, queue_s, seen_s, seen_g, candidates, head_s, tail_s, raw, pos,
                    walls_left, cells_end
                )  # fmt: skip
                head_s, tail_s = tail_s, new_tail
            else:
                new_tail, met, pos, walls_left = _expand(
                    grid, width, queue_g, seen_g, seen_s, candidates, head_g, tail_g, raw, pos,
                    walls_left, cells_end
                )  # fmt: skip
                head_g, tail_g = tail_g, new_tail
        if met and steps >= min_steps:
            for c in range(n):  # draw the cells no search touched, in cell order
                if grid[cell_at[c]] == UNDRAWN:
                    wall = (_u32(raw, pos) * (cells_end - pos)) >> 32 < walls_left
                    grid[cell_at[c]] = WALL if wall else OPEN
                    walls_left -= wall
                    pos += 1
                out_grids[kept, c] = grid[cell_at[c]]
            out_grids[kept, s] = START
            out_grids[kept, g] = GOAL
            out_steps[kept] = steps
            kept += 1
    return candidates, kept


@njit(cache=True)
def _solve(grid, size, start, goal, answer):
    """Label `answer` (a copy of grid with the tie-break path marked) and return
    (steps, number of shortest paths); (-1, 0) when G is unreachable."""
    n = size * size
    dist = np.empty(n, dtype=np.int64)
    queue = np.empty(n, dtype=np.int64)
    tail = _bfs(grid, size, goal, -1, dist, queue)
    answer[:] = grid
    steps = dist[start]
    if steps < 0:
        return -1, 0
    # Paths to G from each cell, in BFS order so every predecessor layer is complete.
    paths = np.zeros(n, dtype=np.int64)
    paths[goal] = 1
    for q in range(1, tail):
        cell = queue[q]
        if dist[cell] > steps:
            break
        total = 0
        for direction in range(4):
            nb = _neighbour(cell, direction, size)
            if nb >= 0 and dist[nb] == dist[cell] - 1:
                total = SATURATED if total > SATURATED - paths[nb] else total + paths[nb]
        paths[cell] = total
    cell = start
    while cell != goal:
        for direction in range(4):  # tie-break: first of up, right, down, left
            nb = _neighbour(cell, direction, size)
            if nb >= 0 and dist[nb] == dist[cell] - 1:
                cell = nb
                break
        if cell != goal:
            answer[cell] = PATH
    return steps, paths[start]


@njit(cache=True)
def _shortest_steps(grids, size):
    """Shortest S→G steps per token grid; -1 when unreachable, -2 when the grid does not hold
    exactly one S and one G."""
    count, n = grids.shape
    out = np.full(count, -2, dtype=np.int64)
    dist = np.empty(n, dtype=np.int64)
    queue = np.empty(n, dtype=np.int64)
    for b in range(count):
        start, goal, starts, goals = -1, -1, 0, 0
        for i in range(n):
            if grids[b, i] == START:
                start = i
                starts += 1
            elif grids[b, i] == GOAL:
                goal = i
                goals += 1
        if starts == 1 and goals == 1:
            _bfs(grids[b], size, goal, start, dist, queue)
            out[b] = dist[start]
    return out


# ---------------------------------------------------------------------------------------------
# representations


def _as_uint8(grids) -> tuple[np.ndarray, bool]:
    """uint8 array of `grids` (str, sequence of str, or array) and whether it came from str."""
    if isinstance(grids, str):
        return np.frombuffer(grids.encode("ascii"), dtype=np.uint8).copy(), True
    if isinstance(grids, Sequence) and len(grids) and isinstance(grids[0], str):
        return np.stack([np.frombuffer(g.encode("ascii"), dtype=np.uint8) for g in grids]), True
    array = np.asarray(grids)
    if array.dtype.kind == "U":
        return _as_uint8(array.tolist())
    if array.dtype.kind not in "iu":
        raise ValueError(f"maze grids must be str or integer arrays, got dtype {array.dtype}")
    return array.astype(np.uint8), False


def to_tokens(grids, strict: bool = True) -> np.ndarray:
    """TRM tokens (uint8, 1..5) of grids given as str, ASCII codes or tokens (same shape).
    With strict=False unknown characters become PAD instead of raising."""
    array, _ = _as_uint8(grids)
    if array.size and array.max() <= PATH:
        return array
    tokens = _TOKEN_OF_CODE[array]
    if strict and (tokens == PAD).any():
        bad = sorted({chr(c) for c in np.unique(array[tokens == PAD])})
        raise ValueError(f"maze characters must be in {CHARSET!r}, found {bad}")
    return tokens


def to_codes(grids) -> np.ndarray:
    """ASCII codes of "# SGo" (uint8) of grids given as str, ASCII codes or tokens."""
    tokens = to_tokens(grids)
    if (tokens == PAD).any():
        raise ValueError("PAD (0) has no maze character")
    return _CODES[tokens - 1]


def _square_side(cells: int) -> int:
    side = math.isqrt(cells)
    if side * side != cells or side < 2:
        raise ValueError(f"a maze has size² cells, got {cells}")
    return side


def _flat_batch(grids, batched: bool, strict: bool) -> tuple[np.ndarray, int]:
    """Tokens [count, n] and the side. Single grids: str, [n] or [side, side];
    batches: sequence of str, [count, n] or [count, side, side]."""
    tokens = to_tokens(grids, strict)
    if tokens.ndim == 1 + batched:
        tokens = tokens.reshape(tokens.shape[0], -1) if batched else tokens.reshape(1, -1)
    elif tokens.ndim == 2 + batched and tokens.shape[-1] == tokens.shape[-2]:
        tokens = tokens.reshape(-1 if batched else 1, tokens.shape[-1] ** 2)
    else:
        kind = "[count, n] or [count, side, side]" if batched else "[n] or [side, side]"
        raise ValueError(f"expected maze grids shaped {kind}, got {tokens.shape}")
    return np.ascontiguousarray(tokens), _square_side(tokens.shape[1])


# ---------------------------------------------------------------------------------------------
# dihedral transforms (TRM_SPEC §3.3 order; rot90 is numpy's counter-clockwise rotation)


def dihedral(grid: np.ndarray, k: int, flat: bool = False) -> np.ndarray:
    """Transform k (see DIHEDRAL_NAMES) of the last two axes, or with flat=True of the last axis
    read as a row-major square grid. Returns a new contiguous array."""
    array = np.asarray(grid)
    if flat:
        side = _square_side(array.shape[-1])
        square = array.reshape(*array.shape[:-1], side, side)
        return dihedral(square, k).reshape(array.shape)
    if k == 0:
        out = array
    elif k in (1, 2, 3):
        out = np.rot90(array, k, axes=(-2, -1))
    elif k == 4:
        out = np.flip(array, -1)
    elif k == 5:
        out = np.flip(array, -2)
    elif k == 6:
        out = np.swapaxes(array, -1, -2)
    elif k == 7:  # reflection in the anti-diagonal: out[i, j] = a[s-1-j, s-1-i]
        out = np.flip(np.rot90(array, 1, axes=(-2, -1)), -1)
    else:
        raise ValueError(f"dihedral id must be in 0..7, got {k}")
    return np.ascontiguousarray(out)


def inverse_dihedral(grid: np.ndarray, k: int, flat: bool = False) -> np.ndarray:
    """Undo `dihedral(·, k)`: rot90 and rot270 swap, the others are their own inverse."""
    return dihedral(grid, int(DIHEDRAL_INVERSE[k]), flat)


def _canonical_keys(tokens: np.ndarray, size: int) -> list[bytes]:
    """One key per flat grid, equal for grids that are dihedral images of each other."""
    squares = tokens.reshape(-1, size, size)
    images = np.stack([dihedral(squares, k) for k in range(8)], 1).reshape(len(tokens), 8, size**2)
    return [min(row.tobytes() for row in grid_images) for grid_images in images]


# ---------------------------------------------------------------------------------------------
# solving and checking


def solve(question):
    """(answer, steps, num_shortest_paths) of one maze given as str, [n] or [side, side] codes or
    tokens; the answer has the question's representation and shape and marks the tie-break
    path. Raises ValueError when the maze has no single S and G or G is unreachable."""
    tokens, size = _flat_batch(question, batched=False, strict=True)
    grid = tokens[0]
    if (grid == PATH).any() or (grid == PAD).any():
        raise ValueError("a question holds only walls, open cells, S and G")
    starts, goals = np.flatnonzero(grid == START), np.flatnonzero(grid == GOAL)
    if len(starts) != 1 or len(goals) != 1:
        raise ValueError(f"a maze needs one S and one G, got {len(starts)} and {len(goals)}")
    answer = np.empty_like(grid)
    steps, paths = _solve(grid, size, starts[0], goals[0], answer)
    if steps < 0:
        raise ValueError("G is not reachable from S")
    if isinstance(question, str):
        out = to_codes(answer).tobytes().decode("ascii")
    else:
        raw, _ = _as_uint8(question)
        out = (answer if raw.max() <= PATH else to_codes(answer)).reshape(raw.shape)
    return out, int(steps), int(paths)


def valid_shortest_paths(questions, predictions) -> np.ndarray:
    """Per maze: does the prediction mark a shortest S→G path and change nothing else?
    Both are batches (sequence of str, [count, n] or [count, side, side]) of codes or tokens.

    Checked: only open cells change, and only to 'o'; the 'o' count is shortest steps − 1; on
    the cells {o, S, G}, S and G have exactly one neighbour and every 'o' two. That set is then
    a simple S→G path (its S-component is a path ending at G with ≥ steps + 1 cells, leaving no
    cells for a cycle), of shortest length, so a valid shortest path."""
    q, size = _flat_batch(questions, batched=True, strict=True)
    p, _ = _flat_batch(predictions, batched=True, strict=False)
    if p.shape != q.shape:
        raise ValueError(f"predictions {p.shape} do not match questions {q.shape}")
    if ((q == PAD) | (q == PATH)).any():
        raise ValueError("questions hold only walls, open cells, S and G")
    steps = _shortest_steps(q, size)
    if (steps == -2).any():
        bad = np.flatnonzero(steps == -2)[:5].tolist()
        raise ValueError(f"questions {bad} do not hold exactly one S and one G")
    marked = p == PATH
    only_path_added = ((p == q) | ((q == OPEN) & marked)).all(1)
    right_length = marked.sum(1) == steps - 1
    ends = (q == START) | (q == GOAL)
    on = (marked | ends).reshape(-1, size, size)
    degree = np.zeros(on.shape, dtype=np.int8)
    degree[:, 1:] += on[:, :-1]
    degree[:, :-1] += on[:, 1:]
    degree[:, :, 1:] += on[:, :, :-1]
    degree[:, :, :-1] += on[:, :, 1:]
    wanted = np.where(ends, 1, 2)
    degree_ok = ((degree.reshape(q.shape) == wanted) | ~on.reshape(q.shape)).all(1)
    return only_path_added & right_length & degree_ok & (steps > 0)


def is_valid_shortest_path(question_grid, predicted_grid) -> bool:
    """`valid_shortest_paths` for one maze (str, [n] or [side, side]; codes or tokens)."""
    q, _ = _flat_batch(question_grid, batched=False, strict=True)
    p, _ = _flat_batch(predicted_grid, batched=False, strict=False)
    return bool(valid_shortest_paths(q, p)[0])


# ---------------------------------------------------------------------------------------------
# generation


def _default_workers() -> int:
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # not on Linux
        return max(1, min(8, os.cpu_count() or 1))


def generate_mazes(
    count: int,
    seed: int,
    min_path_length: int = 111,
    size: int = 30,
    wall_fraction: tuple[float, float] = (0.3, 0.5),
    *,
    stream: int = 0,
    exclude=None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """`count` distinct mazes with at least `min_path_length` steps from S to G.

    Returns uint8 [count, size²] ASCII codes "questions" and "answers", and int64 [count]
    "rating" (steps), "num_shortest_paths" and "wall_count". The random stream is
    PCG64([seed, stream]). Mazes that are dihedral images of a maze in `exclude` (questions in
    any representation) or of an earlier output are skipped. `workers` threads (default: the
    usable cores) search in parallel; the output does not depend on it. `progress(kept,
    candidates)` is called after every round of kernel calls."""
    n = size * size
    low, high = round(wall_fraction[0] * n), round(wall_fraction[1] * n)
    if not 0 <= low <= high <= n - 2:
        raise ValueError(f"wall_fraction={wall_fraction} must give 0 <= walls <= {n - 2}")
    if count < 0 or min_path_length < 1:
        raise ValueError(
            f"need count >= 0 and min_path_length >= 1, got {count}, {min_path_length}"
        )
    seen: set[bytes] = set()
    if exclude is not None and len(exclude):
        excluded, excluded_size = _flat_batch(exclude, batched=True, strict=True)
        if excluded_size == size:  # mazes of another size cannot collide
            seen.update(_canonical_keys(excluded, size))
    rng = np.random.default_rng([seed, stream])
    workers = workers or _default_workers()

    def search(raw: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        grids = np.empty((_KEPT_PER_CALL, n), dtype=np.uint8)
        steps = np.empty(_KEPT_PER_CALL, dtype=np.int64)
        tried, kept = _search(raw, size, low, high, min_path_length, grids, steps)
        return tried, grids[:kept], steps[:kept]

    questions, answers, ratings, paths, walls = [], [], [], [], []
    candidates = 0
    with ThreadPoolExecutor(workers) as executor:
        while len(questions) < count:
            if not questions and candidates >= _MAX_FRUITLESS_CANDIDATES:
                raise RuntimeError(
                    f"no maze with >= {min_path_length} steps in {candidates} candidates "
                    f"(size={size}, wall_fraction={wall_fraction}); lower min_path_length"
                )
            # Pools are drawn and read in order, so the output does not depend on `workers`.
            pools = [rng.bit_generator.random_raw(_RANDOM_WORDS) for _ in range(workers)]
            for tried, grids, found_steps in executor.map(search, pools):
                candidates += tried
                keys = _canonical_keys(grids, size)
                for grid, found, key in zip(grids, found_steps, keys, strict=True):
                    if key in seen or len(questions) == count:
                        continue
                    seen.add(key)
                    answer = np.empty_like(grid)
                    start = np.flatnonzero(grid == START)[0]
                    goal = np.flatnonzero(grid == GOAL)[0]
                    steps, num_paths = _solve(grid, size, start, goal, answer)
                    if steps != found:  # the two searches must agree
                        raise AssertionError(f"bidirectional BFS gave {found} steps, BFS {steps}")
                    questions.append(_CODES[grid - 1])
                    answers.append(_CODES[answer - 1])
                    ratings.append(steps)
                    paths.append(num_paths)
                    walls.append(int((grid == WALL).sum()))
            if progress is not None:
                progress(len(questions), candidates)
    return {
        "questions": np.array(questions, dtype=np.uint8).reshape(count, n),
        "answers": np.array(answers, dtype=np.uint8).reshape(count, n),
        "rating": np.array(ratings, dtype=np.int64),
        "num_shortest_paths": np.array(paths, dtype=np.int64),
        "wall_count": np.array(walls, dtype=np.int64),
    }


def write_csv(directory, train: dict, test: dict, source: str = "trm-lab-maze") -> list[Path]:
    """train.csv and test.csv in the published layout plus `num_shortest_paths`; returns paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, mazes in (("train", train), ("test", test)):
        path = directory / f"{name}.csv"
        with open(path, "w", newline="", encoding="ascii") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            for question, answer, rating, num_paths in zip(
                mazes["questions"],
                mazes["answers"],
                mazes["rating"],
                mazes["num_shortest_paths"],
                strict=True,
            ):
                writer.writerow(
                    (
                        source,
                        question.tobytes().decode("ascii"),
                        answer.tobytes().decode("ascii"),
                        int(rating),
                        int(num_paths),
                    )
                )
        written.append(path)
    return written


def summary(mazes: dict, seconds: float | None = None) -> str:
    """A few lines: path lengths, wall fraction, number of shortest paths (and speed)."""
    count = len(mazes["rating"])
    if count == 0:
        return "0 mazes"
    ratings, paths = mazes["rating"], mazes["num_shortest_paths"]
    fraction = mazes["wall_count"] / mazes["questions"].shape[1]
    steps_q = np.percentile(ratings, [0, 25, 50, 75, 100]).astype(int).tolist()
    edges = np.arange(ratings.min() // 10 * 10, ratings.max() + 11, 10)
    histogram = np.histogram(ratings, edges)[0]
    paths_q = np.percentile(paths.astype(np.float64), [0, 50, 100])
    lines = [
        f"{count} mazes" + (f" in {seconds:.1f} s ({count / seconds:.1f}/s)" if seconds else ""),
        f"  steps min/q1/median/q3/max: {'/'.join(map(str, steps_q))}",
        "  steps histogram: "
        + ", ".join(f"{lo}-{lo + 9}: {c}" for lo, c in zip(edges[:-1], histogram, strict=True)),
        f"  wall fraction: mean {fraction.mean():.3f}, min {fraction.min():.3f}, "
        f"max {fraction.max():.3f}",
        f"  num_shortest_paths min/median/max: {paths_q[0]:.3g}/{paths_q[1]:.3g}/{paths_q[2]:.3g}"
        + (f" ({int((paths == SATURATED).sum())} saturated)" if (paths == SATURATED).any() else ""),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="maze",
        description="Generate a Maze-Hard substitute (train.csv, test.csv) in the HF layout.",
    )
    parser.add_argument("--train", type=int, default=1000, help="train mazes (default 1000)")
    parser.add_argument("--test", type=int, default=1000, help="test mazes (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--min-path-length", type=int, default=111, help="least S→G steps kept (default 111)"
    )
    parser.add_argument("--size", type=int, default=30, help="grid side (default 30)")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    last_report = [began]

    def report(split: str, wanted: int) -> Callable[[int, int], None]:
        def show(kept: int, candidates: int) -> None:
            now = time.perf_counter()
            if now - last_report[0] >= 30:  # a line every half minute on stderr
                last_report[0] = now
                print(f"{split}: {kept}/{wanted} mazes from {candidates:,} candidates, "
                      f"{now - began:.0f} s", file=sys.stderr, flush=True)  # fmt: skip

        return show

    settings = dict(min_path_length=args.min_path_length, size=args.size)
    train = generate_mazes(
        args.train, args.seed, stream=1, progress=report("train", args.train), **settings
    )
    middle = time.perf_counter()
    # Independent streams; the test set skips any maze (or dihedral image) seen in train.
    test = generate_mazes(
        args.test,
        args.seed,
        stream=2,
        exclude=train["questions"],
        progress=report("test", args.test),
        **settings,
    )
    ended = time.perf_counter()
    paths = write_csv(args.out, train, test, source=f"trm-lab-maze seed={args.seed}")
    print(f"train: {summary(train, middle - began)}")
    print(f"test: {summary(test, ended - middle)}")
    print("wrote " + ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Overlap between a build's training puzzles and its test puzzles, and duplicates inside train.

A test puzzle inside train (as is, or as one of the augmentations the builder makes of a train
puzzle) inflates test accuracy, and duplicates shrink the training set; neither is visible in
the CSVs. The counts here are for the builder to print, record and, with --strict, refuse.

Sudoku: two puzzles are equivalent when one is the other under the group the builder augments
with (`sudoku.augmentation_maps`): digit relabelling, transpose, band and row-within-band
permutations, stack and column-within-stack permutations (~1.2e12 elements). A canonical form
under that group costs a search per puzzle, so instead:
1. every puzzle gets a fingerprint that is invariant under the group (so an augmentation is
   never missed): a hash of the multiset, over given cells, of what the group cannot change —
   the givens in the cell's row, band, row∩box and box, the sum of its row's digit
   multiplicities, how often its digit occurs in the grid and in its band, and the same for
   columns and stacks; rows and columns swap under transpose, so both orientations are hashed
   and the pair is sorted. A cheaper, coarser invariant (count and power sums) goes first, so
   only puzzles whose coarse key collides get the fingerprint: 1000 train puzzles against 423k
   test puzzles take about a second;
2. puzzles with equal fingerprints are confirmed exactly (`sudoku_equivalent`): a search over
   the band-preserving row and column orders that keep the row and column given counts, then
   the given pattern, then a digit bijection.
Counts are exact when "unconfirmed" is 0: more than MAX_CONFIRMATIONS fingerprint matches (not
seen in real data) are counted without confirmation, and the counts are then upper bounds.

Maze: equivalent means equal up to the 8 dihedral transforms (`--dihedral`); the 8 images are
hashed and every hash match compared cell by cell, so maze counts are always exact.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from datasets.generators import maze as maze_generator

SIDE, CELLS = 9, 81
FINGERPRINT_CHUNK = 16_384  # puzzles fingerprinted at a time (~60 MB of temporaries)
MAX_CONFIRMATIONS = 20_000  # exact searches per call; beyond them, counts are upper bounds
PAIR_BATCH = 65_536  # (row order, column order) candidates checked at a time


# --------------------------------------------------------------------------- hashing


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-spread 64-bit hash of each uint64 (wrapping arithmetic)."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _row_hashes(rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's exact bytes (equal rows, equal hashes), 8 bytes at a time
    and in chunks, so that 423k test rows cost little time and memory."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    width = -(-rows.shape[1] // 8) * 8
    salt = _mix(np.arange(width // 8, dtype=np.uint64))  # word position matters
    out = np.empty(len(rows), dtype=np.uint64)
    for start in range(0, len(rows), FINGERPRINT_CHUNK):
        chunk = rows[start : start + FINGERPRINT_CHUNK]
        padded = np.zeros((len(chunk), width), dtype=np.uint8)
        padded[:, : rows.shape[1]] = chunk
        out[start : start + len(chunk)] = _mix(padded.view(np.uint64) ^ salt).sum(
            1, dtype=np.uint64
        )
    return out


# --------------------------------------------------------------------------- Sudoku


def _digit_counts(digits: np.ndarray, groups: np.ndarray, count: int) -> np.ndarray:
    """For each cell [m, 81]: how many cells of its puzzle share its group (`groups`, per cell,
    values < `count`) and its digit."""
    m = len(digits)
    key = groups * 10 + digits  # [m, 81]
    flat = (np.arange(m)[:, None] * (count * 10) + key).ravel()
    table = np.bincount(flat, minlength=m * count * 10).reshape(m, count * 10)
    return np.take_along_axis(table, key, 1).astype(np.int32)


def _line_code(count, block, multiplicities, in_box, same_digit) -> np.ndarray:
    """One side (row or column) of a cell's features as one int < 2^19. The first four are per
    line or block (small arrays, combined before broadcasting to the cells)."""
    per_line = count + 10 * (block + 28 * (multiplicities + 82 * in_box))
    return per_line + 91_840 * same_digit  # 91_840 = 10·28·82·4


def _fingerprint_chunk(q: np.ndarray) -> np.ndarray:
    """[m, 2] sorted pair of the two orientations' multiset hashes (see the module docstring).
    Cells are laid out [m, band, row in band, stack, column in stack], so that line, band,
    stack and box features broadcast back to the cells without gathers."""
    m = len(q)
    digits = q.astype(np.intp)
    given = (q > 0).reshape(m, 3, 3, 3, 3).astype(np.int32)
    cell = np.arange(CELLS)
    band, stack = cell // 27, cell % SIDE // 3
    multiplicity = _digit_counts(digits, np.zeros(CELLS, dtype=np.intp), 1).reshape(given.shape)
    weighted = multiplicity * given
    rows, cols = given.sum((3, 4), keepdims=True), given.sum((1, 2), keepdims=True)
    row_in_box, col_in_box = given.sum(4, keepdims=True), given.sum(2, keepdims=True)
    row_side = _line_code(
        rows,  # givens in the cell's row
        rows.sum(2, keepdims=True),  # ... in its band
        weighted.sum((3, 4), keepdims=True),  # its row's digit multiplicities, summed
        row_in_box,  # givens in its row within its box
        _digit_counts(digits, band, 3).reshape(given.shape),  # its digit, in its band
    )
    col_side = _line_code(
        cols,
        cols.sum(4, keepdims=True),
        weighted.sum((1, 2), keepdims=True),
        col_in_box,
        _digit_counts(digits, stack, 3).reshape(given.shape),
    )
    boxes = row_in_box.sum(2, keepdims=True)
    mask = given.astype(bool)
    rest = (boxes + 10 * multiplicity)[mask].astype(np.uint64) << np.uint64(40)
    row_side = np.broadcast_to(row_side, given.shape)[mask].astype(np.uint64)
    col_side = np.broadcast_to(col_side, given.shape)[mask].astype(np.uint64)
    # Only given cells count: sum their hashes per puzzle (cells come puzzle by puzzle).
    counts = given.reshape(m, CELLS).sum(1)
    starts, has = np.r_[0, np.cumsum(counts)[:-1]], counts > 0
    hashes = np.zeros((m, 2), dtype=np.uint64)
    for column, (first, second) in enumerate(((row_side, col_side), (col_side, row_side))):
        mixed = _mix(first | (second << np.uint64(20)) | rest)
        if len(mixed):
            hashes[has, column] = np.add.reduceat(mixed, starts[has], dtype=np.uint64)
    return np.sort(hashes, axis=1)


def _coarse_keys(questions: np.ndarray) -> np.ndarray:
    """uint64 [N]: a cheaper, coarser invariant than the fingerprint (given counts, and power
    sums of the line, box, band and digit counts), computed first for every test puzzle so
    that only the few whose coarse key some train puzzle shares get the full fingerprint."""
    out = np.empty(len(questions), dtype=np.uint64)
    for start in range(0, len(questions), FINGERPRINT_CHUNK):
        q = questions[start : start + FINGERPRINT_CHUNK]
        m = len(q)
        given = (q > 0).reshape(m, SIDE, SIDE)
        rows, cols = given.sum(2, dtype=np.int64), given.sum(1, dtype=np.int64)
        boxes = given.reshape(m, 3, 3, 3, 3).sum((2, 4), dtype=np.int64).reshape(m, SIDE)
        flat = (np.arange(m)[:, None] * 10 + q).ravel()
        digits = np.bincount(flat, minlength=m * 10).reshape(m, 10)[:, 1:]
        bands = rows.reshape(m, 3, 3).sum(2) ** 2 + cols.reshape(m, 3, 3).sum(2) ** 2
        key = rows.sum(1).astype(np.uint64)
        for power in (2, 3):
            for part in (rows**power + cols**power, boxes**power, digits**power):
                key = _mix(key ^ part.sum(1).astype(np.uint64))
        out[start : start + m] = _mix(key ^ bands.sum(1).astype(np.uint64))
    return out


def sudoku_fingerprints(questions: np.ndarray) -> np.ndarray:
    """uint64 [N] fingerprint of each puzzle ([N, 81], 0 = blank), equal for puzzles equivalent
    under the builder's augmentation group (and rarely equal otherwise)."""
    questions = np.asarray(questions).reshape(-1, CELLS)
    out = np.empty(len(questions), dtype=np.uint64)
    for start in range(0, len(questions), FINGERPRINT_CHUNK):
        pair = _fingerprint_chunk(questions[start : start + FINGERPRINT_CHUNK])
        out[start : start + len(pair)] = _mix(pair[:, 0]) ^ pair[:, 1]
    return out


def _line_orders() -> np.ndarray:
    """The 1296 orders of 9 lines that keep bands together: [1296, 9], new line → old line."""
    threes = list(itertools.permutations(range(3)))
    orders = [
        [3 * b + i for b, inside in zip(bands, insides, strict=True) for i in inside]
        for bands in threes
        for insides in itertools.product(threes, repeat=3)
    ]
    return np.array(orders, dtype=np.intp)


LINE_ORDERS = _line_orders()


def _bijective(a_digits: np.ndarray, b_digits: np.ndarray) -> np.ndarray:
    """Per candidate ([K, g] digit pairs at the given cells): does a→b define a bijection?"""
    k = len(a_digits)
    seen = np.zeros((k, 100), dtype=bool)
    seen[np.arange(k)[:, None], a_digits.astype(np.intp) * 10 + b_digits] = True
    pairs = seen.sum(1)
    grid = seen.reshape(k, 10, 10)
    return (pairs == grid.any(2).sum(1)) & (pairs == grid.any(1).sum(1))


def _maps_onto(a: np.ndarray, b: np.ndarray) -> bool:
    """Is there a band-preserving row order, a stack-preserving column order and a digit
    relabelling taking grid `a` (9×9) to grid `b`? Orders must keep the line given counts;
    the column orders surviving the row order must then match the given pattern."""
    a_given, b_given = a > 0, b > 0
    rows = LINE_ORDERS[(a_given.sum(1)[LINE_ORDERS] == b_given.sum(1)).all(1)]
    cols = LINE_ORDERS[(a_given.sum(0)[LINE_ORDERS] == b_given.sum(0)).all(1)]
    if not len(rows) or not len(cols):
        return False
    bits = 1 << np.arange(SIDE)
    # Column j's given pattern (a 9-bit set of rows) once a's rows are put in each order.
    a_patterns = (a_given[rows] * bits[None, :, None]).sum(1)  # [R, 9]
    b_patterns = (b_given * bits[:, None]).sum(0)  # [9]
    where = b_given.ravel()
    for start in range(0, len(rows), max(1, PAIR_BATCH // len(cols))):
        batch = rows[start : start + max(1, PAIR_BATCH // len(cols))]
        patterns = a_patterns[start : start + len(batch)]
        fits = (patterns[:, cols] == b_patterns).all(2)  # [R', C]
        r_idx, c_idx = np.nonzero(fits)
        if not len(r_idx):
            continue
        moved = a[batch[r_idx][:, :, None], cols[c_idx][:, None, :]].reshape(len(r_idx), CELLS)
        targets = np.broadcast_to(b.ravel()[where], (len(r_idx), int(where.sum())))
        if _bijective(moved[:, where], targets).any():
            return True
    return False


def sudoku_equivalent(p: np.ndarray, q: np.ndarray) -> bool:
    """Exactly: is puzzle `q` (81 cells, 0 = blank) puzzle `p` under some element of the
    augmentation group (digit relabelling, transpose, band/row/stack/column permutations)?"""
    a, b = np.asarray(p).reshape(SIDE, SIDE), np.asarray(q).reshape(SIDE, SIDE)
    if np.count_nonzero(a) != np.count_nonzero(b):
        return False
    return _maps_onto(a, b) or _maps_onto(a.T, b)


class _Confirmer:
    """Exact searches, up to `limit`; past that, a fingerprint match is taken as a match and
    counted as unconfirmed (so that a pathological input cannot stall a build)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.searches = 0
        self.unconfirmed = 0

    def equivalent(self, p: np.ndarray, q: np.ndarray) -> bool:
        if np.array_equal(p, q):
            return True
        if self.searches >= self.limit:
            self.unconfirmed += 1
            return True
        self.searches += 1
        return sudoku_equivalent(p, q)


def _classes(rows: np.ndarray, keys: np.ndarray, same) -> np.ndarray:
    """Representative index of each row's class: rows with equal keys are compared with the
    representatives found so far (`same(a, b)`), in row order; a row whose key is unique is
    its own class without a comparison (so millions of rows cost one sort)."""
    representative = np.arange(len(rows))
    order = np.argsort(keys, kind="stable")  # equal keys: rows in ascending order
    cuts = np.flatnonzero(keys[order][1:] != keys[order][:-1]) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, len(rows)]
    shared = ends - starts > 1
    for start, end in zip(starts[shared].tolist(), ends[shared].tolist(), strict=True):
        found: list[int] = []
        for index in order[start:end].tolist():
            match = next((f for f in found if same(rows[f], rows[index])), None)
            if match is None:
                found.append(index)
            else:
                representative[index] = match
    return representative


def _in_train(test: np.ndarray, test_keys, train: np.ndarray, train_keys, same) -> np.ndarray:
    """Per test row: does some train row with the same key satisfy `same(train_row, row)`?"""
    order = np.argsort(train_keys, kind="stable")
    sorted_keys = train_keys[order]
    low = np.searchsorted(sorted_keys, test_keys, side="left")
    high = np.searchsorted(sorted_keys, test_keys, side="right")
    found = np.zeros(len(test), dtype=bool)
    for row in np.flatnonzero(high > low).tolist():
        candidates = order[low[row] : high[row]]
        found[row] = any(same(train[t], test[row]) for t in candidates.tolist())
    return found


def _invariant_keys(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group-invariant keys of train and test puzzles: the coarse key for every puzzle, refined
    by the fingerprint only where coarse keys collide (a train key shared inside train or with
    test), which in real data is a tiny fraction of the 423k test puzzles."""
    coarse_train, coarse_test = _coarse_keys(train), _coarse_keys(test)
    values, counts = np.unique(coarse_train, return_counts=True)
    needs = (
        np.isin(coarse_train, values[counts > 1]) | np.isin(coarse_train, coarse_test),
        np.isin(coarse_test, coarse_train),
    )
    keys = []
    for rows, coarse, need in zip((train, test), (coarse_train, coarse_test), needs, strict=True):
        key = _mix(coarse)
        key[need] ^= sudoku_fingerprints(rows[need])
        keys.append(key)
    return keys[0], keys[1]


def sudoku_overlap(
    train_questions: np.ndarray,
    test_questions: np.ndarray,
    max_confirmations: int = MAX_CONFIRMATIONS,
    validation_questions: np.ndarray | None = None,
) -> dict[str, Any]:
    """Duplicates inside train and test puzzles inside train, before augmentation.

    train_questions, test_questions: uint8 [N, 81], 0 = blank (train: the subsampled source
    puzzles). Returns counts of rows: "duplicate_train_puzzles" (a train puzzle equal to an
    earlier one or to an augmentation of one), "test_puzzles_in_train" (a test puzzle equal to
    a train puzzle or an augmentation of one), their "exact_..." parts (identical rows), and
    "unconfirmed" with a "method" line (see the module docstring): exact unless more than
    `max_confirmations` fingerprint matches needed an exact search. With
    `validation_questions`, "validation_puzzles_in_train" and its exact part count them the
    same way as the test puzzles."""
    train = np.ascontiguousarray(train_questions, dtype=np.uint8).reshape(-1, CELLS)
    test = np.ascontiguousarray(test_questions, dtype=np.uint8).reshape(-1, CELLS)
    held = {"test": test}
    if validation_questions is not None:
        held["validation"] = np.ascontiguousarray(validation_questions, dtype=np.uint8).reshape(
            -1, CELLS
        )
    others = np.concatenate(list(held.values())) if len(held) > 1 else test
    exact_train, exact_others = _row_hashes(train), _row_hashes(others)
    identical = np.array_equal
    exact_duplicates = int((_classes(train, exact_train, identical) != np.arange(len(train))).sum())
    exact_in_train = _in_train(others, exact_others, train, exact_train, identical)
    confirm = _Confirmer(max_confirmations)
    train_keys, other_keys = _invariant_keys(train, others)
    classes = _classes(train, train_keys, confirm.equivalent) == np.arange(len(train))
    in_train = _in_train(
        others, other_keys, train[classes], train_keys[classes], confirm.equivalent
    )
    found = {
        "duplicate_train_puzzles": int((~classes).sum()),
        "exact_duplicate_train_puzzles": exact_duplicates,
        **_held_out_counts(held, in_train, exact_in_train),
        "unconfirmed": confirm.unconfirmed,
        "method": "sudoku symmetry group (digits, transpose, bands, rows, stacks, columns): "
        + (
            "group-invariant fingerprint, every match confirmed by exact search"
            if not confirm.unconfirmed
            else f"group-invariant fingerprint; {confirm.unconfirmed} matches past "
            f"{max_confirmations} exact searches not confirmed, so counts are upper bounds"
        ),
    }
    return found


def _held_out_counts(
    held: dict[str, np.ndarray], in_train: np.ndarray, exact_in_train: np.ndarray
) -> dict[str, int]:
    """ "<split>_puzzles_in_train" and "exact_<split>_puzzles_in_train" for each held-out split
    (test, validation), from flags over their rows concatenated in `held`'s order."""
    counts, start = {}, 0
    for split, rows in held.items():
        part = slice(start, start + len(rows))
        counts[f"{split}_puzzles_in_train"] = int(in_train[part].sum())
        counts[f"exact_{split}_puzzles_in_train"] = int(exact_in_train[part].sum())
        start += len(rows)
    return counts


# --------------------------------------------------------------------------- maze


def _dihedral_hashes(tokens: np.ndarray) -> np.ndarray:
    """[N, 8] exact-content hashes of each maze's 8 dihedral images."""
    return np.stack(
        [_row_hashes(maze_generator.dihedral(tokens, k, flat=True)) for k in range(8)], 1
    )


def _dihedral_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return any(np.array_equal(maze_generator.dihedral(a, k, flat=True), b) for k in range(8))


def maze_overlap(
    train_questions: np.ndarray,
    test_questions: np.ndarray,
    validation_questions: np.ndarray | None = None,
) -> dict[str, Any]:
    """Like `sudoku_overlap` for mazes (tokens [N, 900], 30×30), where an augmentation is one
    of the 8 dihedral images. Exact: the canonical key is the smallest of the 8 image hashes,
    and every key match is compared cell by cell. Validation puzzles, when given, are counted
    like the test puzzles."""
    train = np.asarray(train_questions)
    held = {"test": np.asarray(test_questions)}
    if validation_questions is not None:
        held["validation"] = np.asarray(validation_questions)
    others = np.concatenate(list(held.values())) if len(held) > 1 else held["test"]
    exact_train, exact_others = _row_hashes(train), _row_hashes(others)
    identical = np.array_equal
    exact_duplicates = int((_classes(train, exact_train, identical) != np.arange(len(train))).sum())
    exact_in_train = _in_train(others, exact_others, train, exact_train, identical)
    train_keys = _dihedral_hashes(train).min(1)
    representative = _classes(train, train_keys, _dihedral_equal)
    classes = representative == np.arange(len(train))
    in_train = _in_train(
        others,
        _dihedral_hashes(others).min(1),
        train[classes],
        train_keys[classes],
        _dihedral_equal,
    )
    return {
        "duplicate_train_puzzles": int((~classes).sum()),
        "exact_duplicate_train_puzzles": exact_duplicates,
        **_held_out_counts(held, in_train, exact_in_train),
        "unconfirmed": 0,
        "method": "8 dihedral images: image hashes, every match compared cell by cell",
    }

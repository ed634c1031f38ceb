"""Sudoku-Extreme (TRM_SPEC §3.2): the published CSV layout, validation, and the paper's
augmentation, vectorised with numpy.

CSV: header `source,question,answer,rating`; question and answer are 81 characters, row-major,
'.' (or '0') for a blank in the question, digits 1–9. Tokens: PAD = 0, blank = 1, digit d =
d + 1 (vocab 11); the label is the full solution (all 81 cells are supervised). `read_csv`
streams the file (datasets.csv_source) and checks every row, keeping only the rows asked for:
the published train CSV has 3.83M rows, of which a build uses 1000.

Augmentation (per puzzle: the original plus `count` shuffled copies, one group): a digit
permutation, a transpose with probability 0.5, a band shuffle with rows shuffled inside each
band, and a stack shuffle with columns shuffled inside each stack. Unlike upstream it is seeded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.csv_source import CsvChunk, CsvSource, Selection
from datasets.validation import RowErrors

SIDE = 9
CELLS = 81
VOCAB_SIZE = 11
TOKEN_NAMES = ["PAD", "blank", *[str(d) for d in range(1, 10)]]
HEADER = ["source", "question", "answer", "rating"]


@dataclass
class SudokuRows:
    questions: np.ndarray  # uint8 [N, 81], 0 = blank
    answers: np.ndarray  # uint8 [N, 81], 1..9
    ratings: np.ndarray  # float64 [N]

    def take(self, rows: np.ndarray) -> SudokuRows:
        return SudokuRows(self.questions[rows], self.answers[rows], self.ratings[rows])


POWER = np.zeros(256, dtype=np.uint16)  # digit d → 2^d; anything else → 0
POWER[1:10] = 2 ** np.arange(1, 10)
FULL_UNIT = 1022  # 2 + 4 + ... + 512: nine powers of two reach it only when all distinct


def valid_solutions(grids: np.ndarray) -> np.ndarray:
    """True where a [N, 81] grid of digits is a complete valid Sudoku: with each digit d
    counting 2^d, every row, column and box sums to 1022 (no carries, so nine distinct digits).
    Summed grid-minor ([row, column, grid]): whole-array adds, many times faster than sorting
    or reducing each 9-cell unit."""
    g = np.asarray(grids).reshape(-1, CELLS)
    if g.dtype != np.uint8:
        g = np.clip(g, 0, 10).astype(np.intp)  # 10: counts 0, like any other non-digit
    cells = np.ascontiguousarray(POWER[g].T).reshape(SIDE, SIDE, -1)
    rows, cols = cells.sum(1, dtype=np.uint16), cells.sum(0, dtype=np.uint16)
    boxes = cells.reshape(3, 3, 3, 3, -1).sum((1, 3), dtype=np.uint16).reshape(SIDE, -1)
    return ((rows == FULL_UNIT) & (cols == FULL_UNIT) & (boxes == FULL_UNIT)).all(0)


BAD = 255  # a character outside the layout, in the lookup tables below
QUESTION_DIGITS = np.full(256, BAD, dtype=np.uint8)  # '.' and '0' → 0 (blank), '1'-'9' → 1-9
QUESTION_DIGITS[[ord("."), ord("0")]] = 0
QUESTION_DIGITS[ord("1") : ord("9") + 1] = np.arange(1, 10)
ANSWER_DIGITS = np.full(256, BAD, dtype=np.uint8)  # '1'-'9' → 1-9
ANSWER_DIGITS[ord("1") : ord("9") + 1] = np.arange(1, 10)
FIELD_CHARACTERS = {"question": ".0123456789", "answer": "123456789"}


def read_csv(path: str | Path, keep: Callable[[int], np.ndarray] | None = None) -> SudokuRows:
    """Parse and validate a Sudoku CSV as it streams past (datasets.csv_source): every row is
    checked and every bad one reported by line, but only the rows `keep` selects are held, so
    memory does not grow with the file (the published train CSV has 3.83M rows).

    keep(n) gives the indices of the rows to return, in the order to return them, given the
    file's number of data rows n; it is called once, before the rows are read. None keeps all.
    """
    source = CsvSource(path, HEADER)
    selection = Selection(source.rows, keep)
    questions = np.zeros((selection.size, CELLS), dtype=np.uint8)
    answers = np.zeros_like(questions)
    ratings = np.zeros(selection.size, dtype=np.float64)
    for chunk in source.chunks():  # raises the errors of every row after the last chunk
        q, a, r = _parse_chunk(chunk, source.errors)
        rows, positions = selection.pick(chunk.start, len(chunk))
        questions[positions], answers[positions], ratings[positions] = q[rows], a[rows], r[rows]
    return SudokuRows(questions, answers, ratings)


def _parse_chunk(chunk: CsvChunk, errors: RowErrors) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One block's (questions, answers, ratings), each row checked against the layout; bad rows
    go to `errors` (and come back as garbage, never returned by read_csv)."""
    q_raw, a_raw, shaped = chunk.question_and_answer(CELLS, errors)
    questions, answers = QUESTION_DIGITS[q_raw], ANSWER_DIGITS[a_raw]
    bad_question = shaped & _any_per_row(questions == BAD)
    bad_answer = shaped & _any_per_row(answers == BAD)
    changed = (questions != answers) & (questions != 0)  # a given the answer does not keep
    contradicts = shaped & ~bad_question & ~bad_answer & _any_per_row(changed)
    invalid = shaped & ~bad_answer & ~valid_solutions(answers)
    for mask, field, allowed in (
        (bad_question, "question", "'.', '0'-'9'"),
        (bad_answer, "answer", "'1'-'9'"),
    ):
        rows = np.flatnonzero(mask)
        errors.add(
            chunk.lines[rows],
            lambda i, field=field, allowed=allowed, rows=rows: (
                f"{field} has characters other than {allowed}: "
                + _first_bad(chunk.text(field, rows[i]), FIELD_CHARACTERS[field])
            ),
        )
    errors.add(chunk.lines[contradicts], "answer contradicts the question's givens")
    errors.add(chunk.lines[invalid], "answer is not a valid Sudoku solution")
    ratings = chunk.floats("rating", errors, empty=np.nan)
    return questions, answers, ratings


def _any_per_row(mask: np.ndarray) -> np.ndarray:
    """`mask.any(1)`, after one cheap whole-block test: a valid block has no bad cell at all."""
    return mask.any(1) if mask.any() else np.zeros(len(mask), dtype=bool)


def _first_bad(value: str, allowed: str) -> str:
    """Where a field first breaks its character set, for an error message."""
    cell = next(i for i, char in enumerate(value) if char not in allowed)
    return f"{value[cell]!r} at cell {cell + 1}"


def augmentation_maps(
    count: int, rng: np.random.Generator, box: tuple[int, int] = (3, 3)
) -> tuple[np.ndarray, np.ndarray]:
    """`count` random symmetries of a Sudoku with `box` = (r, c) (r rows by c columns per box,
    side r·c) as (cell index maps [count, side²], digit maps [count, side + 1], 0 → 0): a digit
    permutation, a transpose with probability 0.5 (only when r == c), the c bands of r rows
    shuffled with the rows inside each band, and the r stacks of c columns shuffled with the
    columns inside each stack. `out[j] = digit_map[grid[index[j]]]`. For 3×3 the draws are
    the training augmentation's (`augment`); datasets.test_time uses every box shape."""
    box_rows, box_cols = box
    side = box_rows * box_cols
    digit_maps = np.zeros((count, side + 1), dtype=np.uint8)
    digit_maps[:, 1:] = rng.permuted(
        np.tile(np.arange(1, side + 1, dtype=np.uint8), (count, 1)), axis=1
    )
    square = box_rows == box_cols
    transpose = rng.random(count) < 0.5 if square else np.zeros(count, dtype=bool)

    def line_order(groups: int, size: int) -> np.ndarray:  # shuffle groups, then lines inside
        bands = rng.permuted(np.tile(np.arange(groups), (count, 1)), axis=1)
        inside = rng.permuted(np.tile(np.arange(size), (count, groups, 1)), axis=2)
        return (bands[:, :, None] * size + inside).reshape(count, side)

    rows, cols = line_order(box_cols, box_rows), line_order(box_rows, box_cols)
    r, c = rows[:, :, None], cols[:, None, :]
    # Transpose first, then permute: out[r, c] = T[rows[r], cols[c]] (same order as upstream).
    index = np.where(transpose[:, None, None], c * side + r, r * side + c)
    return index.reshape(count, side * side).astype(np.intp), digit_maps


AUGMENT_CHUNK = 64  # puzzles per vectorised chunk: bounds memory; part of the seeded stream


def augment(rows: SudokuRows, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each puzzle followed by `count` shuffled copies: [N·(count+1), 81] questions, answers."""
    n = len(rows.questions)
    rng = np.random.default_rng([seed, 1])
    questions = np.empty((n, count + 1, CELLS), dtype=np.uint8)
    answers = np.empty_like(questions)
    for start in range(0, n, AUGMENT_CHUNK):
        stop = min(start + AUGMENT_CHUNK, n)
        size = stop - start
        index, digit_maps = augmentation_maps(size * count, rng)
        index = np.concatenate(
            [np.tile(np.arange(CELLS), (size, 1, 1)), index.reshape(size, count, CELLS)], axis=1
        )  # copy 0 = identity
        digit_maps = np.concatenate(
            [
                np.tile(np.arange(10, dtype=np.uint8), (size, 1, 1)),
                digit_maps.reshape(size, count, 10),
            ],
            axis=1,
        )
        for source, target in ((rows.questions, questions), (rows.answers, answers)):
            moved = np.take_along_axis(source[start:stop, None, :], index, axis=2)
            target[start:stop] = np.take_along_axis(digit_maps, moved.astype(np.intp), axis=2)
    return questions.reshape(-1, CELLS), answers.reshape(-1, CELLS)


def to_tokens(
    questions: np.ndarray, answers: np.ndarray, in_place: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Blank 0 → 1 and digit d → d + 1 (PAD stays 0). `in_place` reuses uint8 inputs the
    caller no longer needs (a 1000 × 1001 build saves 160 MB of peak memory)."""
    if in_place:
        return np.add(questions, 1, out=questions), np.add(answers, 1, out=answers)
    return (questions + 1).astype(np.uint8), (answers + 1).astype(np.uint8)


def csv_bytes(
    questions: np.ndarray, answers: np.ndarray, rating_text: np.ndarray, source: str = "trm-lab"
) -> bytes:
    """CSV data lines (no header) for digit grids, built in numpy: the full-size benchmark
    writes millions of rows, which a per-row writer takes minutes for. `rating_text` is a bytes
    array (numpy "S" dtype, e.g. `ratings.astype("S")` for integers)."""
    n = len(questions)
    text = np.asarray(rating_text, dtype="S")
    pieces = [
        np.tile(np.frombuffer(f"{source},".encode(), dtype=np.uint8), (n, 1)),
        np.where(questions > 0, questions + ord("0"), ord(".")).astype(np.uint8),
        np.full((n, 1), ord(","), dtype=np.uint8),
        (answers + ord("0")).astype(np.uint8),
        np.full((n, 1), ord(","), dtype=np.uint8),
        text.view(np.uint8).reshape(n, text.itemsize),  # NUL-padded to the widest rating
        np.full((n, 1), ord("\n"), dtype=np.uint8),
    ]
    flat = np.concatenate(pieces, axis=1).ravel()
    return flat[flat != 0].tobytes()  # drop the padding: CSV text never holds NUL


def write_csv(path: str | Path, rows: SudokuRows, source: str = "trm-lab") -> None:
    """The published layout (header, then one line per puzzle; ratings in shortest form)."""
    ratings = np.array([f"{rating:g}" for rating in rows.ratings], dtype="S")
    with open(path, "wb") as handle:
        handle.write((",".join(HEADER) + "\n").encode())
        handle.write(csv_bytes(rows.questions, rows.answers, ratings, source))

"""Sudoku-Extreme (TRM_SPEC §3.2): the published CSV layout, validation, and the paper's
augmentation, vectorised with numpy.

CSV: header `source,question,answer,rating`; question and answer are 81 characters, row-major,
'.' (or '0') for a blank in the question, digits 1–9. Tokens: PAD = 0, blank = 1, digit d =
d + 1 (vocab 11); the label is the full solution (all 81 cells are supervised).

Augmentation (per puzzle: the original plus `count` shuffled copies, one group): a digit
permutation, a transpose with probability 0.5, a band shuffle with rows shuffled inside each
band, and a stack shuffle with columns shuffled inside each stack. Unlike upstream it is seeded.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.validation import raise_row_errors

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
    sources: np.ndarray  # str [N]

    def take(self, rows: np.ndarray) -> SudokuRows:
        return SudokuRows(
            self.questions[rows], self.answers[rows], self.ratings[rows], self.sources[rows]
        )


def valid_solutions(grids: np.ndarray) -> np.ndarray:
    """True where a [N, 81] grid of digits is a complete valid Sudoku."""
    g = grids.reshape(-1, SIDE, SIDE)
    digits = np.arange(1, SIDE + 1)
    rows = (np.sort(g, axis=2) == digits).all((1, 2))
    cols = (np.sort(g, axis=1) == digits[:, None]).all((1, 2))
    boxes = g.reshape(-1, 3, 3, 3, 3).transpose(0, 1, 3, 2, 4).reshape(-1, SIDE, SIDE)
    return rows & cols & (np.sort(boxes, axis=2) == digits).all((1, 2))


def _char_matrix(strings: list[str]) -> np.ndarray:
    """81-character strings as a uint8 [N, 81] matrix of character codes (non-ASCII → '?')."""
    if not strings:
        return np.zeros((0, CELLS), dtype=np.uint8)
    return np.frombuffer("".join(strings).encode("ascii", "replace"), dtype=np.uint8).reshape(
        -1, CELLS
    )


def read_csv(path: str | Path) -> SudokuRows:
    """Parse and validate a Sudoku CSV; every bad row is reported with its line number."""
    path = Path(path)
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:4]] != HEADER:
            raise ValueError(f"{path}: header must start with {','.join(HEADER)}, got {header}")
        rows = list(reader)
    errors: list[str] = []
    line_numbers = np.arange(2, len(rows) + 2)
    shaped = []
    for line, row in zip(line_numbers, rows, strict=True):
        if len(row) < 4:
            errors.append(f"line {line}: expected 4 fields, got {len(row)}")
        elif len(row[1]) != CELLS or len(row[2]) != CELLS:
            errors.append(
                f"line {line}: question and answer must have {CELLS} characters, got "
                f"{len(row[1])} and {len(row[2])}"
            )
        else:
            shaped.append(line)
    good = set(shaped)
    kept = [row for line, row in zip(line_numbers, rows, strict=True) if line in good]
    kept_lines = np.array(shaped, dtype=np.int64)
    questions_raw = _char_matrix([r[1] for r in kept])
    answers_raw = _char_matrix([r[2] for r in kept])
    blank = (questions_raw == ord(".")) | (questions_raw == ord("0"))
    q_digit = (questions_raw >= ord("1")) & (questions_raw <= ord("9"))
    a_digit = (answers_raw >= ord("1")) & (answers_raw <= ord("9"))
    questions = np.where(q_digit, questions_raw - ord("0"), 0).astype(np.uint8)
    answers = np.where(a_digit, answers_raw - ord("0"), 0).astype(np.uint8)
    bad_question = ~(blank | q_digit).all(1)
    bad_answer = ~a_digit.all(1)
    contradicts = ~bad_question & ~bad_answer & (q_digit & (questions != answers)).any(1)
    invalid = ~bad_answer & ~valid_solutions(answers)
    for mask, message in (
        (bad_question, "question has characters other than '.', '0'-'9'"),
        (bad_answer, "answer has characters other than '1'-'9'"),
        (contradicts, "answer contradicts the question's givens"),
        (invalid, "answer is not a valid Sudoku solution"),
    ):
        errors += [f"line {line}: {message}" for line in kept_lines[mask]]
    raise_row_errors(path, errors)
    try:
        ratings = np.array([float(r[3]) if r[3] else np.nan for r in kept], dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{path}: rating column must be numeric ({err})") from None
    return SudokuRows(questions, answers, ratings, np.array([r[0] for r in kept], dtype=object))


def augmentation_maps(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` random symmetries as (cell index maps [count, 81], digit maps [count, 10])."""
    digit_maps = np.zeros((count, 10), dtype=np.uint8)
    digit_maps[:, 1:] = rng.permuted(np.tile(np.arange(1, 10, dtype=np.uint8), (count, 1)), axis=1)
    transpose = rng.random(count) < 0.5

    def line_order() -> np.ndarray:  # shuffle the 3 bands, then the 3 lines inside each band
        bands = rng.permuted(np.tile(np.arange(3), (count, 1)), axis=1)
        inside = rng.permuted(np.tile(np.arange(3), (count, 3, 1)), axis=2)
        return (bands[:, :, None] * 3 + inside).reshape(count, SIDE)

    rows, cols = line_order(), line_order()
    r, c = rows[:, :, None], cols[:, None, :]
    # Transpose first, then permute: out[r, c] = T[rows[r], cols[c]] (same order as upstream).
    index = np.where(transpose[:, None, None], c * SIDE + r, r * SIDE + c).reshape(count, CELLS)
    return index.astype(np.intp), digit_maps


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


def to_tokens(questions: np.ndarray, answers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blank 0 → 1 and digit d → d + 1 (PAD stays 0)."""
    return (questions + 1).astype(np.uint8), (answers + 1).astype(np.uint8)


def write_csv(path: str | Path, rows: SudokuRows) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for source, q, a, rating in zip(
            rows.sources, rows.questions, rows.answers, rows.ratings, strict=True
        ):
            writer.writerow(
                [
                    source,
                    "".join(str(d) if d else "." for d in q),
                    "".join(map(str, a)),
                    f"{rating:g}",
                ]
            )

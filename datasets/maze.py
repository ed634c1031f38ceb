"""Maze-Hard (TRM_SPEC §3.3): the published CSV layout, validation, optional dihedral
augmentation, and the "valid shortest path" evaluation hook.

CSV: header `source,question,answer,rating` (a `num_shortest_paths` column is kept when
present); question and answer are 900 characters (30×30, row-major) over "# SGo". Tokens:
PAD 0, wall 1, open 2, S 3, G 4, path 5 (vocab 6); the loss covers all 900 cells.

Augmentation: the paper's text says 8 dihedral transforms per maze, but the official builder
defaults to none (and HRM disabled it), so `dihedral=False` is the default here too, matching
the command the paper's numbers came from; `--dihedral` gives the 8 transforms (each its own
puzzle in the maze's group). The tie-break label is not dihedral-invariant: a transformed label
is still a valid shortest path, which is what `MazeValidity` scores.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from datasets.csv_source import CsvChunk, CsvSource, Selection
from datasets.generators import maze as maze_generator
from datasets.validation import RowErrors

VOCAB_SIZE = 6
TOKEN_NAMES = ["PAD", "#", "_", "S", "G", "o"]  # inspect shows open cells as '_'


HEADER = ["source", "question", "answer", "rating"]
CELLS = 900  # 30×30
QUESTION_CHARACTERS, ANSWER_CHARACTERS = " #SG", maze_generator.CHARSET
ALLOWED = np.zeros((2, 256), dtype=bool)  # [question, answer] × byte
ALLOWED[0, np.frombuffer(QUESTION_CHARACTERS.encode(), dtype=np.uint8)] = True
ALLOWED[1, np.frombuffer(ANSWER_CHARACTERS.encode(), dtype=np.uint8)] = True


def read_csv(
    path: str | Path, keep: Callable[[int], np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(questions, answers) as tokens [N, cells], ratings [N] and num_shortest_paths [N] (−1
    when the column is absent), read as they stream past (datasets.csv_source). Every row is
    validated, shortest paths included; errors name their line numbers. `keep` as in
    `sudoku.read_csv` (None keeps all)."""
    source = CsvSource(path, HEADER)
    has_paths = "num_shortest_paths" in source.header
    selection = Selection(source.rows, keep)
    questions = np.zeros((selection.size, CELLS), dtype=np.uint8)
    answers = np.zeros_like(questions)
    ratings = np.zeros(selection.size, dtype=np.float64)
    paths = np.full(selection.size, -1.0)
    for chunk in source.chunks():  # raises the errors of every row after the last chunk
        q, a = _parse_grids(chunk, source.errors)
        rows, positions = selection.pick(chunk.start, len(chunk))
        questions[positions], answers[positions] = q[rows], a[rows]
        ratings[positions] = chunk.floats("rating", source.errors, empty=None)[rows]
        if has_paths:
            found = chunk.floats("num_shortest_paths", source.errors, empty=None)
            paths[positions] = found[rows]
    return questions, answers, ratings, paths


def _parse_grids(chunk: CsvChunk, errors: RowErrors) -> tuple[np.ndarray, np.ndarray]:
    """One block's (questions, answers) as tokens, each row checked: width, characters, one S
    and one G, and the answer a shortest S→G path. Bad rows go to `errors` (and come back as
    garbage, never returned by read_csv)."""
    q_raw, a_raw, shaped = chunk.question_and_answer(CELLS, errors, " (30×30)")
    characters_ok = ALLOWED[0, q_raw].all(1) & ALLOWED[1, a_raw].all(1)
    errors.add(
        chunk.lines[shaped & ~characters_ok],
        f"characters outside {ANSWER_CHARACTERS!r} (question may not hold 'o')",
    )
    good = shaped & characters_ok
    questions = maze_generator.to_tokens(q_raw, strict=False)  # bad rows: PAD, never returned
    answers = maze_generator.to_tokens(a_raw, strict=False)
    starts = (questions == maze_generator.START).sum(1)
    goals = (questions == maze_generator.GOAL).sum(1)
    ends_ok = good & (starts == 1) & (goals == 1)
    ends_bad = np.flatnonzero(good & ~ends_ok)
    errors.add(
        chunk.lines[ends_bad],
        lambda i: (
            f"a maze needs exactly one S and one G, got {starts[ends_bad[i]]} S and "
            f"{goals[ends_bad[i]]} G"
        ),
    )
    valid = np.zeros(len(chunk), dtype=bool)
    if ends_ok.any():
        valid[ends_ok] = maze_generator.valid_shortest_paths(questions[ends_ok], answers[ends_ok])
    errors.add(chunk.lines[ends_ok & ~valid], "answer is not a shortest S→G path of the question")
    return questions, answers


def dihedral_copies(tokens: np.ndarray) -> np.ndarray:
    """[N, cells] → [N·8, cells]: each maze followed by its 7 other dihedral images."""
    images = np.stack([maze_generator.dihedral(tokens, k, flat=True) for k in range(8)], axis=1)
    return images.reshape(-1, tokens.shape[1])


class MazeValidity:
    """EvalHook: fraction of test mazes whose prediction is a valid shortest path (any of the
    many, not only the labelled one), beside exact match."""

    def __init__(self) -> None:
        self.valid = 0
        self.count = 0

    def update(self, batch, predictions, q_halt_prob, valid) -> None:
        rows = np.flatnonzero(np.asarray(valid))
        if not len(rows):
            return
        questions = np.asarray(batch["inputs"])[rows].astype(np.uint8)
        preds = np.asarray(predictions)[rows].astype(np.uint8)
        self.valid += int(maze_generator.valid_shortest_paths(questions, preds).sum())
        self.count += len(rows)

    def compute(self) -> dict[str, float]:
        return {"valid_shortest_path_accuracy": self.valid / max(self.count, 1)}

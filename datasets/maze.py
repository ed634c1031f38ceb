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

import csv
from pathlib import Path

import numpy as np

from datasets.generators import maze as maze_generator
from datasets.validation import raise_row_errors

VOCAB_SIZE = 6
TOKEN_NAMES = ["PAD", "#", "_", "S", "G", "o"]  # inspect shows open cells as '_'


def read_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(questions, answers) as tokens [N, cells], ratings [N] and num_shortest_paths [N] (−1
    when absent). Every row is validated; errors name their line numbers."""
    path = Path(path)
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or header[:4] != ["source", "question", "answer", "rating"]:
            raise ValueError(
                f"{path}: header must start with source,question,answer,rating, got {header}"
            )
        has_paths = "num_shortest_paths" in header
        path_column = header.index("num_shortest_paths") if has_paths else None
        rows = list(reader)
    errors, kept, lines = [], [], []
    width = len(rows[0][1]) if rows and len(rows[0]) > 1 else 0
    for line, row in enumerate(rows, start=2):
        if len(row) < 4:
            errors.append(f"line {line}: expected at least 4 fields, got {len(row)}")
        elif len(row[1]) != width or len(row[2]) != width or width != 900:
            errors.append(
                f"line {line}: question and answer must have 900 characters (30×30), "
                f"got {len(row[1])} and {len(row[2])}"
            )
        elif set(row[1]) - set(" #SG") or set(row[2]) - set(maze_generator.CHARSET):
            errors.append(f"line {line}: characters outside '# SGo' (question may not hold 'o')")
        else:
            kept.append(row)
            lines.append(line)
    if kept:
        questions = maze_generator.to_tokens([r[1] for r in kept])
        answers = maze_generator.to_tokens([r[2] for r in kept])
        starts = (questions == maze_generator.START).sum(1)
        goals = (questions == maze_generator.GOAL).sum(1)
        ends_ok = (starts == 1) & (goals == 1)
        for line in np.array(lines)[~ends_ok]:
            errors.append(f"line {line}: a maze needs exactly one S and one G")
        valid = np.zeros(len(kept), dtype=bool)
        if ends_ok.any():
            valid[ends_ok] = maze_generator.valid_shortest_paths(
                questions[ends_ok], answers[ends_ok]
            )
        for line in np.array(lines)[ends_ok & ~valid]:
            errors.append(f"line {line}: answer is not a shortest S→G path of the question")
    raise_row_errors(path, errors)
    ratings = np.array([float(r[3]) for r in kept], dtype=np.float64)
    paths = np.array([float(r[path_column]) if has_paths else -1.0 for r in kept])
    return questions, answers, ratings, paths


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

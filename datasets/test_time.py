"""Test-time augmentation: invertible transforms of a task's token grids, for voting at test
time (predict on several transformed copies of a test puzzle, map each prediction back with
`invert`, vote). Pure numpy; no torch.

    from datasets.test_time import sample_transforms
    transforms = sample_transforms("sudoku", manifest, samples=8, seed=0)
    for t in transforms:                       # transforms[0] is the identity
        votes.append(t.invert(model(t.apply(inputs))))

Each task says which transforms keep its puzzles valid (`datasets.task.Task.
test_time_transforms`):

- Sudoku family (`sudoku`: 3×3 boxes; `sudoku_mini`: the manifest's `box`; `tiny_sudoku`:
  2×2), box r×c, side r·c: relabel the digits, permute the c bands of r rows and the rows
  inside each band, permute the r stacks of c columns and the columns inside each stack, and
  transpose (only when r == c) — the group `datasets.sudoku.augmentation_maps` draws from for
  the training augmentation. PAD (0) and blank (1) map to themselves.
- Maze: the 8 dihedral transforms of the 30×30 grid (datasets.dihedral order), token values
  unchanged; at most 8 samples.
- ARC: none — its test split already holds the augmented versions it was trained on, and
  `arc.ArcVoting` votes over those.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from datasets import sudoku
from datasets.dihedral import DIHEDRAL_NAMES
from datasets.generators import maze as maze_generator

STREAM = 7  # np.random.default_rng([seed, STREAM]): apart from the builders' streams
DRAW_BATCH = 64  # candidate transforms drawn at a time (vectorised)


@dataclass(frozen=True, eq=False)
class Transform:
    """One invertible augmentation of a task's token grids:
    out[:, j] = values[tokens[:, positions[j]]]."""

    name: str  # e.g. "identity", "digits+bands" ... for logs
    positions: np.ndarray  # int64 [L], a permutation of the sequence positions
    values: np.ndarray  # int64 [vocab], a permutation of token values (PAD/blank/walls fixed)

    def __post_init__(self) -> None:
        for field, array in (("positions", self.positions), ("values", self.values)):
            array = np.array(array, dtype=np.int64)  # a private, read-only copy
            if array.ndim != 1 or not np.array_equal(np.sort(array), np.arange(len(array))):
                raise ValueError(f"Transform {self.name!r}: {field} must be a permutation")
            array.setflags(write=False)
            object.__setattr__(self, field, array)

    def apply(self, tokens: np.ndarray) -> np.ndarray:
        """[B, L] (or [L]) integer tokens → the same shape and dtype; negative values (the
        labels' IGNORE_LABEL, -100) are moved but keep their value."""
        return _map(tokens, self.positions, self.values)

    def invert(self, tokens: np.ndarray) -> np.ndarray:
        """`apply`'s inverse, under the same rules."""
        return _map(tokens, np.argsort(self.positions), np.argsort(self.values))

    @property
    def is_identity(self) -> bool:
        return bool(
            (self.positions == np.arange(len(self.positions))).all()
            and (self.values == np.arange(len(self.values))).all()
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Transform):
            return NotImplemented
        return np.array_equal(self.positions, other.positions) and np.array_equal(
            self.values, other.values
        )

    def __hash__(self) -> int:
        return hash((self.positions.tobytes(), self.values.tobytes()))


def _map(tokens: np.ndarray, positions: np.ndarray, values: np.ndarray) -> np.ndarray:
    array = np.asarray(tokens)
    if array.dtype.kind not in "iu":
        raise TypeError(f"tokens must be integers, got {array.dtype}")
    if array.shape[-1:] != positions.shape:
        raise ValueError(
            f"tokens have {array.shape[-1:]} positions, the transform {len(positions)}"
        )
    moved = array[..., positions]
    negative = moved < 0
    index = np.where(negative, 0, moved)
    if index.size and index.max() >= len(values):
        raise ValueError(f"token {index.max()} outside the vocabulary of {len(values)}")
    return np.where(negative, moved, values[index]).astype(array.dtype, copy=False)


def sample_transforms(
    task_name: str, manifest: Mapping[str, Any], samples: int, seed: int
) -> list[Transform]:
    """`samples` distinct transforms of `task_name`'s grids, the first the identity, the others
    drawn with np.random.default_rng([seed, STREAM]) (the same arguments give the same list)."""
    from datasets.task import registry, task

    record = task(task_name)
    if record.test_time_transforms is None:
        supported = sorted(n for n, r in registry().items() if r.test_time_transforms)
        raise ValueError(
            f"task {task_name!r} has no test-time transforms (ARC votes over the augmented "
            f"versions its test split already holds); tasks that have them: {supported}"
        )
    if samples < 1:
        raise ValueError(f"samples={samples}: give 1 or more (the first is the identity)")
    return record.test_time_transforms(manifest, samples, seed)


# --------------------------------------------------------------------------- Sudoku family


def box_sudoku_transforms(
    box: tuple[int, int] | None = None,
) -> Callable[[Mapping[str, Any], int, int], list[Transform]]:
    """`Task.test_time_transforms` of a Sudoku task with `box`, or, None, the box in the
    manifest's arguments (`sudoku_mini`; its default when absent)."""

    def transforms(manifest: Mapping[str, Any], samples: int, seed: int) -> list[Transform]:
        if box is not None:
            shape = tuple(box)
        else:
            from datasets.mini_sudoku import DEFAULT_BOX

            shape = tuple(manifest.get("arguments", {}).get("box") or DEFAULT_BOX)
        side = shape[0] * shape[1]
        vocab = manifest.get("vocab", {}).get("size", side + 2)
        if vocab != side + 2 or manifest.get("seq_len", side * side) != side * side:
            raise ValueError(
                f"box {list(shape)} needs vocab {side + 2} and {side * side} cells; the "
                f"manifest has vocab {vocab} and seq_len {manifest.get('seq_len')}"
            )
        return sudoku_transforms(shape, samples, seed)

    return transforms


def sudoku_group_size(box: tuple[int, int]) -> int:
    """How many distinct transforms the group has (digits × row orders × column orders ×
    transpose when the box is square)."""
    r, c = box
    f = math.factorial
    rows = f(c) * f(r) ** c  # c bands of r rows
    cols = f(r) * f(c) ** r  # r stacks of c columns
    return f(r * c) * rows * cols * (2 if r == c else 1)


def sudoku_transforms(box: tuple[int, int], samples: int, seed: int) -> list[Transform]:
    """The identity and `samples` - 1 distinct random symmetries of Sudoku with `box`."""
    box = (int(box[0]), int(box[1]))
    side = box[0] * box[1]
    limit = sudoku_group_size(box)
    if samples > limit:
        raise ValueError(f"samples={samples}: {side}x{side} Sudoku has only {limit} symmetries")
    rng = np.random.default_rng([seed, STREAM])
    identity = Transform("identity", np.arange(side * side), np.arange(side + 2))
    out, seen = [identity], {identity}
    while len(out) < samples:
        index, digit_maps = sudoku.augmentation_maps(DRAW_BATCH, rng, box)
        values = np.zeros((DRAW_BATCH, side + 2), dtype=np.int64)  # PAD 0 → 0
        values[:, 1:] = digit_maps.astype(np.int64) + 1  # blank 1 → 1, digit d → map(d) + 1
        for positions, value in zip(index, values, strict=True):
            candidate = Transform(_sudoku_name(positions, value, box), positions, value)
            if candidate not in seen:
                seen.add(candidate)
                out.append(candidate)
                if len(out) == samples:
                    break
    return out


def _sudoku_name(positions: np.ndarray, values: np.ndarray, box: tuple[int, int]) -> str:
    """Which parts of the group a transform uses, e.g. "digits+bands+columns"."""
    r, c = box
    side = r * c
    grid = positions.reshape(side, side)
    transposed = r == c and side > 1 and grid[0, 1] - grid[0, 0] not in range(-side + 1, side)
    rows, cols = (
        (grid[:, 0] % side, grid[0] // side) if transposed else (grid[:, 0] // side, grid[0] % side)
    )
    parts = []
    if (values != np.arange(len(values))).any():
        parts.append("digits")
    for lines, (groups, size), names in (
        (rows, (c, r), ("bands", "rows")),
        (cols, (r, c), ("stacks", "columns")),
    ):
        blocks = lines.reshape(groups, size)
        if (blocks[:, 0] // size != np.arange(groups)).any():
            parts.append(names[0])
        if (blocks % size != np.arange(size)).any():
            parts.append(names[1])
    if transposed:
        parts.append("transpose")
    return "+".join(parts) or "identity"


# --------------------------------------------------------------------------- maze

MAZE_SIDE = 30
MAZE_VOCAB = 6  # PAD, wall, open, S, G, path: every value maps to itself


def dihedral_transform(k: int, side: int = MAZE_SIDE, vocab: int = MAZE_VOCAB) -> Transform:
    """Dihedral transform k (datasets.dihedral order) of a row-major side×side grid."""
    positions = maze_generator.dihedral(np.arange(side * side), k, flat=True)
    return Transform(DIHEDRAL_NAMES[k], positions, np.arange(vocab))


def maze_transforms(manifest: Mapping[str, Any], samples: int, seed: int) -> list[Transform]:
    """`Task.test_time_transforms` of the maze: the identity and `samples` - 1 of the other 7
    dihedral transforms, in a seeded random order."""
    if samples > len(DIHEDRAL_NAMES):
        raise ValueError(
            f"samples={samples}: a maze has only {len(DIHEDRAL_NAMES)} dihedral transforms; "
            f"give at most {len(DIHEDRAL_NAMES)}"
        )
    cells = int(manifest.get("seq_len", MAZE_SIDE * MAZE_SIDE))
    side = math.isqrt(cells)
    if side * side != cells:
        raise ValueError(f"maze seq_len {cells} is not a square grid")
    vocab = int(manifest.get("vocab", {}).get("size", MAZE_VOCAB))
    others = np.random.default_rng([seed, STREAM]).permutation(len(DIHEDRAL_NAMES) - 1) + 1
    chosen = [0, *others[: samples - 1].tolist()]
    return [dihedral_transform(k, side, vocab) for k in chosen]

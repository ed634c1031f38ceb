"""In-memory layout of a puzzle dataset (TRM_SPEC §3.1): group → puzzle → example.

- a *group* is one original puzzle with all its augmented copies;
- a *puzzle* is one copy with one puzzle identifier;
- an *example* is one (input, label) pair of flattened tokens.

`puzzle_indices` holds example offsets (length #puzzles + 1) and `group_indices` puzzle offsets
(#groups + 1). Labels use the pad id where there is no target; loaders map it to −100.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PuzzleArrays:
    inputs: np.ndarray  # uint8 [examples, seq_len]
    labels: np.ndarray  # uint8 [examples, seq_len]
    puzzle_ids: np.ndarray  # int32 [puzzles]
    puzzle_indices: np.ndarray  # int64 [puzzles + 1]
    group_indices: np.ndarray  # int64 [groups + 1]
    vocab_size: int
    pad_id: int = 0
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # per-example int columns

    def __post_init__(self) -> None:
        examples = self.inputs.shape[0]
        if self.labels.shape != self.inputs.shape:
            raise ValueError(
                f"labels shape {self.labels.shape} != inputs shape {self.inputs.shape}"
            )
        if self.puzzle_indices[0] != 0 or self.puzzle_indices[-1] != examples:
            raise ValueError("puzzle_indices must start at 0 and end at the number of examples")
        if self.group_indices[0] != 0 or self.group_indices[-1] != len(self.puzzle_ids):
            raise ValueError("group_indices must start at 0 and end at the number of puzzles")
        for name, column in self.extras.items():
            if len(column) != examples:
                raise ValueError(f"extra column {name!r} has {len(column)} rows, not {examples}")

    @property
    def seq_len(self) -> int:
        return int(self.inputs.shape[1])

    @property
    def num_examples(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def num_groups(self) -> int:
        return len(self.group_indices) - 1

    @property
    def num_puzzle_ids(self) -> int:
        return int(self.puzzle_ids.max()) + 1 if len(self.puzzle_ids) else 0

    def example_puzzle_ids(self) -> np.ndarray:
        """Puzzle identifier of every example."""
        counts = np.diff(self.puzzle_indices)
        return np.repeat(self.puzzle_ids, counts)

    @classmethod
    def one_example_per_puzzle(
        cls,
        inputs: np.ndarray,
        labels: np.ndarray,
        group_sizes: np.ndarray,
        vocab_size: int,
        extras: dict[str, np.ndarray] | None = None,
        puzzle_ids: np.ndarray | None = None,
    ) -> PuzzleArrays:
        """Sudoku/Maze layout: every puzzle is one example; groups are consecutive rows."""
        examples = len(inputs)
        return cls(
            inputs=inputs,
            labels=labels,
            puzzle_ids=(np.zeros(examples, dtype=np.int32) if puzzle_ids is None else puzzle_ids),
            puzzle_indices=np.arange(examples + 1, dtype=np.int64),
            group_indices=np.concatenate(([0], np.cumsum(group_sizes))).astype(np.int64),
            vocab_size=vocab_size,
            extras=dict(extras or {}),
        )

"""Training and test batches from `PuzzleArrays` (TRM_SPEC §3.1).

`TrainBatches` is the paper's sampler: every epoch visits each group once in a random order,
picks one random puzzle (augmentation) of the group and adds its examples (a random subset when
they overflow the batch); incomplete final batches are dropped. It is endless and resumable:
each epoch's plan is a pure function of (seed, epoch), and `state_dict()` is its position.

`eval_batches` yields sequential batches; the last one is padded with PAD inputs, ignored
labels and puzzle id 0, and padded rows have no valid labels so metrics skip them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from datasets.arrays import PuzzleArrays

IGNORE_LABEL = -100  # the label value the trainer ignores


def _batch(arrays: PuzzleArrays, rows: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
    labels = arrays.labels[rows].astype(np.int64)
    labels[labels == arrays.pad_id] = IGNORE_LABEL
    batch = {
        "inputs": arrays.inputs[rows].astype(np.int32),
        "labels": labels,
        "puzzle_ids": ids.astype(np.int64),
    }
    for name, column in arrays.extras.items():
        batch[name] = column[rows]
    return batch


class TrainBatches:
    def __init__(self, arrays: PuzzleArrays, batch_size: int, seed: int):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.arrays = arrays
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.batch_in_epoch = 0
        self._plan: list[np.ndarray] | None = None
        if not self._epoch_plan(0):
            raise ValueError(
                f"batch_size={batch_size} is larger than one epoch of "
                f"{arrays.num_groups} groups: no full batch can be formed"
            )

    def _epoch_plan(self, epoch: int) -> list[np.ndarray]:
        """Example rows of every full batch of `epoch`."""
        a = self.arrays
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(a.num_groups)
        first, last = a.group_indices[order], a.group_indices[order + 1]
        puzzles = first + (rng.random(len(order)) * (last - first)).astype(np.int64)
        batches, current, size = [], [], 0
        for puzzle in puzzles:
            start, stop = a.puzzle_indices[puzzle], a.puzzle_indices[puzzle + 1]
            take = min(int(stop - start), self.batch_size - size)
            current.append(start + rng.choice(int(stop - start), take, replace=False))
            size += take
            if size == self.batch_size:
                batches.append(np.concatenate(current))
                current, size = [], 0
        return batches  # the incomplete tail is dropped

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._plan is None:
            self._plan = self._epoch_plan(self.epoch)
        if self.batch_in_epoch >= len(self._plan):
            self.epoch += 1
            self.batch_in_epoch = 0
            self._plan = self._epoch_plan(self.epoch)
        rows = self._plan[self.batch_in_epoch]
        self.batch_in_epoch += 1
        ids = self.arrays.example_puzzle_ids()[rows]
        return _batch(self.arrays, rows, ids)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"loader state was saved with seed {state['seed']}, not {self.seed}")
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self._plan = None


def eval_batches(arrays: PuzzleArrays, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    # Every batch has one shape (compiled graphs see no new shapes); a split smaller than a
    # batch is that shape itself rather than padding, which would be pure waste.
    batch_size = max(1, min(batch_size, arrays.num_examples))
    ids = arrays.example_puzzle_ids()
    for start in range(0, arrays.num_examples, batch_size):
        rows = np.arange(start, min(start + batch_size, arrays.num_examples))
        batch = _batch(arrays, rows, ids[rows])
        missing = batch_size - len(rows)
        if missing:
            for name, value in batch.items():
                fill = (
                    IGNORE_LABEL if name == "labels" else arrays.pad_id if name == "inputs" else 0
                )
                pad = np.full((missing, *value.shape[1:]), fill, dtype=value.dtype)
                batch[name] = np.concatenate([value, pad])
        yield batch

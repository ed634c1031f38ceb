"""What orchestration needs to know per task: how to build its dataset at a scale, which extra
columns evaluation reads, and which evaluation hooks score it (TRM_SPEC §4)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from datasets import arc, maze
from datasets.format import read_manifest, read_split
from datasets.store import DatasetStore
from trm_core import EvalHook, GroupedExactAccuracy, ModelConfig, TrainConfig, Trainer


@dataclass(frozen=True)
class TaskSpec:
    builder: str  # task name for datasets.build
    extras: tuple[str, ...]  # test-split columns the hooks read
    hooks: Callable[[dict[str, Any]], list[EvalHook]]  # manifest → fresh hooks


TASKS: dict[str, TaskSpec] = {
    "tiny_sudoku": TaskSpec(
        "tiny_sudoku", ("givens",), lambda manifest: [GroupedExactAccuracy("givens")]
    ),
    "sudoku": TaskSpec("sudoku", (), lambda manifest: []),
    # scale=mini's Sudoku: graded blanks, scored per level too (MINI_SCALE.md)
    "sudoku_mini": TaskSpec(
        "sudoku_mini", ("blanks",), lambda manifest: [GroupedExactAccuracy("blanks")]
    ),
    "maze": TaskSpec("maze", (), lambda manifest: [maze.MazeValidity()]),
    "arc1": TaskSpec(
        "arc1",
        arc.VOTING_COLUMNS,
        lambda manifest: [
            arc.ArcVoting(test_pairs_per_task=np.array(manifest["arc"]["test_pairs_per_task"]))
        ],
    ),
    "arc2": TaskSpec(
        "arc2",
        arc.VOTING_COLUMNS,
        lambda manifest: [
            arc.ArcVoting(test_pairs_per_task=np.array(manifest["arc"]["test_pairs_per_task"]))
        ],
    ),
}


def task_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]


def task_shape(manifest: dict[str, Any]) -> dict[str, int]:
    """The ModelConfig fields fixed by the data."""
    return {
        "vocab_size": manifest["vocab"]["size"],
        "seq_len": manifest["seq_len"],
        "num_puzzle_ids": max(1, manifest["num_puzzle_ids"]),
    }


def trial_trainer(spec: dict[str, Any], device: Any = None) -> Trainer:
    """A fresh Trainer for the trial's resolved configs (on `device`, else the spec's)."""
    return Trainer(
        ModelConfig.from_dict(spec["model"]),
        TrainConfig.from_dict(spec["train"]),
        device=spec["device"] if device is None else device,
    )


def open_trial_data(spec: dict[str, Any]):
    """(manifest, task spec, train split memory-mapped, test split with the hooks' columns)
    of a trial's verified dataset; the data's own task decides its scoring."""
    local = DatasetStore(spec["dataset"]["store"], cache_dir=spec["dataset"]["cache"]).fetch(
        spec["dataset"]["id"]
    )
    manifest = read_manifest(local)  # verified by fetch: no second read from the store
    task = task_spec(manifest["task"])
    train = read_split(local, "train", manifest, memory_map=True)
    test = read_split(local, "test", manifest, extras=task.extras)
    return manifest, task, train, test

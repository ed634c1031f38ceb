"""Data for a trial: the fields a task's data fixes in the model, the trial's Trainer, and its
verified dataset with the task record (datasets/tasks/) that scores it (TRM_SPEC §4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from datasets.format import read_manifest, read_split
from datasets.store import DatasetStore
from datasets.task import task as data_task
from trm_core import Trainer

if TYPE_CHECKING:
    from orchestration.trial_spec import DatasetRef, TrialSpec


def shape_without_data(task: str, arguments: Mapping[str, Any] | None = None) -> dict[str, int]:
    """The ModelConfig fields a task's data fixes, from its token layout (datasets/tasks/)
    without building: `arguments` are the scale's data settings, which may name another
    builder (`scale=mini` builds 6×6 `sudoku_mini` for the sudoku task) and its sizes."""
    arguments = dict(arguments or {})
    builder = arguments.pop("builder", None) or task
    layout = data_task(builder).layout(arguments)
    return {"vocab_size": layout.vocab_size, "seq_len": layout.seq_len, "num_puzzle_ids": 1}


def task_shape(manifest: dict[str, Any]) -> dict[str, int]:
    """The ModelConfig fields fixed by the data."""
    return {
        "vocab_size": manifest["vocab"]["size"],
        "seq_len": manifest["seq_len"],
        "num_puzzle_ids": max(1, manifest["num_puzzle_ids"]),
    }


def trial_trainer(spec: TrialSpec, device: Any = None) -> Trainer:
    """A fresh Trainer for the trial's resolved configs (on `device`, else the spec's)."""
    return Trainer(spec.model, spec.train, device=spec.device if device is None else device)


def open_trial_data(dataset: DatasetRef):
    """(manifest, task record, train split memory-mapped, test split with the hooks' columns)
    of a trial's verified dataset; the data's own task decides its scoring."""
    store = DatasetStore(dataset.store, cache_dir=dataset.cache)
    local = store.fetch(dataset.id)
    manifest = read_manifest(local)  # verified by fetch: no second read from the store
    task = data_task(manifest["task"])
    # Token maps go beside the datasets cache, not in it (its sub-folders are dataset ids) nor
    # in `local`, which for a local store is the store's own folder.
    mmap_dir = store.cache_dir.parent / "mmap"
    train = read_split(local, "train", manifest, memory_map=True, mmap_dir=mmap_dir)
    test = read_split(local, "test", manifest, extras=task.eval_columns)
    return manifest, task, train, test

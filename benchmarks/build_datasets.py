"""Wall time and peak memory of dataset builds (each build runs in its own process).

    python benchmarks/build_datasets.py [--sudoku-source DIR] [--maze-source DIR]
                                        [--only sudoku|sudoku-full|maze|arc1]
                                        [--arc-augment 1000] [--concept-dir DIR]

Sudoku: 1000 puzzles × (1000 augmentations + original) = 1,001,000 training examples. Without
`--sudoku-source`, a timing-only source of valid puzzles (relabelled and shuffled copies of one
grid, half the cells blanked) is written first: build cost does not depend on difficulty.
Sudoku full size (`--only sudoku-full`, not part of the default run): the same build from a
timing-only source the size of the published Sudoku-Extreme (3.8M train + 423k test rows, about
780 MB), written once under .trm/cache/bench/ and reused; printed beside the official builder's
figures as the reference they are.
Maze (`--only maze`, not part of the default run): the paper's build (1000 train + 1000 test
30×30 mazes, train × 8 dihedral images) through the CSV path, every row checked to be a shortest
path. Without `--maze-source` a source is generated once with `datasets.generate maze` (about
4 min on 2 cores) under .trm/cache/bench/ and reused.
ARC-AGI-1: training + evaluation + ConceptARC with `--arc-augment` versions per task (the
paper's 1000 by default). Prints figures and the load average (other jobs on the same cores
slow a build down); asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from datasets import sudoku

FULL_TRAIN, FULL_TEST = 3_831_994, 423_000  # about the published Sudoku-Extreme CSVs
BENCH_CACHE = Path(".trm") / "cache" / "bench"
FULL_SOURCE = BENCH_CACHE / "sudoku-full-v1"  # v1: this file's recipe
MAZE_SOURCE = BENCH_CACHE / "maze-1000-v1"  # generator seed 0, 1000 + 1000 mazes
WRITE_CHUNK = 200_000  # rows generated and written at a time (bounds the writer's memory)
# The official builder (HRM's build_sudoku_dataset.py) on a 3.83M-row source, 1000 × 1001,
# measured on the same kind of 2-core machine (issue 10). A reference, not measured here.
OFFICIAL_SECONDS, OFFICIAL_PEAK_GIB = 73.9, 3.4
BASE = np.array(
    [(3 * (r % 3) + r // 3 + c) % 9 + 1 for r in range(9) for c in range(9)], dtype=np.uint8
)


def _timing_rows(count: int, rng: np.random.Generator) -> bytes:
    """`count` CSV lines of valid puzzles: random symmetries of one grid, half the cells blank,
    integer ratings 0–99 (variable width, like the published file)."""
    index, digits = sudoku.augmentation_maps(count, rng)
    answers = np.take_along_axis(digits, BASE[index].astype(np.intp), axis=1)
    questions = np.where(rng.random(answers.shape) < 0.5, answers, 0).astype(np.uint8)
    ratings = rng.integers(0, 100, count).astype("S")
    return sudoku.csv_bytes(questions, answers, ratings, source="timing")


def timing_source(directory: Path, train: int, test: int) -> Path:
    """Write train.csv and test.csv of timing-only puzzles (seeded) into `directory`."""
    rng = np.random.default_rng(0)
    header = (",".join(sudoku.HEADER) + "\n").encode()
    for split, count in (("train", train), ("test", test)):
        with open(directory / f"{split}.csv", "wb") as handle:
            handle.write(header)
            for start in range(0, count, WRITE_CHUNK):
                handle.write(_timing_rows(min(WRITE_CHUNK, count - start), rng))
    return directory


def cached_source(folder: Path, write: Callable[[Path], object]) -> Path:
    """A timing source written once by `write(staging)`: into a private folder renamed into
    place, so a killed run leaves no half-written source that a later run would trust."""
    if (folder / "test.csv").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{folder.name}.tmp-", dir=folder.parent))
    try:
        started = time.perf_counter()
        write(staging)
        print(f"wrote {folder} in {time.perf_counter() - started:.1f} s", flush=True)
        os.rename(staging, folder)  # fails if another run published first: keep theirs
    except OSError:
        if not (folder / "test.csv").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def full_size_source() -> Path:
    return cached_source(FULL_SOURCE, lambda out: timing_source(out, FULL_TRAIN, FULL_TEST))


def maze_source() -> Path:
    def generate(out: Path) -> None:
        command = ["datasets.generate", "maze", "--train", "1000", "--test", "1000"]
        subprocess.run(
            [sys.executable, "-m", *command, "--seed", "0", "--out", str(out)], check=True
        )

    return cached_source(MAZE_SOURCE, generate)


def run_build(arguments: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS GiB of the build process, dataset id)."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "datasets.build", *arguments, "--quiet"],
            stdout=stdout,
            stderr=stderr,
        )
        # wait4: this child's own peak (RUSAGE_CHILDREN is the max over every child so far).
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0), stderr.seek(0)
        if process.returncode:
            raise RuntimeError(f"build failed ({process.returncode}):\n{stderr.read()}")
        return elapsed, usage.ru_maxrss / 2**20, stdout.read().strip().splitlines()[-1]


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sudoku-source", type=Path)
    parser.add_argument("--maze-source", type=Path)
    parser.add_argument("--only", choices=["sudoku", "sudoku-full", "maze", "arc1"], default=None)
    parser.add_argument("--arc-augment", type=int, default=1000)
    parser.add_argument(
        "--concept-dir",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "data" / "conceptarc",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def report(label: str, arguments: list[str]) -> tuple[float, float]:
            out = tmp / label.replace(" ", "_")
            before = load()
            seconds, peak, ident = run_build([*arguments, "--out", str(out)])
            size = sum(p.stat().st_size for p in (out / ident).rglob("*.parquet"))
            print(
                f"{label}: {seconds:.1f} s, peak RSS {peak:.2f} GiB, "
                f"{size / 2**20:.1f} MiB of Parquet, id {ident} "
                f"({before} before, {load()} after)",
                flush=True,
            )
            shutil.rmtree(out, ignore_errors=True)
            return seconds, peak

        sudoku_build = ["sudoku", "--subsample", "1000", "--augment", "1000"]
        if args.only in (None, "sudoku"):
            source = args.sudoku_source or timing_source(tmp, train=5000, test=2000)
            report("sudoku 1000 x 1001 (+2000 test)", [*sudoku_build, "--source", str(source)])
        if args.only == "sudoku-full":
            source = full_size_source()
            report(
                f"sudoku 1000 x 1001 from {FULL_TRAIN:,} rows (+{FULL_TEST:,} test)",
                [*sudoku_build, "--source", str(source)],
            )
            print(
                f"reference, the official builder on the same source size and kind of machine: "
                f"{OFFICIAL_SECONDS} s, {OFFICIAL_PEAK_GIB} GiB (issue 10; not measured here)"
            )
        if args.only == "maze":
            source = args.maze_source or maze_source()
            report(
                "maze 1000 x 8 dihedral (+1000 test)",
                ["maze", "--dihedral", "--source", str(source)],
            )
        if args.only in (None, "arc1"):
            if not args.concept_dir.is_dir():
                print(f"arc1: skipped, no ConceptARC folder at {args.concept_dir}")
                return
            report(
                f"arc1 x {args.arc_augment}",
                [
                    "arc1",
                    "--concept-dir",
                    str(args.concept_dir),
                    "--augment",
                    str(args.arc_augment),
                    "--seed",
                    "42",
                ],
            )


if __name__ == "__main__":
    main()

"""Wall time and peak memory of dataset builds (each build runs in its own process).

    python benchmarks/build_datasets.py [--sudoku-source DIR] [--only sudoku|arc1]
                                        [--arc-augment 1000] [--concept-dir DIR]

Sudoku: 1000 puzzles × (1000 augmentations + original) = 1,001,000 training examples. Without
`--sudoku-source`, a timing-only source of valid puzzles (relabelled and shuffled copies of one
grid, half the cells blanked) is written first: build cost does not depend on difficulty.
ARC-AGI-1: training + evaluation + ConceptARC with `--arc-augment` versions per task (the
paper's 1000 by default). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from datasets import sudoku
from datasets.sudoku import SudokuRows


def timing_source(directory: Path, train: int, test: int) -> Path:
    base = np.array(
        [(3 * (r % 3) + r // 3 + c) % 9 + 1 for r in range(9) for c in range(9)], dtype=np.uint8
    )
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        index, digits = sudoku.augmentation_maps(count, rng)
        answers = np.take_along_axis(digits, base[index].astype(np.intp), axis=1)
        questions = np.where(rng.random(answers.shape) < 0.5, answers, 0).astype(np.uint8)
        sudoku.write_csv(
            directory / f"{split}.csv",
            SudokuRows(
                questions, answers, np.zeros(count), np.array(["timing"] * count, dtype=object)
            ),
        )
    return directory


def run_build(arguments: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS GiB of the build process, dataset id)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "datasets.build", *arguments, "--quiet"],
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the max over all waited-for children; report it when it grew.
    return elapsed, max(peak, before) / 2**20, result.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sudoku-source", type=Path)
    parser.add_argument("--only", choices=["sudoku", "arc1"], default=None)
    parser.add_argument("--arc-augment", type=int, default=1000)
    parser.add_argument(
        "--concept-dir",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "data" / "conceptarc",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def report(label: str, arguments: list[str]) -> None:
            out = tmp / label
            seconds, peak, ident = run_build([*arguments, "--out", str(out)])
            size = sum(p.stat().st_size for p in (out / ident).rglob("*.parquet"))
            print(
                f"{label}: {seconds:.1f} s, peak RSS {peak:.2f} GiB, "
                f"{size / 2**20:.1f} MiB of Parquet, id {ident}",
                flush=True,
            )

        if args.only in (None, "sudoku"):
            source = args.sudoku_source or timing_source(tmp, train=5000, test=2000)
            report(
                "sudoku 1000 x 1001 (+2000 test)",
                ["sudoku", "--source", str(source), "--subsample", "1000", "--augment", "1000"],
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

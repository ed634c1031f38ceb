"""Generate offline substitutes for the published datasets, in the published CSV layouts.

    python -m datasets.generate sudoku --train 1000 --test 2000 --seed S --out DIR
    python -m datasets.generate maze --train 1000 --test 1000 --seed S --out DIR

The output folder (train.csv, test.csv) is a `--source` for `python -m datasets.build`.
Each generator prints the distribution it produced (ratings, path lengths).
"""

from __future__ import annotations

import importlib
import sys

GENERATORS = {"sudoku": "datasets.generators.sudoku", "maze": "datasets.generators.maze"}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if argv else 2)
    task, rest = argv[0], argv[1:]
    if task not in GENERATORS:
        print(
            f"error: unknown generator {task!r}; choose one of {sorted(GENERATORS)}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    importlib.import_module(GENERATORS[task]).main(rest)


if __name__ == "__main__":
    main()

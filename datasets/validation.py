"""Reporting malformed source rows: all of them counted, the first few shown by line number.

Readers check every row of a file before raising, so one run shows the user what to fix; a file
with millions of bad rows must not hold millions of messages, so only the first
MAX_REPORTED_ERRORS (by line) are formatted and kept, and the rest are counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

MAX_REPORTED_ERRORS = 10


class RowErrors:
    """The errors found in one file: `add` them as the rows stream past, then `raise_if_any`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.count = 0
        self.shown: list[tuple[int, str]] = []  # (line, message), the first few by line

    def add(self, lines: Sequence[int] | np.ndarray, message: str | Callable[[int], str]) -> None:
        """One error on each of `lines`. `message` is the text, or a function of the index into
        `lines` (called only for the rows that may be shown, so values can be quoted cheaply)."""
        lines = np.asarray(lines, dtype=np.int64)
        if not len(lines):
            return
        self.count += len(lines)
        first = np.argsort(lines, kind="stable")[:MAX_REPORTED_ERRORS]
        for i in first.tolist():
            self.shown.append((int(lines[i]), message(i) if callable(message) else message))
        self.shown.sort(key=lambda error: error[0])  # stable: a line's errors keep their order
        del self.shown[MAX_REPORTED_ERRORS:]

    def raise_if_any(self, note: str = "") -> None:
        """One ValueError naming the file, the number of errors and the first few by line."""
        if not self.count:
            return
        shown = "\n  ".join(f"line {line}: {message}" for line, message in self.shown)
        more = self.count - len(self.shown)
        raise ValueError(
            f"{self.path}: {self.count} malformed row(s):\n  {shown}"
            + (f"\n  ... and {more} more" if more > 0 else "")
            + (f"\n  ({note})" if note else "")
        )

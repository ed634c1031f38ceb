"""Reporting malformed source rows: all of them at once, by line number, capped for reading."""

from __future__ import annotations

from pathlib import Path

MAX_REPORTED_ERRORS = 10


def raise_row_errors(path: str | Path, errors: list[str]) -> None:
    """Raise one ValueError listing `errors` ("line N: what is wrong") in line order."""
    if not errors:
        return
    errors = sorted(errors, key=lambda e: int(e.split(":")[0].split()[1]))
    shown = "\n  ".join(errors[:MAX_REPORTED_ERRORS])
    more = len(errors) - MAX_REPORTED_ERRORS
    raise ValueError(
        f"{path}: {len(errors)} malformed row(s):\n  {shown}"
        + (f"\n  ... and {more} more" if more > 0 else "")
    )

"""The `key=value` command lines of the entry points that are not Hydra apps (report,
rescore): one parser, one set of errors, one default tracking URI."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from orchestration.tracking import default_tracking_uri


def key_values(argv: list[str] | None, options: dict[str, Any], doc: str) -> dict[str, Any]:
    """`options` (key → default) updated from `argv` (default: sys.argv[1:]); --help prints
    `doc`; an unknown or malformed item, or a missing `suite`, exits 2 saying what is allowed."""
    items = sys.argv[1:] if argv is None else argv
    if any(item in ("-h", "--help", "help") for item in items):
        print(doc.strip())
        raise SystemExit(0)
    values = dict(options)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in values:
            fail(f"expected key=value with key in {sorted(values)}, got {item!r} (see --help)")
        values[key] = value
    if "suite" in values and not values["suite"]:
        fail("suite=NAME is required (see --help)")
    return values


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def tracking_uri(given: str | None) -> str:
    """The given URI, else $MLFLOW_TRACKING_URI, else the embedded sqlite store here."""
    return given or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(Path.cwd())

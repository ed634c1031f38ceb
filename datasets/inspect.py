"""Print a dataset's manifest summary and a few of its grids as text.

    python -m datasets.inspect .trm/datasets/<dataset_id> [--split train] [--count 3]
    python -m datasets.inspect s3://bucket/prefix/<dataset_id>

The URI is a store location followed by the dataset id; the copy is fetched and verified first.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from datasets.format import read_split
from datasets.store import DatasetStore


def split_uri(uri: str) -> tuple[str, str]:
    root, _, ident = uri.rstrip("/").rpartition("/")
    if not root or not ident:
        raise ValueError(f"{uri!r} is not STORE/DATASET_ID (e.g. .trm/datasets/<id>)")
    return root, ident


def render_grid(tokens: np.ndarray, token_names: list[str]) -> str:
    """One character per cell: PAD as ' ', other tokens by the first character of their name
    (digits and colours by their value)."""
    side = math.isqrt(len(tokens))
    symbols = []
    for name in token_names:
        symbols.append(" " if name == "PAD" else "." if name in ("blank", "EOS") else name[-1])
    chars = np.array(symbols)[tokens]
    width = side if side * side == len(tokens) else len(tokens)
    return "\n".join("".join(row) for row in chars.reshape(-1, width))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m datasets.inspect", description=__doc__.splitlines()[0]
    )
    parser.add_argument("uri", help="STORE/DATASET_ID, e.g. .trm/datasets/<id> or s3://b/p/<id>")
    parser.add_argument("--split", default="train")
    parser.add_argument("--count", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        root, ident = split_uri(args.uri)
        store = DatasetStore(root)
        manifest = store.manifest(ident)
        local = store.fetch(ident)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    summary = {k: v for k, v in manifest.items() if k != "splits"}
    summary["splits"] = {
        name: {k: v for k, v in split.items() if k != "shards"} | {"shards": len(split["shards"])}
        for name, split in manifest["splits"].items()
    }
    print(f"dataset {ident} (verified)")
    print(json.dumps(summary, indent=2))
    arrays = read_split(local, args.split, manifest)
    names = manifest["vocab"]["tokens"]
    for row in range(min(args.count, arrays.num_examples)):
        print(f"\n{args.split} example {row} input:\n{render_grid(arrays.inputs[row], names)}")
        print(f"label:\n{render_grid(arrays.labels[row], names)}")


if __name__ == "__main__":
    main()

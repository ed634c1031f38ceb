"""On-disk format of a built dataset: Parquet shards per split plus `manifest.json`.

    <dataset>/manifest.json
    <dataset>/train/part-00000.parquet ...
    <dataset>/test/part-00000.parquet ...

One Parquet row is one example, in group → puzzle → example order (TRM_SPEC §3.1):

| column | type | meaning |
|---|---|---|
| `inputs`, `labels` | fixed_size_binary(seq_len) | uint8 tokens; PAD (0) in labels = no target |
| `group` | int32 | ordinal of the original puzzle/task within the split |
| `puzzle` | int32 | ordinal of the augmented copy within the split |
| `puzzle_id` | int32 | puzzle-embedding identifier (shared by train and test for ARC) |
| `aug_id` | int32 | augmentation index within the group (0 = the original) |
| extras | int64 / float64 / fixed binary | task-specific (rating, dihedral id, colour map) |

The manifest records builder version, arguments, seed, source digests, vocabulary, seq_len and
every shard's sha256 and row count; it holds no timestamps or paths of the build machine, so the
same inputs give the same bytes. The dataset id is the sha256 of the canonical manifest JSON.
The manifest is written last: a folder without one is not a dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datasets.arrays import PuzzleArrays

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_ROWS = 1 << 18  # 262,144 examples per shard
ROW_GROUP_ROWS = 1 << 14  # streaming granularity
SPLITS = ("train", "test")


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def dataset_id(manifest: dict[str, Any]) -> str:
    """Content address: sha256 of the canonical manifest (which holds every shard's sha256)."""
    return hashlib.sha256(canonical_json(manifest)).hexdigest()[:32]


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fixed_binary(matrix: np.ndarray) -> pa.Array:
    matrix = np.ascontiguousarray(matrix, dtype=np.uint8)
    width = matrix.shape[1]
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(matrix), [None, pa.py_buffer(matrix.tobytes())]
    )


def _column(values: np.ndarray) -> pa.Array:
    """Vectors become fixed-size binary (uint8 rows); scalars keep their numpy dtype."""
    return _fixed_binary(values) if values.ndim == 2 else pa.array(values)


def _matrix(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    data = np.frombuffer(column.buffers()[1], dtype=np.uint8)
    start = column.offset * width
    return data[start : start + len(column) * width].reshape(len(column), width)


def write_split(
    arrays: PuzzleArrays,
    directory: Path,
    split: str,
    puzzle_columns: dict[str, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """Write one split as shards under directory/split; returns their manifest entries.

    `puzzle_columns` are per-puzzle values (e.g. dihedral id, colour map) repeated per example.
    """
    out = directory / split
    out.mkdir(parents=True, exist_ok=True)
    examples_per_puzzle = np.diff(arrays.puzzle_indices)
    puzzle_of_example = np.repeat(
        np.arange(len(arrays.puzzle_ids), dtype=np.int64), examples_per_puzzle
    )
    puzzles_per_group = np.diff(arrays.group_indices)
    group_of_puzzle = np.repeat(np.arange(arrays.num_groups, dtype=np.int64), puzzles_per_group)
    aug_of_puzzle = np.arange(len(arrays.puzzle_ids)) - arrays.group_indices[group_of_puzzle]
    columns: dict[str, np.ndarray] = {
        "group": group_of_puzzle[puzzle_of_example].astype(np.int32),
        "puzzle": puzzle_of_example.astype(np.int32),
        "puzzle_id": arrays.puzzle_ids[puzzle_of_example].astype(np.int32),
        "aug_id": aug_of_puzzle[puzzle_of_example].astype(np.int32),
    }
    for name, values in (puzzle_columns or {}).items():
        columns[name] = values[puzzle_of_example]
    columns.update(arrays.extras)

    shards = []
    for index, start in enumerate(range(0, max(arrays.num_examples, 1), SHARD_ROWS)):
        stop = min(start + SHARD_ROWS, arrays.num_examples)
        table = pa.table(
            {
                "inputs": _fixed_binary(arrays.inputs[start:stop]),
                "labels": _fixed_binary(arrays.labels[start:stop]),
                **{name: _column(values[start:stop]) for name, values in columns.items()},
            }
        )
        relative = f"{split}/part-{index:05d}.parquet"
        pq.write_table(
            table,
            directory / relative,
            compression="zstd",
            row_group_size=ROW_GROUP_ROWS,
            write_statistics=False,
        )
        shards.append(
            {
                "path": relative,
                "rows": int(stop - start),
                "bytes": (directory / relative).stat().st_size,
                "sha256": sha256_file(directory / relative),
            }
        )
    return shards


def split_summary(arrays: PuzzleArrays, shards: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "examples": arrays.num_examples,
        "puzzles": len(arrays.puzzle_ids),
        "groups": arrays.num_groups,
        "shards": shards,
    }


def write_manifest(directory: Path, manifest: dict[str, Any]) -> str:
    """Write manifest.json last (atomically) and return the dataset id."""
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_bytes(canonical_json(manifest))
    os.replace(tmp, directory / MANIFEST)
    return dataset_id(manifest)


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{directory} has no {MANIFEST}: not a complete dataset")
    return json.loads(path.read_bytes())


# Cache files this process has hashed and found equal to their sidecar's sha256, keyed by
# (path, inode, size, mtime_ns) → sha256: a trial actor reused for several trials hashes each
# file once, while a file replaced or rewritten since (new inode, size or mtime) is re-checked.
# Hashing costs about 0.65 s per GiB here (hashlib.sha256 in 256 KiB-4 MiB blocks, file in the
# page cache, measured on this 2-core machine): ~2 s for an ARC-scale ~3 GB split, once.
_VERIFIED_CACHES: dict[tuple[str, int, int, int], str] = {}
MMAP_CACHE_VERSION = 1


class _StaleCache(Exception):
    """The cache file disagrees with its sidecar (or the sidecar is missing or unreadable)."""


def _open_verified_cache(cache: Path, expected: dict[str, Any]) -> np.memmap:
    """Map `cache` if it holds exactly what `expected` and its sidecar say.

    The .npy is opened first and the sidecar read after: builders publish the sidecar before
    the .npy, so the sidecar read is at least as new as the open file. Hash, header and mapping
    all use that one open file, so a concurrent replacement cannot slip in between the check
    and the map. Raises FileNotFoundError when there is no .npy yet, _StaleCache on a mismatch.
    """
    with open(cache, "rb") as handle:
        stat = os.fstat(handle.fileno())
        try:
            recorded = json.loads(cache.with_suffix(".json").read_bytes())
        except FileNotFoundError:
            raise _StaleCache("its sidecar .json is missing") from None
        except (OSError, ValueError) as err:
            raise _StaleCache(f"its sidecar .json is unreadable ({err})") from None
        if not isinstance(recorded, dict):
            raise _StaleCache("its sidecar .json is not an object")
        for key, value in {**expected, "bytes": stat.st_size}.items():
            if recorded.get(key) != value:
                raise _StaleCache(
                    f"{key}: expected {value!r}, the sidecar says {recorded.get(key)!r}"
                )
        key = (str(cache), stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if _VERIFIED_CACHES.get(key) != recorded.get("sha256"):
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
            if digest != recorded.get("sha256"):
                raise _StaleCache(
                    f"sha256: file has {digest}, the sidecar says {recorded.get('sha256')}"
                )
            _VERIFIED_CACHES[key] = digest
        handle.seek(0)
        shape = (expected["rows"], expected["seq_len"])
        try:
            version = np.lib.format.read_magic(handle)
            header = (
                np.lib.format.read_array_header_1_0(handle)
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0(handle)
            )
        except ValueError as err:
            raise _StaleCache(f"unreadable .npy header ({err})") from None
        if header != (shape, False, np.dtype(np.uint8)):
            raise _StaleCache(f".npy header {header} is not a C-order uint8 {shape}")
        return np.memmap(handle, dtype=np.uint8, mode="r", shape=shape, offset=handle.tell())


def _build_cache(
    directory: Path,
    split: str,
    manifest: dict[str, Any],
    column: str,
    cache: Path,
    expected: dict[str, Any],
) -> None:
    """Convert the column from the verified shards and publish it with its sidecar.

    Each process writes under its own temp names (pid + random), so racers never share a file,
    and publishes by atomic rename: sidecar first, then the .npy. The bytes are deterministic,
    so every racer's sidecar is the same and whichever .npy wins the last rename matches it.
    """
    cache.parent.mkdir(parents=True, exist_ok=True)
    unique = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    tmp = cache.with_name(f".{cache.name}.{unique}.tmp")
    tmp_sidecar = cache.with_name(f".{cache.stem}.json.{unique}.tmp")
    seq_len = expected["seq_len"]
    try:
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(expected["rows"], seq_len)
        )
        offset = 0
        for shard in manifest["splits"][split]["shards"]:
            for batch in pq.ParquetFile(directory / shard["path"]).iter_batches(
                columns=[column], batch_size=ROW_GROUP_ROWS
            ):
                block = _matrix(batch.column(0), seq_len)
                out[offset : offset + len(block)] = block
                offset += len(block)
        out.flush()
        del out  # unmapped: nothing changes the file (or its mtime) after the fstat below
        with open(tmp, "rb") as handle:
            stat = os.fstat(handle.fileno())
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        tmp_sidecar.write_bytes(
            canonical_json({**expected, "bytes": stat.st_size, "sha256": digest})
        )
        _VERIFIED_CACHES[(str(cache), stat.st_ino, stat.st_size, stat.st_mtime_ns)] = digest
        os.replace(tmp_sidecar, cache.with_suffix(".json"))
        os.replace(tmp, cache)  # a rename keeps inode and mtime: the key above stays valid
    finally:
        tmp.unlink(missing_ok=True)
        tmp_sidecar.unlink(missing_ok=True)


def _memory_mapped_tokens(
    directory: Path, split: str, manifest: dict[str, Any], column: str, mmap_dir: Path
) -> np.memmap:
    """A read-only memory map of one token column, converted once by streaming row groups, so
    ARC-scale splits (millions of 900-token rows) need not fit in memory.

    Lives at `<mmap_dir>/<dataset id>/<split>-<column>.npy` with a `.json` sidecar recording
    what it must hold; training reads tokens from it, not from the verified shards, so it is
    verified when opened (hashed once per process per file) and rebuilt when it disagrees.
    """
    ident = dataset_id(manifest)
    cache = Path(mmap_dir).resolve() / ident / f"{split}-{column}.npy"  # one key per file
    expected = {
        "version": MMAP_CACHE_VERSION,
        "dataset": ident,
        "split": split,
        "column": column,
        "rows": sum(shard["rows"] for shard in manifest["splits"][split]["shards"]),
        "seq_len": manifest["seq_len"],
    }
    try:
        return _open_verified_cache(cache, expected)
    except FileNotFoundError:
        pass  # first load
    except _StaleCache as err:
        print(f"warning: rebuilding memory-map cache {cache}: {err}", file=sys.stderr, flush=True)
    _build_cache(directory, split, manifest, column, cache, expected)
    try:
        return _open_verified_cache(cache, expected)
    except (FileNotFoundError, _StaleCache) as err:  # something else is damaging the folder
        raise RuntimeError(
            f"memory-map cache {cache} fails right after its rebuild: {err}"
        ) from err


def read_split(
    directory: Path,
    split: str,
    manifest: dict[str, Any] | None = None,
    extras: tuple[str, ...] = (),
    memory_map: bool = False,
    mmap_dir: Path | None = None,
) -> PuzzleArrays:
    """Load one split as PuzzleArrays. `extras` selects extra columns; with `memory_map` the
    token arrays are memory-mapped (see `_memory_mapped_tokens`) instead of read into memory,
    from a cache under `mmap_dir`: required then, and outside the dataset folder, which for a
    local store is the store's own copy and must hold only what was published."""
    if memory_map:
        if mmap_dir is None:
            raise ValueError("memory_map=True needs mmap_dir, the folder for the token cache")
        if Path(mmap_dir).resolve().is_relative_to(Path(directory).resolve()):
            raise ValueError(f"mmap_dir {mmap_dir} is inside the dataset folder {directory}")
    manifest = manifest or read_manifest(directory)
    if split not in manifest["splits"]:
        raise ValueError(f"split {split!r} not in dataset; it has {sorted(manifest['splits'])}")
    seq_len = manifest["seq_len"]
    wanted = ["group", "puzzle", "puzzle_id", *extras]
    if not memory_map:
        wanted += ["inputs", "labels"]
    shards = [directory / shard["path"] for shard in manifest["splits"][split]["shards"]]
    available = pq.read_schema(shards[0]).names
    missing = [name for name in extras if name not in available]
    if missing:
        raise ValueError(f"columns {missing} not in split {split!r}; it has {available}")
    # Column projection: with memory_map only the small index columns are read here.
    table = pa.concat_tables([pq.read_table(path, columns=wanted) for path in shards])
    if memory_map:
        inputs = _memory_mapped_tokens(directory, split, manifest, "inputs", mmap_dir)
        labels = _memory_mapped_tokens(directory, split, manifest, "labels", mmap_dir)
    else:
        inputs = _matrix(table["inputs"], seq_len).copy()
        labels = _matrix(table["labels"], seq_len).copy()
    puzzle = table["puzzle"].to_numpy()
    group = table["group"].to_numpy()
    puzzle_id = table["puzzle_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, puzzle[1:] != puzzle[:-1]])
    puzzle_indices = np.r_[starts, len(puzzle)].astype(np.int64)
    group_of_puzzle = group[starts]
    group_starts = np.flatnonzero(np.r_[True, group_of_puzzle[1:] != group_of_puzzle[:-1]])
    group_indices = np.r_[group_starts, len(starts)].astype(np.int64)
    extra_columns = {}
    for name in extras:
        column = table[name]
        if pa.types.is_fixed_size_binary(column.type):
            extra_columns[name] = _matrix(column, column.type.byte_width).copy()
        else:
            extra_columns[name] = column.to_numpy()
    return PuzzleArrays(
        inputs=inputs,
        labels=labels,
        puzzle_ids=puzzle_id[starts].astype(np.int32),
        puzzle_indices=puzzle_indices,
        group_indices=group_indices,
        vocab_size=manifest["vocab"]["size"],
        pad_id=manifest["vocab"]["pad_id"],
        extras=extra_columns,
    )

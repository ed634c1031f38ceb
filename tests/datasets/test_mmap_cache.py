"""The memory-map cache training reads tokens from (issue 10, items 1 and 2): concurrent first
loads by real processes all succeed, a damaged cache or sidecar is detected and rebuilt from the
verified shards, and the cache lives outside the dataset folder, so a local store keeps holding
only what was published."""

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

from datasets import format as dataset_format
from datasets.build import build
from datasets.format import MANIFEST, dataset_id, read_manifest, read_split

PROCESSES = 4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A small local store's dataset folder (2000 train rows: builds in about a second)."""
    root = tmp_path_factory.mktemp("data")
    ident = build(
        "tiny_sudoku",
        root / "store",
        quiet=True,
        cache_dir=root / "cache",
        train=2000,
        test=100,
        seed=0,
    )
    return root / "store" / ident


def _published(directory: Path) -> set[str]:
    """What the store published: the manifest and every shard it names."""
    manifest = read_manifest(directory)
    shards = {s["path"] for split in manifest["splits"].values() for s in split["shards"]}
    return {MANIFEST, *shards}


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _cache_file(mmap_dir: Path, directory: Path, column: str = "inputs") -> Path:
    return mmap_dir / dataset_id(read_manifest(directory)) / f"train-{column}.npy"


def _load_in_race(directory: str, mmap_dir: str, barrier, results) -> None:
    """One racer (runs in a spawned process): wait until all are ready, then map the split.

    The in-memory read before the barrier also warms pyarrow (codecs, kernels), so the racers
    leave the barrier in step: with it the old code failed in the first round 10 times in 10.
    """
    plain = read_split(Path(directory), "train")
    barrier.wait(timeout=120)
    try:
        mapped = read_split(Path(directory), "train", memory_map=True, mmap_dir=Path(mmap_dir))
        same = (mapped.inputs == plain.inputs).all() and (mapped.labels == plain.labels).all()
        results.put("ok" if same else "rows differ")
    except BaseException as err:  # report any crash to the parent instead of a bare exit code
        results.put(repr(err))
        raise


@pytest.mark.slow
def test_concurrent_first_loads_by_four_processes_all_succeed_and_leave_no_temp_files(
    dataset, tmp_path
):
    """Before the fix one fixed temp name was shared: one racer of two crashed 6 times in 6."""
    context = multiprocessing.get_context("spawn")
    for round_ in range(3):
        mmap_dir = tmp_path / f"round-{round_}"  # fresh cache: every racer finds nothing
        barrier, results = context.Barrier(PROCESSES), context.Queue()
        racers = [
            context.Process(
                target=_load_in_race, args=(str(dataset), str(mmap_dir), barrier, results)
            )
            for _ in range(PROCESSES)
        ]
        for racer in racers:
            racer.start()
        for racer in racers:  # small results: a racer's exit never waits on the queue
            racer.join(timeout=120)
        # a racer killed by a signal (the old code's bus error) reports nothing: its exit code
        outcomes = [racer.exitcode for racer in racers]
        while not results.empty():
            outcomes.append(results.get(timeout=10))
        assert sorted(outcomes, key=str) == [0] * PROCESSES + ["ok"] * PROCESSES, (
            f"round {round_}: {outcomes}"
        )
        ident = dataset_id(read_manifest(dataset))
        assert _files(mmap_dir) == {  # published files only: no temp file left by any racer
            f"{ident}/train-{column}.{suffix}"
            for column in ("inputs", "labels")
            for suffix in ("npy", "json")
        }
    assert _files(dataset) == _published(dataset)


def test_a_flipped_byte_in_the_cache_is_detected_and_rebuilt(dataset, tmp_path, capsys):
    """The cache is checked against its sidecar's sha256 once per process: a new process (here:
    the verified-files record cleared) sees the damage, and rows come from the shards again."""
    plain = read_split(dataset, "train")
    read_split(dataset, "train", memory_map=True, mmap_dir=tmp_path)
    cache = _cache_file(tmp_path, dataset)
    original = cache.read_bytes()
    damaged = bytearray(original)
    damaged[-5] ^= 0xFF  # a token byte in the last row
    cache.write_bytes(bytes(damaged))
    dataset_format._VERIFIED_CACHES.clear()  # as in a fresh process
    capsys.readouterr()

    mapped = read_split(dataset, "train", memory_map=True, mmap_dir=tmp_path)

    assert (mapped.inputs == plain.inputs).all() and (mapped.labels == plain.labels).all()
    assert cache.read_bytes() == original  # rebuilt in place
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and str(cache) in warning[0] and "sha256" in warning[0]


def test_a_cache_modified_after_it_was_verified_is_checked_again_in_the_same_process(
    dataset, tmp_path, capsys
):
    """A trial actor reused for several trials re-checks a file whose mtime changed."""
    plain = read_split(dataset, "train")
    read_split(dataset, "train", memory_map=True, mmap_dir=tmp_path)
    cache = _cache_file(tmp_path, dataset)
    stat = cache.stat()
    with open(cache, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 0x01]))
    # the write may land in the same mtime tick: make the change visible as any later one is
    os.utime(cache, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))

    mapped = read_split(dataset, "train", memory_map=True, mmap_dir=tmp_path)

    assert (mapped.inputs == plain.inputs).all()
    assert "sha256" in capsys.readouterr().err


def test_an_unchanged_verified_cache_is_not_hashed_again_in_the_same_process(dataset, tmp_path):
    """Hashing is once per process per file: a file with the same inode, size and mtime is
    trusted on the next open (a byte changed behind mtime's back shows it was not re-read)."""
    read_split(dataset, "train", memory_map=True, mmap_dir=tmp_path)
    cache = _cache_file(tmp_path, dataset)
    stat = cache.stat()
    data = bytearray(cache.read_bytes())
    data[-1] ^= 0x01
    with open(cache, "r+b") as handle:  # same inode and size
        handle.write(data)
    os.utime(cache, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    mapped = read_split(dataset, "train", memory_map=True, mmap_dir=tmp_path)

    assert mapped.inputs[-1, -1] == data[-1]


@pytest.mark.parametrize(
    "damage",
    ["missing", "not json", "wrong sha256", "wrong rows", "wrong dataset", "wrong size"],
)
def test_a_missing_or_wrong_sidecar_makes_the_cache_rebuilt(dataset, tmp_path, capsys, damage):
    """Neither the .npy nor a sidecar that disagrees with it is trusted: both are rebuilt."""
    plain = read_split(dataset, "train")
    read_split(dataset, "train", memory_map=True, mmap_dir=tmp_path)
    cache = _cache_file(tmp_path, dataset)
    sidecar = cache.with_suffix(".json")
    good = sidecar.read_bytes()
    record = json.loads(good)
    if damage == "missing":
        sidecar.unlink()
    elif damage == "not json":
        sidecar.write_text("{ truncated")
    else:
        field, value = {
            "wrong sha256": ("sha256", "0" * 64),
            "wrong rows": ("rows", record["rows"] + 1),
            "wrong dataset": ("dataset", "f" * 32),
            "wrong size": ("bytes", record["bytes"] - 1),
        }[damage]
        sidecar.write_text(json.dumps({**record, field: value}))
    npy_inode = cache.stat().st_ino
    capsys.readouterr()

    mapped = read_split(dataset, "train", memory_map=True, mmap_dir=tmp_path)

    assert (mapped.inputs == plain.inputs).all()
    assert sidecar.read_bytes() == good
    assert cache.stat().st_ino != npy_inode  # a new file was published
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and str(cache) in warning[0]


def test_a_mapped_read_leaves_the_local_store_holding_only_what_was_published(dataset, tmp_path):
    mapped = read_split(dataset, "train", memory_map=True, mmap_dir=tmp_path / "mmap")
    assert isinstance(mapped.inputs, np.memmap)
    assert _files(dataset) == _published(dataset)
    assert not (dataset / ".mmap").exists()


def test_memory_map_needs_a_cache_folder_outside_the_dataset(dataset):
    with pytest.raises(ValueError, match="mmap_dir"):
        read_split(dataset, "train", memory_map=True)
    with pytest.raises(ValueError, match="inside the dataset"):
        read_split(dataset, "train", memory_map=True, mmap_dir=dataset / ".mmap")
    assert _files(dataset) == _published(dataset)


def test_trial_data_is_mapped_from_a_sibling_of_the_datasets_cache(dataset, tmp_path):
    """`open_trial_data` keeps the maps in `<base>/.trm/cache/mmap`, beside (not inside) the
    datasets cache, whose sub-folders are dataset ids."""
    from orchestration.tasks import open_trial_data
    from orchestration.trial_spec import DatasetRef

    cache = tmp_path / ".trm" / "cache" / "datasets"
    ident = dataset.name
    manifest, _, train, _ = open_trial_data(DatasetRef(ident, str(dataset.parent), str(cache)))
    assert isinstance(train.inputs, np.memmap) and manifest == read_manifest(dataset)
    assert Path(train.inputs.filename) == tmp_path / ".trm" / "cache" / "mmap" / ident / (
        "train-inputs.npy"
    )
    assert _files(dataset) == _published(dataset)

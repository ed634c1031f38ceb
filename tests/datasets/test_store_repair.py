"""The store never keeps serving stale, damaged or half-built data (issue 10, items 3-5):
a build request is remembered by what decides its bytes (builder version, source identity), a
rebuild repairs a damaged copy (local and a real S3 server on loopback), a missing S3 shard is
named, and a killed build's staging folder lives under the cache and is swept later."""

import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest

from datasets import task as task_module
from datasets.build import STAGING, build, ensure, main, request_key
from datasets.store import DatasetIntegrityError, DatasetStore
from orchestration.stack import environment, s3_only

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
REFERENCE = Path(__file__).parent / "reference"
TINY = dict(train=300, test=50, seed=0)


@pytest.fixture(scope="module")
def s3():
    with s3_only(bucket="trm-datasets") as server, environment(server.env()):
        yield server


def _first_shard(store: DatasetStore, ident: str) -> str:
    return store.manifest(ident)["splits"]["train"]["shards"][0]["path"]


def test_a_new_builder_version_builds_anew_instead_of_reusing(tmp_path, monkeypatch):
    out, cache = tmp_path / "store", tmp_path / "cache"
    old = ensure("tiny_sudoku", dict(TINY), out, cache_dir=cache)
    assert ensure("tiny_sudoku", dict(TINY), out, cache_dir=cache) == old  # remembered
    # A fixed builder: different bytes, version bumped.
    fixed = task_module.registry()["tiny_sudoku"]

    def fixed_build(staging, progress, **arguments):
        body = fixed.build(staging, progress, **arguments)
        body["arguments"] = {**body["arguments"], "fixed": True}
        return body

    monkeypatch.setitem(
        task_module.registry(),
        "tiny_sudoku",
        dataclasses.replace(fixed, builder_version=fixed.builder_version + 1, build=fixed_build),
    )
    new = ensure("tiny_sudoku", dict(TINY), out, cache_dir=cache)
    assert new != old
    assert DatasetStore(out).manifest(new)["builder_version"] == fixed.builder_version + 1


def test_a_changed_source_file_builds_anew(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("train.csv", "test.csv"):
        (source / name).write_bytes((REFERENCE / "sudoku" / name).read_bytes())
    arguments = dict(source=str(source), subsample=3, augment=2, test_limit=None, seed=0)
    key = request_key("sudoku", arguments)
    first = ensure("sudoku", dict(arguments), tmp_path / "store", cache_dir=tmp_path / "cache")
    lines = (source / "train.csv").read_text().splitlines(keepends=True)
    (source / "train.csv").write_text("".join(lines[:-1]))  # one training puzzle fewer
    assert request_key("sudoku", arguments) != key
    second = ensure("sudoku", dict(arguments), tmp_path / "store", cache_dir=tmp_path / "cache")
    assert second != first


def _corrupt_and_delete_locally(root: Path, ident: str, store: DatasetStore) -> None:
    shards = [
        s["path"] for split in store.manifest(ident)["splits"].values() for s in split["shards"]
    ]
    damaged = root / ident / shards[0]
    damaged.write_bytes(damaged.read_bytes()[:-5] + b"xxxxx")
    (root / ident / shards[1]).unlink()


def test_rebuilding_repairs_a_damaged_local_store(tmp_path, capsys):
    root = tmp_path / "store"
    args = ["tiny_sudoku", "--train", "300", "--test", "50", "--out", str(root), "--quiet"]
    args += ["--cache-dir", str(tmp_path / "cache")]
    main(args)
    ident = capsys.readouterr().out.strip()
    store = DatasetStore(root)
    _corrupt_and_delete_locally(root, ident, store)
    assert len(store.verify(ident)) == 2
    with pytest.raises(DatasetIntegrityError):
        store.fetch(ident)
    main(args)  # exit 0 only when the stored dataset verifies
    captured = capsys.readouterr()
    assert captured.out.strip() == ident
    assert "repaired dataset" in captured.err and "missing" in captured.err
    assert store.verify(ident) == []
    store.fetch(ident)


def test_ensure_rebuilds_a_damaged_remembered_dataset(tmp_path):
    out, cache = tmp_path / "store", tmp_path / "cache"
    ident = ensure("tiny_sudoku", dict(TINY), out, cache_dir=cache)
    store = DatasetStore(out)
    _corrupt_and_delete_locally(out, ident, store)
    lines = []
    assert ensure("tiny_sudoku", dict(TINY), out, cache_dir=cache, log=lines.append) == ident
    assert store.verify(ident) == [] and "damaged" in lines[0]


def test_s3_missing_shard_is_named_and_a_rebuild_repairs_it(s3, tmp_path):
    bucket = f"trm-test-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    uri = f"s3://{bucket}/d"
    ident = build("tiny_sudoku", uri, quiet=True, cache_dir=tmp_path / "c", **TINY)
    store = DatasetStore(uri, cache_dir=tmp_path / "fetch")
    shard = _first_shard(store, ident)
    client = boto3.client("s3")
    client.delete_object(Bucket=bucket, Key=f"d/{ident}/{shard}")
    with pytest.raises(DatasetIntegrityError, match=rf"dataset {ident}: shard {shard} is missing"):
        store.fetch(ident)
    assert store.verify(ident) == [f"shard {shard} is missing"]
    # A damaged one as well: both are published again.
    test_shard = store.manifest(ident)["splits"]["test"]["shards"][0]["path"]
    client.put_object(Bucket=bucket, Key=f"d/{ident}/{test_shard}", Body=b"not parquet")
    assert build("tiny_sudoku", uri, quiet=True, cache_dir=tmp_path / "c", **TINY) == ident
    assert store.verify(ident) == []
    store.fetch(ident)


@pytest.mark.slow
def test_a_killed_build_leaves_staging_only_in_the_cache_and_the_next_build_sweeps_it(tmp_path):
    cache, tmpdir = tmp_path / "cache", tmp_path / "tmpdir"
    tmpdir.mkdir()
    command = [sys.executable, "-m", "datasets.build", "sudoku", "--source"]
    command += [str(REFERENCE / "sudoku"), "--subsample", "5", "--augment", "300000"]
    command += ["--out", str(tmp_path / "store"), "--cache-dir", str(cache), "--quiet"]
    process = subprocess.Popen(command, env={**os.environ, "TMPDIR": str(tmpdir)})
    staging = cache / STAGING
    deadline = time.monotonic() + 60
    while not (staging.is_dir() and any(staging.iterdir())):
        assert process.poll() is None and time.monotonic() < deadline, "build ended too early"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # mid-build: its staging folder is there
    process.wait()
    left = list(staging.iterdir())
    assert len(left) == 1 and f"--{process.pid}--" in left[0].name
    assert list(tmpdir.iterdir()) == []  # nothing staged in $TMPDIR
    assert not (tmp_path / "store").exists() or not list(
        (tmp_path / "store").glob("*/manifest.json")
    )
    build("tiny_sudoku", tmp_path / "store", quiet=True, cache_dir=cache, **TINY)
    assert list(staging.iterdir()) == []

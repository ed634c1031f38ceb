"""Build → upload → fetch → verify against a real S3-compatible server on loopback (moto in
server mode) and a local store: content addressing, corrupted shards detected and never used,
an interrupted upload leaves no manifest, seeds decide the id."""

import uuid

import boto3
import numpy as np
import pytest

from datasets.build import build
from datasets.format import read_split
from datasets.store import DatasetIntegrityError, DatasetNotFoundError, DatasetStore
from orchestration.stack import environment, s3_only

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def s3():
    # The same code as `python -m orchestration.stack`: a real S3 HTTP server on 127.0.0.1.
    with s3_only(bucket="trm-datasets") as server, environment(server.env()):
        yield server


@pytest.fixture
def bucket(s3):
    name = f"trm-test-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


def _tiny(out, seed=0):
    return build("tiny_sudoku", out, quiet=True, train=300, test=50, seed=seed)


def test_build_upload_fetch_verify_on_s3(bucket, tmp_path):
    ident = _tiny(f"s3://{bucket}/datasets")
    store = DatasetStore(f"s3://{bucket}/datasets", cache_dir=tmp_path / "cache")
    assert store.list() == [ident]
    local = store.fetch(ident)
    assert local == tmp_path / "cache" / ident
    train = read_split(local, "train", extras=("givens",))
    assert train.num_examples == 300 and train.extras["givens"].min() >= 4
    # the same build into a local store gives the same id and the same arrays
    local_id = _tiny(tmp_path / "local")
    assert local_id == ident
    same = read_split(DatasetStore(tmp_path / "local").fetch(ident), "train")
    assert (same.inputs == train.inputs).all()


def test_corrupted_shard_is_detected_and_never_used(bucket, tmp_path):
    ident = _tiny(f"s3://{bucket}/d")
    store = DatasetStore(f"s3://{bucket}/d", cache_dir=tmp_path / "cache")
    shard = store.manifest(ident)["splits"]["train"]["shards"][0]["path"]
    s3 = boto3.client("s3")
    key = f"d/{ident}/{shard}"
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=original[:-10] + b"0123456789")
    with pytest.raises(DatasetIntegrityError, match=r"sha256 .* the manifest says"):
        store.fetch(ident)
    assert not (tmp_path / "cache" / ident / shard).exists()
    # repaired upstream → fetch succeeds; then a corrupted cached copy is replaced, not used
    s3.put_object(Bucket=bucket, Key=key, Body=original)
    path = store.fetch(ident) / shard
    path.write_bytes(b"garbage")
    assert store.fetch(ident) == tmp_path / "cache" / ident
    assert path.read_bytes() == original


def test_tampered_manifest_is_detected(bucket, tmp_path):
    ident = _tiny(f"s3://{bucket}/m")
    s3 = boto3.client("s3")
    key = f"m/{ident}/manifest.json"
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().replace(b'"seed":0', b'"seed":9')
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    with pytest.raises(DatasetIntegrityError, match="was modified"):
        DatasetStore(f"s3://{bucket}/m", cache_dir=tmp_path).fetch(ident)


def test_interrupted_upload_leaves_no_manifest(bucket, tmp_path, monkeypatch):
    built = tmp_path / "local"
    ident = _tiny(built)
    store = DatasetStore(f"s3://{bucket}/i", cache_dir=tmp_path / "cache")
    calls = []
    real_upload = store.backend.upload

    def failing_upload(source, key):
        calls.append(key)
        if len(calls) == 2:  # the connection drops after the first shard
            raise ConnectionError("simulated network failure")
        real_upload(source, key)

    monkeypatch.setattr(store.backend, "upload", failing_upload)
    with pytest.raises(ConnectionError):
        store.put(built / ident)
    assert not store.exists(ident) and store.list() == []
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys and not any(k.endswith("manifest.json") for k in keys)
    with pytest.raises(DatasetNotFoundError):
        store.fetch(ident)
    monkeypatch.undo()
    assert store.put(built / ident) == ident  # a retry completes it
    assert store.list() == [ident]


def test_same_seed_same_id_different_seed_different_id(tmp_path):
    assert _tiny(tmp_path / "a", seed=3) == _tiny(tmp_path / "b", seed=3)
    assert _tiny(tmp_path / "a", seed=3) != _tiny(tmp_path / "a", seed=4)


def test_local_store_verifies_in_place(tmp_path):
    ident = _tiny(tmp_path)
    store = DatasetStore(tmp_path)
    shard = tmp_path / ident / store.manifest(ident)["splits"]["test"]["shards"][0]["path"]
    shard.write_bytes(shard.read_bytes() + b"x")
    with pytest.raises(DatasetIntegrityError):
        store.fetch(ident)


def test_bad_store_uris_are_explained():
    with pytest.raises(ValueError, match="scheme 'gs' is not supported"):
        DatasetStore("gs://bucket/x")
    with pytest.raises(ValueError, match="names no bucket"):
        DatasetStore("s3:///x")


def test_memory_mapped_split_equals_the_in_memory_one(tmp_path):
    ident = _tiny(tmp_path / "store")
    local = DatasetStore(tmp_path / "store").fetch(ident)
    plain = read_split(local, "train", extras=("givens",))
    mapped = read_split(
        local, "train", extras=("givens",), memory_map=True, mmap_dir=tmp_path / "mmap"
    )
    assert isinstance(mapped.inputs, np.memmap)
    assert (mapped.inputs == plain.inputs).all() and (mapped.labels == plain.labels).all()
    assert (mapped.group_indices == plain.group_indices).all()
    assert (mapped.extras["givens"] == plain.extras["givens"]).all()
    with pytest.raises(ValueError, match=r"columns \['rating'\] not in split 'train'"):
        read_split(local, "train", extras=("rating",))


def test_ensure_dataset_builds_once_per_store_even_from_a_fresh_working_directory(bucket, tmp_path):
    """A retried RayJob runs on a fresh cluster: the store, not the working directory,
    remembers which dataset a build request gave."""
    from orchestration.ablate import ensure_dataset

    uri = f"s3://{bucket}/datasets"
    arguments = {"seed": 0, "train": 200, "test": 40}
    ident, manifest = ensure_dataset("tiny_sudoku", arguments, uri, tmp_path / "first")
    assert manifest["task"] == "tiny_sudoku" and DatasetStore(uri).list() == [ident]
    # a second machine: nothing local; the request is found in the store, nothing rebuilt
    import datasets.build

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt a dataset the store already holds")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.build, "build", no_rebuild)
        again, _ = ensure_dataset("tiny_sudoku", arguments, uri, tmp_path / "second")
    assert again == ident
    # a different request builds a different dataset
    other, _ = ensure_dataset("tiny_sudoku", {**arguments, "seed": 1}, uri, tmp_path / "third")
    assert other != ident and sorted(DatasetStore(uri).list()) == sorted([ident, other])


def test_a_remembered_request_whose_dataset_is_gone_is_rebuilt(tmp_path):
    store = DatasetStore(tmp_path / "store")
    store.remember("request-digest", "0" * 32)
    assert store.recall("request-digest") is None  # no such dataset: rebuild, never trust
    assert store.recall("never-seen") is None
    assert store.list() == []  # requests are not datasets

"""Content-addressed dataset storage on a local folder or S3, with a verified local cache.

    store = DatasetStore("s3://bucket/datasets")           # or a local path
    dataset_id = store.put(built_dir)                       # shards first, manifest last
    local_dir = store.fetch(dataset_id)                      # cached by id, sha256 verified

A dataset lives at `<root>/<dataset_id>/` (manifest.json + shards). Only a present manifest
makes a dataset: uploads write it last, so an interrupted upload is invisible. Every fetch
verifies every shard's sha256 against the manifest and the manifest against the id; a mismatch
raises `DatasetIntegrityError` and the bad copy is never used (a bad cached copy is replaced).
Putting a dataset whose id is already stored verifies the stored copy and re-publishes whatever
is missing or damaged (a rebuild repairs a damaged store); `verify(id)` lists what is wrong.

S3 uses the standard AWS configuration from the environment (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_S3` for S3-compatible
servers): boto3 for uploads (multipart above 64 MiB, retries with backoff) and
`pyarrow.fs.S3FileSystem` for reads. Credentials are never stored or printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from datasets.format import MANIFEST, canonical_json, dataset_id, read_manifest, sha256_file

DEFAULT_CACHE = Path(".trm") / "cache" / "datasets"
REQUESTS = "requests"  # build request digest → dataset id, beside the datasets
REPAIR_HINT = "running the same build again re-publishes what is missing or damaged"


class DatasetIntegrityError(ValueError):
    """A shard or manifest does not match its recorded digest."""


class DatasetNotFoundError(FileNotFoundError):
    pass


def _s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def s3_filesystem():
    """pyarrow S3 filesystem from the standard AWS variables (endpoint for S3-compatible
    servers included), with retries; shared by the dataset store and Ray Tune's storage."""
    from pyarrow import fs

    options = {"region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    endpoint = _s3_endpoint()
    if endpoint:
        parsed = urlparse(endpoint)
        options.update(
            endpoint_override=parsed.netloc or parsed.path, scheme=parsed.scheme or "https"
        )
    return fs.S3FileSystem(**options, retry_strategy=fs.AwsStandardS3RetryStrategy(8))


class _LocalBackend:
    def __init__(self, root: Path):
        self.root = root

    def read_bytes(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.exists() else None

    def download(self, key: str, target: Path) -> None:
        shutil.copyfile(self.root / key, target)

    def upload(self, source: Path, key: str) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)

    def digest(self, key: str) -> str | None:
        path = self.root / key
        return sha256_file(path) if path.is_file() else None

    def list_ids(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.parent.name for p in self.root.glob(f"*/{MANIFEST}"))

    def local_path(self, key: str) -> Path | None:
        return self.root / key


class _S3Backend:
    def __init__(self, bucket: str, prefix: str):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = boto3.client(
            "s3", config=Config(retries={"max_attempts": 8, "mode": "standard"})
        )
        self.transfer = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=16 << 20)
        self.fs = s3_filesystem()

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def read_bytes(self, key: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(f"{self.bucket}/{self._key(key)}") as stream:
                return stream.read()
        except FileNotFoundError:
            return None

    def download(self, key: str, target: Path) -> None:
        with self._open(key) as stream, open(target, "wb") as out:
            while block := stream.read(1 << 22):
                out.write(block)

    def _open(self, key: str):
        """An input stream of `key`; FileNotFoundError when the object does not exist."""
        path = f"{self.bucket}/{self._key(key)}"
        if self.fs.get_file_info(path).type.name == "NotFound":
            raise FileNotFoundError(path)
        return self.fs.open_input_stream(path)

    def digest(self, key: str) -> str | None:
        try:
            stream = self._open(key)
        except FileNotFoundError:
            return None
        digest = hashlib.sha256()
        with stream:
            while block := stream.read(1 << 22):
                digest.update(block)
        return digest.hexdigest()

    def upload(self, source: Path, key: str) -> None:
        self.client.upload_file(str(source), self.bucket, self._key(key), Config=self.transfer)

    def list_ids(self) -> list[str]:
        prefix = f"{self.prefix}/" if self.prefix else ""
        ids = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            for item in page.get("Contents", []):
                parts = item["Key"][len(prefix) :].split("/")
                if len(parts) == 2 and parts[1] == MANIFEST:
                    ids.append(parts[0])
        return sorted(ids)

    def local_path(self, key: str) -> Path | None:
        return None


class DatasetStore:
    def __init__(self, uri: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
        self.uri = str(uri)
        parsed = urlparse(self.uri)
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise ValueError(f"dataset store URI {self.uri!r} names no bucket (s3://BUCKET/…)")
            self.backend: _LocalBackend | _S3Backend = _S3Backend(parsed.netloc, parsed.path)
        elif parsed.scheme in ("", "file"):
            self.backend = _LocalBackend(Path(parsed.path if parsed.scheme else self.uri).resolve())
        else:
            raise ValueError(
                f"dataset store URI {self.uri!r}: scheme {parsed.scheme!r} is not "
                "supported; use a local path or s3://bucket/prefix"
            )
        self.cache_dir = Path(cache_dir or DEFAULT_CACHE).resolve()

    # ---- write ----------------------------------------------------------------------------
    def put(self, built_dir: str | os.PathLike, log: Callable[[str], None] | None = None) -> str:
        """Copy a built dataset folder into the store (shards first, manifest last). When the
        id is already stored, only what is missing or damaged there is published again (and
        reported through `log`); raises DatasetIntegrityError unless the result verifies."""
        built = Path(built_dir)
        manifest = read_manifest(built)
        ident = dataset_id(manifest)
        for shard in _shards(manifest):
            _verify(built / shard["path"], shard["sha256"], ident)
        stored = self.exists(ident)
        damaged = self.verify(ident) if stored else []
        if stored and not damaged:
            return ident  # content-addressed: already there and intact
        for shard in _shards(manifest):
            key = f"{ident}/{shard['path']}"
            if not stored or self.backend.digest(key) != shard["sha256"]:
                self.backend.upload(built / shard["path"], key)
        self.backend.upload(built / MANIFEST, f"{ident}/{MANIFEST}")  # last
        if damaged and log is not None:
            log(f"repaired dataset {ident} in {self.uri}: {'; '.join(damaged)}")
        remaining = self.verify(ident)
        if remaining:
            raise DatasetIntegrityError(
                f"dataset {ident} in {self.uri} does not verify after publishing: "
                + "; ".join(remaining)
            )
        return ident

    def verify(self, ident: str) -> list[str]:
        """What is wrong with the stored copy of `ident` (empty when it verifies): a missing or
        modified manifest, missing shards, shards whose sha256 differs from the manifest's."""
        try:
            manifest = self.manifest(ident)
        except (DatasetNotFoundError, DatasetIntegrityError, ValueError) as err:
            return [str(err)]
        problems = []
        for shard in _shards(manifest):
            actual = self.backend.digest(f"{ident}/{shard['path']}")
            if actual is None:
                problems.append(f"shard {shard['path']} is missing")
            elif actual != shard["sha256"]:
                problems.append(
                    f"shard {shard['path']} has sha256 {actual[:12]}…, not {shard['sha256'][:12]}…"
                )
        return problems

    def remember(self, request: str, ident: str) -> None:
        """Record that build request `request` (a digest of task and arguments) gave `ident`,
        in the store itself, so a fresh machine or cluster finds it instead of rebuilding."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "request.json"
            path.write_text(json.dumps({"id": ident}))
            self.backend.upload(path, f"{REQUESTS}/{request}.json")

    # ---- read -----------------------------------------------------------------------------
    def recall(self, request: str) -> str | None:
        """The dataset a build request gave, if it is still in the store."""
        raw = self.backend.read_bytes(f"{REQUESTS}/{request}.json")
        ident = json.loads(raw)["id"] if raw is not None else None
        return ident if ident is not None and self.exists(ident) else None

    def exists(self, ident: str) -> bool:
        return self.backend.read_bytes(f"{ident}/{MANIFEST}") is not None

    def list(self) -> list[str]:
        return self.backend.list_ids()

    def manifest(self, ident: str) -> dict:
        raw = self.backend.read_bytes(f"{ident}/{MANIFEST}")
        if raw is None:
            raise DatasetNotFoundError(
                f"dataset {ident} not found in {self.uri} (no manifest); "
                f"available: {self.list()[:20]}"
            )
        manifest = json.loads(raw)
        if dataset_id(manifest) != ident:
            raise DatasetIntegrityError(
                f"manifest of {ident} in {self.uri} hashes to "
                f"{dataset_id(manifest)}: it was modified"
            )
        return manifest

    def fetch(self, ident: str) -> Path:
        """A verified local copy of the dataset: the store's own folder when it is local,
        otherwise the cache under `cache_dir/<id>` (shards re-verified on every fetch)."""
        manifest = self.manifest(ident)
        in_place = self.backend.local_path(ident)
        if in_place is not None:
            for shard in _shards(manifest):
                _verify(in_place / shard["path"], shard["sha256"], ident)
            return in_place
        target = self.cache_dir / ident
        for shard in _shards(manifest):
            path = target / shard["path"]
            if path.exists() and sha256_file(path) == shard["sha256"]:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                try:
                    self.backend.download(f"{ident}/{shard['path']}", tmp)
                except FileNotFoundError:
                    raise DatasetIntegrityError(
                        f"dataset {ident}: shard {shard['path']} is missing from {self.uri}; "
                        f"{REPAIR_HINT}"
                    ) from None
                _verify(tmp, shard["sha256"], ident, shown=shard["path"])
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        (target / MANIFEST).write_bytes(canonical_json(manifest))
        return target


def _shards(manifest: dict) -> list[dict]:
    return [shard for split in manifest["splits"].values() for shard in split["shards"]]


def _verify(path: Path, expected: str, ident: str, shown: str | None = None) -> None:
    actual = sha256_file(path) if path.exists() else "missing"
    if actual != expected:
        raise DatasetIntegrityError(
            f"dataset {ident}: shard {shown or path} has sha256 {actual}, "
            f"the manifest says {expected}; the copy was not used; {REPAIR_HINT}"
        )

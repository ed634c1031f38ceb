"""One driver per execution: a second `ablate` of the same execution refuses instead of training
every trial a second time into the same runs.

    with one_driver(results_uri, execution, command_line):   # raises ExecutionBusy
        ...run the suite...

Where the execution's Ray results live decides the lock:

- **a local folder**: an exclusive `flock` on `<results>/<execution>.driver.lock`, which holds
  who took it. The kernel drops it when the holder exits, however it exits (kill -9 included),
  so a rerun after a crash never waits.
- **s3://**: a lease object `<results>/<execution>.driver-lease.json`, written with S3's
  conditional PUT (If-None-Match: * to take a free lease, If-Match: its ETag to renew or take
  over one), renewed every `ttl/3` seconds by a thread of the driver. A lease that is not
  renewed within one `ttl` belongs to a driver that is gone (a preempted pod, a killed job):
  the next driver waits that long, sees no renewal, and takes it over. One on the same host
  whose process is gone is taken over at once. Expiry compares the holder's clock with the
  reader's: keep the nodes' clocks within a fraction of `ttl` (NTP does).

`TRM_DRIVER_LEASE_S` sets the S3 lease's ttl (default 30 s).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from orchestration.ray_session import pid_alive

LEASE_TTL_S = float(os.environ.get("TRM_DRIVER_LEASE_S", "30"))


class ExecutionBusy(ValueError):
    """Another driver is running this execution (a ValueError, as every refusal of `ablate`
    before it launches anything: reported as one error line, exit 2)."""


def _holder(command_line: str, ttl_s: float | None = None) -> dict[str, Any]:
    now = time.time()
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(now)),
        "command": command_line,
    }
    if ttl_s is not None:
        holder["expires"] = now + ttl_s
    return holder


def _busy(execution: str, where: str, holder: dict[str, Any]) -> ExecutionBusy:
    who = (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
        f"{holder.get('started', '?')}"
    )
    command = holder.get("command")
    return ExecutionBusy(
        f"execution {execution} is already being run by another driver ({who}"
        + (f": `{command}`" if command else "")
        + f"; lock {where}). One execution has one driver: wait for that one to end (its "
        "results are what this command would produce), or end it first"
    )


def _same_host_and_gone(holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    return (
        holder.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid)
    )


@contextlib.contextmanager
def _local_lock(folder: Path, execution: str, command_line: str):
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(
            f"storage.results={str(folder)!r} cannot hold the execution's results: {err}"
        ) from None
    path = folder / f"{execution}.driver.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(Path(path).read_text() or "{}")
            except ValueError:
                holder = {}
            raise _busy(execution, str(path), holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder(command_line)).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


class S3Lease:
    """The lease object of one execution on S3 (see the module docstring)."""

    def __init__(self, uri: str, execution: str, command_line: str, ttl_s: float = LEASE_TTL_S):
        import boto3
        from botocore.config import Config

        bucket, _, prefix = uri[len("s3://") :].partition("/")
        self.bucket = bucket
        self.key = f"{prefix.strip('/')}/{execution}.driver-lease.json".lstrip("/")
        self.execution, self.command_line, self.ttl_s = execution, command_line, ttl_s
        self.client = boto3.client("s3", config=Config(retries={"max_attempts": 4}))
        self.etag: str | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def _put(self, **condition: str) -> bool:
        from botocore.exceptions import ClientError

        body = json.dumps(_holder(self.command_line, self.ttl_s)).encode()
        try:
            out = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, **condition)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey") or (
                err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412)
            ):
                return False
            raise
        self.etag = out["ETag"]
        return True

    def _read(self) -> tuple[dict[str, Any], str] | None:
        from botocore.exceptions import ClientError

        try:
            out = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        try:
            holder = json.loads(out["Body"].read() or b"{}")
        except ValueError:
            holder = {}
        return holder, out["ETag"]

    def acquire(self) -> None:
        """Take the lease, waiting at most one ttl for an unrenewed one to expire."""
        deadline = time.time() + self.ttl_s * 1.5
        while True:
            if self._put(IfNoneMatch="*"):
                return
            seen = self._read()
            if seen is None:
                continue  # released meanwhile: try again
            holder, etag = seen
            expired = float(holder.get("expires", 0)) < time.time()
            if (expired or _same_host_and_gone(holder)) and self._put(IfMatch=etag):
                return
            if time.time() > deadline:
                raise _busy(self.execution, self.where, holder)
            left = float(holder.get("expires", 0)) - time.time()
            time.sleep(min(self.ttl_s / 6, max(0.05, left)))

    def _renew(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        while not self._stop.wait(self.ttl_s / 3):
            try:
                renewed = self._put(IfMatch=self.etag or "")
            except (BotoCoreError, ClientError):
                continue  # S3 not answering: try at the next renewal (the outage watch decides)
            if not renewed:
                self.lost.set()
                return

    def __enter__(self) -> S3Lease:
        self.acquire()
        self._thread = threading.Thread(target=self._renew, name="driver-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if not self.lost.is_set():
            seen = self._read()
            if seen and seen[1] == self.etag:  # still ours: free it for the next driver
                self.client.delete_object(Bucket=self.bucket, Key=self.key)


@contextlib.contextmanager
def one_driver(results_uri: str, execution: str, command_line: str):
    """Hold the execution's lock for the block; ExecutionBusy if another driver holds it."""
    if results_uri.startswith("s3://"):
        with S3Lease(results_uri, execution, command_line):
            yield
    else:
        with _local_lock(Path(results_uri), execution, command_line):
            yield

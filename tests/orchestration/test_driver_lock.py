"""One driver per execution (issue 15): real processes hold the lock, on a local folder (flock)
and on a real S3-compatible server on loopback (a lease object written with conditional PUTs).
A second driver is refused with the holder named; a holder killed with SIGKILL frees the lock
(at once locally and on its own host, after one ttl from another host on S3)."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from orchestration.driver_lock import ExecutionBusy, S3Lease, one_driver
from orchestration.stack import environment, s3_only

# Holds the lock of execution "exec-a" until killed; prints "held" once it has it.
HOLD = """
import sys, time
from orchestration.driver_lock import one_driver
with one_driver(sys.argv[1], "exec-a", "python -m orchestration.ablate suite=smoke"):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(results: str, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, results],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    line = proc.stdout.readline().strip()
    assert line == "held", proc.stderr.read()[-2000:]
    return proc


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_second_local_driver_is_refused_and_a_killed_one_frees_the_lock(tmp_path):
    holder = _holder(str(tmp_path))
    try:
        with pytest.raises(ExecutionBusy) as err, one_driver(str(tmp_path), "exec-a", "again"):
            pass
        message = str(err.value)
        assert f"pid {holder.pid}" in message and "execution exec-a" in message
        assert "suite=smoke" in message  # the running command, as the holder recorded it
        with one_driver(str(tmp_path), "exec-b", "other"):  # another execution is free
            pass
    finally:
        _kill(holder)
    with one_driver(str(tmp_path), "exec-a", "again"):  # the kernel dropped the dead one's lock
        pass


@pytest.fixture(scope="module")
def s3():
    with s3_only(bucket="trm-locks") as server, environment(server.env()):
        yield server


@pytest.fixture
def results(s3):
    bucket = f"trm-lock-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    return f"s3://{bucket}/ray_results"


def test_a_second_s3_driver_is_refused_while_the_holder_renews(results, s3):
    # renewed every ttl/3 = 1 s: 2 s of slack for a renewal through the in-process S3 server
    holder = _holder(results, {**s3.env(), "TRM_DRIVER_LEASE_S": "3"})
    try:
        started = time.monotonic()
        with pytest.raises(ExecutionBusy) as err, S3Lease(results, "exec-a", "again", ttl_s=3):
            pass
        waited = time.monotonic() - started
        assert f"pid {holder.pid}" in str(err.value) and "driver-lease.json" in str(err.value)
        assert waited >= 3  # it waited one ttl for the lease to lapse; the holder renewed it
    finally:
        _kill(holder)
    # the dead holder was on this host: its lease is taken over at once, not after the ttl
    with S3Lease(results, "exec-a", "again", ttl_s=60) as lease:
        assert not lease.lost.is_set()
    # released on exit: the next one takes a free lease
    bucket = results[len("s3://") :].partition("/")[0]
    keys = s3.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0)
    assert keys == 0


def test_an_unrenewed_lease_from_another_host_is_taken_over_after_its_ttl(results, s3):
    bucket, _, prefix = results[len("s3://") :].partition("/")
    key = f"{prefix}/exec-a.driver-lease.json"
    stale = {"pid": 1, "host": "a-preempted-pod", "expires": time.time() + 1.0, "command": "x"}
    s3.client().put_object(Bucket=bucket, Key=key, Body=json.dumps(stale).encode())
    with S3Lease(results, "exec-a", "the retry", ttl_s=2.0):
        taken = time.time()
        held = json.loads(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())
        assert held["pid"] == os.getpid() and held["command"] == "the retry"
    assert stale["expires"] <= taken < stale["expires"] + 10  # once it lapsed, not before

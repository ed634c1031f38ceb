"""An S3 or MLflow outage mid-suite (issue 15, part 4), with real servers: the local stack's
moto S3 and `mlflow server` are frozen with SIGSTOP (by their process group, which the test
started), so they accept connections and never answer, the nastiest kind of outage. The driver
must stop within the watch's bound with one message naming the service, end its runs KILLED
(when MLflow can still be written), leave no Ray process behind, and a rerun once the service
answers again must continue from the last checkpoint, with no step of the history duplicated.

The watch itself (ServiceWatch) is also tested on its own, against a port that never answers."""

import os
import signal
import socket
import time

import pytest

from orchestration.outage import ServiceWatch
from orchestration.preflight import PreflightError, check_values, service_probes
from tests.orchestration.test_ablate import (
    SMOKE,
    ablate,
    boto3_client,
    compose,
    runs,
    start_driver,
)

OUTAGE = ["outage.after_s=6", "outage.probe_every_s=1"]


def test_outage_settings_are_checked_before_anything_starts():
    with pytest.raises(PreflightError, match=r"outage.after_s=0 is not allowed.*seconds > 0"):
        check_values(compose("outage.after_s=0"))
    with pytest.raises(PreflightError, match=r"outage.probe_every_s='x' is not allowed"):
        check_values(compose("outage.probe_every_s=x"))


def test_the_embedded_default_has_nothing_to_watch():
    assert service_probes(compose()) == []


def test_a_server_that_stops_answering_is_an_outage_once_silent_for_after_s(monkeypatch):
    """A listening socket that never answers (what a frozen or partitioned server looks like):
    the watch names it after `after_s`, not before, and calls on_outage once."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
    probes = service_probes({"tracking": {"uri": uri}}, timeout_s=0.3)
    assert [p.service for p in probes] == ["MLflow"]
    calls = []
    started = time.monotonic()
    with ServiceWatch(
        probes, after_s=1.5, every_s=0.2, on_outage=lambda *a: calls.append((time.monotonic(), a))
    ) as watch:
        deadline = time.monotonic() + 20
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)
    silent.close()
    assert len(calls) == 1
    when, (probe, message, began) = calls[0]
    assert when - started >= 1.5  # not declared before it was silent for after_s
    assert probe.service == "MLflow" and message == watch.outage
    assert message.startswith(f"MLflow (the tracking server at {uri} (tracking.uri)) has not")
    assert "outage.after_s=1.5" in message and "timed out" in message
    assert began <= time.time() - 1.5


def _checkpoint_keys(s3) -> list[str]:
    return [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="trm")
        for o in page.get("Contents", [])
        if "/checkpoint_" in o["Key"] and o["Key"].endswith("/state.pt")
    ]


# long enough that the freeze lands mid-trial on a fast machine (the smoke trial trains ≈ 100
# steps a second there), evaluations often enough to resume from a checkpoint
STEPS, EVERY = 200, 20


@pytest.mark.slow
@pytest.mark.parametrize("service", ["s3", "mlflow"])
def test_an_outage_stops_the_suite_and_the_rerun_continues_from_its_checkpoint(tmp_path, service):
    from orchestration.ray_session import ray_temp_dir, session_processes
    from orchestration.stack import local_stack
    from orchestration.tracking import INTERRUPTED_TAG, RESUMED_TAG

    command = [
        *SMOKE, "arms=[trm]", "seeds=1", f"scale.steps={STEPS}", f"scale.eval_every={EVERY}",
        "storage=s3", "tracking=server", *OUTAGE,
    ]  # fmt: skip
    with local_stack(tmp_path / "stack", bucket="trm") as stack:
        env = {**os.environ, **stack.env(), "TRM_RESULTS_URI": "s3://trm/ray_results"}
        s3 = boto3_client(stack.env())
        work = tmp_path / "work"
        work.mkdir()
        driver = start_driver(work, command, env, capture=True)
        deadline = time.time() + 300
        while time.time() < deadline and not _checkpoint_keys(s3) and driver.poll() is None:
            time.sleep(0.1)
        assert _checkpoint_keys(s3), "no checkpoint reached S3 before the outage"
        frozen = stack.state["services"][service]["pid"]  # the group the stack started
        os.killpg(frozen, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            _, err = driver.communicate(timeout=150)
            took = time.monotonic() - stopped
            print(f"{service} outage: driver stopped {took:.1f} s after the freeze")
            leftovers = session_processes(ray_temp_dir(work))
        finally:
            os.killpg(frozen, signal.SIGCONT)
        assert driver.returncode == 3, err[-3000:]
        label = {"s3": "S3 (bucket 'trm'", "mlflow": "MLflow (the tracking server"}[service]
        assert f"error: {label}" in err and "has not answered for" in err, err[-3000:]
        assert "the same command continues from them" in err
        assert "Traceback" not in err, err[-3000:]
        assert leftovers == []  # the embedded Ray was stopped with the suite
        checkpoints = _checkpoint_keys(s3)

        client, children, parents = runs(stack.tracking_uri)
        if service == "s3":  # MLflow still answers: the runs say why they ended
            assert [r.info.status for r in children] == ["KILLED"]
            assert [r.info.status for r in parents] == ["KILLED"]
            for run in (*children, *parents):
                assert "outage" in run.data.tags[INTERRUPTED_TAG]
                assert "S3 (bucket 'trm'" in run.data.tags[INTERRUPTED_TAG]

        result = ablate(work, *command, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "resuming" in result.stderr
        client, children, parents = runs(stack.tracking_uri)
        assert [r.info.status for r in children] == ["FINISHED"]
        assert [r.info.status for r in parents] == ["FINISHED"]
        run = children[0]
        assert INTERRUPTED_TAG not in run.data.tags and "error" not in run.data.tags
        # continued from the newest checkpoint written before the outage, not from step 0
        newest = max(int(k.rsplit("checkpoint_", 1)[1].split("/")[0]) for k in checkpoints)
        resumed_from = [int(s) for s in run.data.tags[RESUMED_TAG].split(",")]
        assert resumed_from[-1] == EVERY * (newest + 1), (resumed_from, checkpoints)
        history = client.get_metric_history(run.info.run_id, "eval/exact_accuracy")
        assert sorted(m.step for m in history) == list(range(EVERY, STEPS + 1, EVERY))

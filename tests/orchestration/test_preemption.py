"""Preemption-safe checkpoints (issue 13, part 4), with real processes: SIGTERM of a trial's
worker between two evaluations (what a spot reclaim or a pod deletion sends) makes it write a
checkpoint of the step it is at and stop; Tune retries the trial, which continues from that step,
and its evaluations equal those of an uninterrupted run bit for bit. A checkpoint on time
(`scale.checkpoint_every_min`) is written between evaluations without stopping anything."""

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from orchestration.preflight import PreflightError, check_values
from tests.orchestration.test_ablate import (
    SMOKE,
    ablate,
    compose,
    kill_driver,
    runs,
    start_driver,
)

STEPS, EVAL_EVERY = 1000, 500  # the smoke model: ≈ 10 ms of CPU a step
COMMAND = [
    *SMOKE,
    "arms=[trm]",
    "seeds=1",
    f"scale.steps={STEPS}",
    f"scale.eval_every={EVAL_EVERY}",
]


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used: it advances only while the process
    runs, so waiting on it means "the process did this much work", however loaded the
    machine is."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _eval_metrics(tracking_uri: str) -> dict[str, list[tuple[int, float]]]:
    client, children, _ = runs(tracking_uri)
    (run,) = children
    return {
        name: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))
        for name in run.data.metrics
        if name.startswith("eval/")
    }


def _trial_run(tracking_uri: str):
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("trm-lab/smoke")
    if experiment is None:
        return None
    found = client.search_runs([experiment.experiment_id], "tags.`trm.arm` = 'trm'", max_results=1)
    return found[0] if found else None


@pytest.mark.parametrize("value", ["0", "-1", "abc", "true"])
def test_a_bad_checkpoint_interval_is_refused_before_anything_starts(value):
    with pytest.raises(PreflightError, match=r"checkpoint_every_min.* is not allowed.*minutes"):
        check_values(compose("suite=smoke", "scale=paper", f"scale.checkpoint_every_min={value}"))


def test_paper_scale_checkpoints_on_time_and_the_plan_says_how_often(tmp_path):
    from orchestration.ablate import plan

    assert compose("scale=paper")["scale"]["checkpoint_every_min"] == 30
    specs = plan(compose("suite=smoke", "scale=smoke", "scale.checkpoint_every_min=0.5"), tmp_path)
    assert {s.checkpoint_every_s for s in specs["specs"]} == {30.0}


@pytest.mark.slow
def test_sigterm_between_evaluations_checkpoints_and_the_retry_continues_exactly(tmp_path):
    import torch

    from orchestration.tracking import RESUMED_TAG

    plain, preempted = tmp_path / "plain", tmp_path / "preempted"
    plain.mkdir(), preempted.mkdir()
    result = ablate(plain, *COMMAND)
    assert result.returncode == 0, result.stderr[-3000:]

    uri = f"sqlite:///{preempted}/.trm/mlflow.db"
    driver = start_driver(preempted, COMMAND, capture=True)
    try:
        deadline, worker = time.time() + 300, None
        trials = preempted / ".trm" / "ray_results"
        while time.time() < deadline and driver.poll() is None:
            run = _trial_run(uri) if (preempted / ".trm" / "mlflow.db").exists() else None
            # the first evaluation logged and its checkpoint in the trial's folder
            evaluated = list(trials.glob("*/trm-seed0-*/checkpoint_*"))
            if run is not None and run.data.metrics.get("step", 0) >= EVAL_EVERY and evaluated:
                worker = int(run.data.tags["trm.worker"].rsplit(":", 1)[1])
                break
            time.sleep(0.1)
        assert worker is not None, "the trial never reached its first evaluation"
        # past the evaluation (a SIGTERM within it stops at its checkpoint): 1 CPU-second of
        # work later, tens of steps on, hundreds before the end, on a quiet or a loaded machine
        start = _cpu_seconds(worker)
        while time.time() < deadline and _cpu_seconds(worker) - start < 1.0:
            time.sleep(0.05)
        os.kill(worker, signal.SIGTERM)  # the trial's own worker, started by this test's run
        out, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err[-3000:]
    finally:
        if driver.poll() is None:
            kill_driver(driver, preempted)

    _, children, parents = runs(uri)
    (run,) = children
    assert run.info.status == "FINISHED" and parents[0].info.status == "FINISHED"
    resumed = [int(s) for s in run.data.tags[RESUMED_TAG].split(",")]
    assert len(resumed) == 1 and EVAL_EVERY < resumed[0] < STEPS, resumed  # between evaluations
    # the attempt stopped on the signal (not killed by it) at the step the retry resumed from
    assert f"SIGTERM at step {resumed[0]}: checkpointed" in out + err, (out + err)[-3000:]
    print(f"SIGTERM after step {EVAL_EVERY}: the retry continued from step {resumed[0]}")
    assert _eval_metrics(uri) == _eval_metrics(f"sqlite:///{plain}/.trm/mlflow.db")
    trial_dir = next((preempted / ".trm" / "ray_results").glob("*/trm-seed0-*"))
    # the evaluations' checkpoints and the one written at the SIGTERM, in order, all kept
    steps = [
        torch.load(path, weights_only=False)["trainer"]["step"]
        for path in sorted(trial_dir.glob("checkpoint_*/state.pt"))
    ]
    assert steps == [EVAL_EVERY, resumed[0], STEPS]


@pytest.mark.slow
def test_a_checkpoint_on_time_bounds_what_a_kill_loses(tmp_path):
    """One evaluation, at the end, and checkpoint_every_min small enough that every step is
    due: `kill -9` of the driver mid-run, then the same command, continues from the last
    checkpoint written on time (one Tune's saved state never recorded), not from step 0."""
    import torch

    from orchestration.tracking import RESUMED_TAG

    command = [
        *SMOKE, "arms=[trm]", "seeds=1", "scale.steps=300", "scale.eval_every=300",
        "scale.checkpoint_every_min=0.0001",
    ]  # fmt: skip
    driver = start_driver(tmp_path, command)
    results, reached = tmp_path / ".trm" / "ray_results", 0
    deadline = time.time() + 300
    while time.time() < deadline and reached < 20 and driver.poll() is None:
        for path in results.glob("*/*/checkpoint_*/state.pt"):
            with contextlib.suppress(OSError, RuntimeError, EOFError):  # replaced meanwhile
                reached = max(reached, torch.load(path, weights_only=False)["trainer"]["step"])
        time.sleep(0.2)
    kill_driver(driver, tmp_path)
    assert 20 <= reached < 300, reached
    result = ablate(tmp_path, *command)
    assert result.returncode == 0, result.stderr[-3000:]
    _, children, _ = runs(f"sqlite:///{tmp_path}/.trm/mlflow.db")
    (run,) = children
    assert run.info.status == "FINISHED"
    resumed = [int(s) for s in run.data.tags[RESUMED_TAG].split(",")]
    assert resumed[-1] >= reached, (resumed, reached)

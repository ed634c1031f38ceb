"""Multi-worker trials (issue 13, part 5), with real Ray Train worker groups on the embedded Ray:
a trial on 2 gloo workers trains what a 1-worker trial trains at the same global batch (every
evaluation within float tolerance), writes its checkpoints where a 1-worker trial does, and a
worker killed mid-trial (by PID, SIGKILL) is survived: Tune retries the trial, which continues
from its newest checkpoint, logs no step twice and ends with the uninterrupted run's numbers
bit for bit."""

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from orchestration.trial_spec import TrialSpecError
from tests.orchestration.test_ablate import SMOKE, ablate, compose, runs, start_driver
from tests.orchestration.test_preemption import _eval_metrics, _trial_run

COMMAND = [*SMOKE, "arms=[trm]", "seeds=1", "scale.steps=60", "scale.eval_every=10"]
TWO = [*COMMAND, "scale.workers_per_trial=2"]


def test_a_batch_that_does_not_split_over_the_workers_is_refused_before_anything_runs(tmp_path):
    from orchestration.ablate import SuiteError, plan

    with pytest.raises(SuiteError, match=r"global_batch_size=16 does not split over scale\."):
        plan(compose(*COMMAND, "scale.workers_per_trial=3"), tmp_path)
    spec = plan(compose(*TWO), tmp_path)["specs"][0]
    assert spec.workers == 2 and spec.digest_form()["workers"] == 2  # part of what runs
    plain = spec.to_dict()
    plain["workers"] = 3
    with pytest.raises(TrialSpecError, match="does not split over workers=3"):
        type(spec).from_dict(plain)


def test_a_search_on_worker_groups_is_refused_saying_what_to_do_instead(tmp_path):
    from orchestration.ablate import SuiteError, plan

    search = ["suite=search_lr", "scale=smoke", "scale.workers_per_trial=2"]
    with pytest.raises(SuiteError, match=r"is a search: scale\.workers_per_trial=2 is not supp"):
        plan(compose(*search), tmp_path)
    chosen = plan(compose(*search, "search_values={train.lr: 0.001}"), tmp_path)["specs"]
    assert {s.workers for s in chosen} == {2}  # the chosen values, run as a grid: allowed


def _checkpoints(work: Path) -> list[Path]:
    return sorted(work.glob(".trm/ray_results/*/trm-seed0-*/checkpoint_*/state.pt"))


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """The uninterrupted 2-worker trial: its working directory."""
    work = tmp_path_factory.mktemp("two")
    result = ablate(work, *TWO)
    assert result.returncode == 0, result.stderr[-3000:]
    return work


@pytest.mark.slow
def test_two_workers_train_what_one_worker_trains_at_the_same_global_batch(tmp_path, two_workers):
    one = tmp_path / "one"
    one.mkdir()
    result = ablate(one, *COMMAND)
    assert result.returncode == 0, result.stderr[-3000:]
    two_metrics = _eval_metrics(f"sqlite:///{two_workers}/.trm/mlflow.db")
    one_metrics = _eval_metrics(f"sqlite:///{one}/.trm/mlflow.db")
    assert [s for s, _ in two_metrics["eval/lm_loss"]] == [10, 20, 30, 40, 50, 60]
    for name in ("eval/lm_loss", "eval/token_accuracy", "eval/exact_accuracy"):
        for (s1, v1), (s2, v2) in zip(one_metrics[name], two_metrics[name], strict=True):
            assert s1 == s2 and v1 == pytest.approx(v2, abs=2e-3), (name, s1, v1, v2)
    _, (run,), _ = runs(f"sqlite:///{two_workers}/.trm/mlflow.db")
    assert run.info.status == "FINISHED" and run.data.tags["trm.workers"] == "2"
    # rank 0 wrote the checkpoints where a 1-worker trial does, with the global carry
    checkpoints = _checkpoints(two_workers)
    assert len(checkpoints) == 6 and run.data.tags["trm.checkpoint_dir"] == str(
        checkpoints[0].parent.parent
    )
    state = torch.load(checkpoints[-1], weights_only=False)
    assert state["trainer"]["step"] == 60 and state["report"]["step"] == 60.0
    assert state["trainer"]["carry"]["steps"].shape == (16,)  # all 16 slots, not one rank's 8


def _signal_rank_0_once_evaluated(work: Path, driver, signum) -> int:
    """`signum` to rank 0's process (started by this test's run) once the trial has written
    its first evaluation's checkpoint; its PID."""
    uri = f"sqlite:///{work}/.trm/mlflow.db"
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:
        run = _trial_run(uri) if (work / ".trm" / "mlflow.db").exists() else None
        if run is not None and _checkpoints(work) and "trm.worker" in run.data.tags:
            pid = int(run.data.tags["trm.worker"].rsplit(":", 1)[1])
            os.kill(pid, signal.SIGSTOP)  # held still while the test checks it has steps to go
            assert len(_checkpoints(work)) < 6, "the trial ended before it could be signalled"
            os.kill(pid, signum)
            os.kill(pid, signal.SIGCONT)
            return pid
        time.sleep(0.1)
    raise AssertionError("the trial checkpointed no evaluation before it ended")


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_survived_and_the_result_is_unchanged(tmp_path, two_workers):
    from orchestration.tracking import RESUMED_TAG

    uri = f"sqlite:///{tmp_path}/.trm/mlflow.db"
    driver = start_driver(tmp_path, TWO)
    try:
        killed = _signal_rank_0_once_evaluated(tmp_path, driver, signal.SIGKILL)
        assert driver.wait(timeout=300) == 0
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    _, (run,), (parent,) = runs(uri)
    assert run.info.status == parent.info.status == "FINISHED"
    # the retry continued the run from a checkpoint, on a new worker group
    assert int(run.data.tags[RESUMED_TAG].split(",")[-1]) >= 10
    assert run.data.tags["trm.worker"].rsplit(":", 1)[1] != str(killed)
    resumed = _eval_metrics(uri)
    # no step logged twice or missing, and every number as the uninterrupted run's
    assert resumed == _eval_metrics(f"sqlite:///{two_workers}/.trm/mlflow.db")


@pytest.mark.slow
def test_sigterm_to_a_worker_checkpoints_the_group_and_the_retry_continues_exactly(
    tmp_path, two_workers
):
    """What a pod deletion or spot reclaim sends: SIGTERM to rank 0's process once the trial
    has evaluated. Every rank stops at the end of the step in flight, rank 0 checkpoints it,
    the group fails with `Preempted` naming that step, and Tune's retry continues from it."""
    from orchestration.tracking import RESUMED_TAG

    uri = f"sqlite:///{tmp_path}/.trm/mlflow.db"
    driver = start_driver(tmp_path, TWO, capture=True)
    try:
        _signal_rank_0_once_evaluated(tmp_path, driver, signal.SIGTERM)
        out, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    _, (run,), (parent,) = runs(uri)
    assert run.info.status == parent.info.status == "FINISHED"
    resumed = int(run.data.tags[RESUMED_TAG].split(",")[-1])
    # the attempt stopped on the signal (not killed by it) at the step the retry resumed from
    assert f"SIGTERM at step {resumed}: checkpointed" in out + err, (out + err)[-3000:]
    assert 10 <= resumed < 60
    steps = [torch.load(p, weights_only=False)["trainer"]["step"] for p in _checkpoints(tmp_path)]
    assert resumed in steps and steps == sorted(steps)
    # no step logged twice or missing, and every number as the uninterrupted run's
    assert _eval_metrics(uri) == _eval_metrics(f"sqlite:///{two_workers}/.trm/mlflow.db")

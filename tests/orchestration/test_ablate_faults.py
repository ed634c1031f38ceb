"""`python -m orchestration.ablate` under faults, with real processes ended by PID: `kill -9`
of the driver (a grid, a search) and the same command again; a trial's worker killed at every
attempt, or between logging an evaluation and its checkpoint; a second driver of a running
execution; Ray daemons left by a killed driver; a saved Tune state naming a checkpoint that is
gone; a rerun after a code edit. (Split from test_ablate.py so the two test processes of
`make test` share the slow tests more evenly.)"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.orchestration.test_ablate import (
    SMOKE,
    ablate,
    kill_driver,
    runs,
    start_driver,
)


@pytest.mark.slow
def test_kill_9_of_the_driver_then_the_same_command_finishes_every_trial(tmp_path):
    command = [*SMOKE, "scale.steps=60", "scale.eval_every=10", "scale.max_concurrent_trials=1"]
    driver = start_driver(tmp_path, command)
    deadline = time.time() + 300
    results = tmp_path / ".trm" / "ray_results"
    # killed once Tune has saved its state (before that, a rerun is a fresh start by design)
    while time.time() < deadline and (
        len(list(results.glob("*/*/checkpoint_*"))) < 3
        or not list(results.glob("*/experiment_state-*.json"))
    ):
        time.sleep(0.5)
    assert list(results.glob("*/*/checkpoint_*")), "no checkpoint appeared before the kill"
    kill_driver(driver, tmp_path)

    result = ablate(tmp_path, *command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming" in result.stderr
    _, children, parents = runs(f"sqlite:///{tmp_path}/.trm/mlflow.db")
    names = sorted(r.info.run_name for r in children)
    assert names == ["one_step_grad/seed0", "one_step_grad/seed1", "trm/seed0", "trm/seed1"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def _terminated_trials(results: Path) -> int:
    """Trials Tune's newest saved experiment state records as TERMINATED (finished)."""
    states = sorted(results.glob("*/experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    try:
        saved = json.loads(states[-1].read_text()) if states else {"trial_data": []}
    except (OSError, ValueError):  # replaced while read
        return 0
    return sum(json.loads(t)["status"] == "TERMINATED" for t, _ in saved["trial_data"])


def _freeze_ray_workers(cwd: Path) -> list[int]:
    """SIGSTOP every Ray worker process (`ray::…`: trial actors, idle workers) of the embedded
    Ray this test's run started in `cwd`: no trial ends or starts from here on, while the
    driver goes on saving Tune's state. kill_driver ends them later (SIGKILL reaches a stopped
    process)."""
    from orchestration.ray_session import _processes, ray_temp_dir, session_processes

    table = _processes()
    workers = [
        pid
        for pid in session_processes(ray_temp_dir(cwd))
        if pid in table and table[pid][1].startswith("ray::")
    ]
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    return workers


def _wait_for_a_state_save_after(results: Path, moment: float, timeout_s: float = 60) -> None:
    """Until Tune's saved experiment state is newer than `moment` plus one save period (a save
    begun before `moment` may not hold what happened just before it)."""
    from orchestration.ablate import EXPERIMENT_STATE_EVERY_S

    after = moment + float(EXPERIMENT_STATE_EVERY_S) + 0.5
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        saved = [p.stat().st_mtime for p in results.glob("*/experiment_state-*.json")]
        if saved and max(saved) >= after:
            return
        time.sleep(0.2)


@pytest.mark.slow
def test_search_state_survives_a_killed_driver(tmp_path):
    command = ["suite=search_lr", "scale=smoke", "scale.steps=40", "scale.max_concurrent_trials=1"]
    driver = start_driver(tmp_path, command)
    results = tmp_path / ".trm" / "ray_results"
    deadline = time.time() + 300
    # Killed once Tune's saved state records a finished trial and the next one has
    # checkpointed, with the trials frozen first until Tune has saved its state again: a
    # trial that finished and was killed before the next save (at most
    # EXPERIMENT_STATE_EVERY_S later) would be unknown to the resumed searcher, which would
    # sample once more (the run stays FINISHED, the search has one sample extra). That
    # window is product behaviour; the test kills outside it, on a fast or a slow machine.
    while time.time() < deadline and not (
        _terminated_trials(results) >= 1 and len(list(results.glob("*/*/checkpoint_*"))) >= 5
    ):
        time.sleep(0.2)
    frozen_at = time.time()
    assert _freeze_ray_workers(tmp_path), "no Ray worker of the run was found"
    _wait_for_a_state_save_after(results, frozen_at)
    kill_driver(driver, tmp_path)
    result = ablate(tmp_path, *command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming" in result.stderr
    _, children, parents = runs(f"sqlite:///{tmp_path}/.trm/mlflow.db", suite="search_lr")
    assert all(r.info.status in ("FINISHED", "KILLED") for r in children)  # none RUNNING
    # A trial in flight that Tune had not yet recorded is lost with the driver; its run is
    # ended KILLED and tagged, and the resumed searcher samples that slot again.
    completed = [r for r in children if "trm.interrupted" not in r.data.tags]
    assert len(completed) == 6  # the searcher resumed at its sample count, no extra samples
    assert len({r.data.params["train.lr"] for r in completed}) == 6
    assert len(children) - len(completed) <= 1
    assert parents[0].info.status == "FINISHED"


def _copy_of_the_code(tmp_path: Path) -> Path:
    """The packages copied into a fresh git checkout: a run there imports that copy (the
    working directory comes first on sys.path), whose code the test can then edit."""
    from orchestration.provenance import PACKAGES, REPO

    repo = tmp_path / "repo"
    repo.mkdir()
    for name in PACKAGES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, repo / name)
    (repo / ".gitignore").write_text(".trm/\n__pycache__/\n")
    for command in (["init", "-q"], ["add", "."], ["commit", "-qm", "copy"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *command], cwd=repo, check=True
        )
    return repo


@pytest.mark.slow
def test_a_rerun_after_a_code_edit_is_a_new_execution_and_says_so(tmp_path):
    repo = _copy_of_the_code(tmp_path)
    command = [*SMOKE, "arms=[trm]", "seeds=1", "scale.steps=10", "scale.eval_every=10"]
    first = ablate(repo, *command)
    assert first.returncode == 0, first.stderr[-3000:]
    (repo / "multirun" / "2026-12-02").mkdir(parents=True)  # Hydra's -m output: not code
    with open(repo / "trm_core" / "trainer.py", "a") as trainer:
        trainer.write("# an edit: results may differ\n")
    second = ablate(repo, *command)
    assert second.returncode == 0, second.stderr[-3000:]
    changed = [line for line in second.stderr.splitlines() if line.startswith("code changed")]
    assert len(changed) == 1 and "+diff." in changed[0], second.stderr[-3000:]
    client, children, parents = runs(f"sqlite:///{repo}/.trm/mlflow.db")
    assert len(parents) == 2 and len(children) == 2  # the trial ran again, in its own run
    edited = next(p for p in parents if "+diff." in p.data.tags["trm.code"])
    patch = client.download_artifacts(edited.info.run_id, "code/diff.patch", str(tmp_path))
    assert "+# an edit: results may differ" in Path(patch).read_text()


@pytest.mark.slow
def test_a_trial_killed_on_every_attempt_ends_failed_not_running(tmp_path):
    result = ablate(tmp_path, *SMOKE, "arms=[trm]", "seeds=1", "+inject_failure.trm=killed")
    assert result.returncode == 1, result.stderr[-3000:]
    _, children, parents = runs(f"sqlite:///{tmp_path}/.trm/mlflow.db")
    (run,) = children
    assert run.info.status == "FAILED" and run.data.tags["error"]
    assert parents[0].info.status == "FAILED"


@pytest.mark.slow
def test_a_retry_after_a_kill_between_log_and_checkpoint_logs_no_step_twice(tmp_path):
    result = ablate(
        tmp_path, *SMOKE, "arms=[trm]", "seeds=1", "+inject_failure.trm=killed_after_log"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client, children, _ = runs(f"sqlite:///{tmp_path}/.trm/mlflow.db")
    (run,) = children
    assert run.info.status == "FINISHED" and "error" not in run.data.tags  # no stale error
    for metric in ("eval/exact_accuracy", "step", "train/loss"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
        assert sorted(steps) == [10, 20], (metric, steps)


@pytest.mark.slow
def test_a_second_driver_of_a_running_execution_is_refused_naming_the_first(tmp_path):
    # long enough to be running still when the second driver has started (it is killed below)
    command = [*SMOKE, "arms=[trm]", "seeds=1", "scale.steps=20000", "scale.eval_every=1000"]
    driver = start_driver(tmp_path, command)
    try:
        results = tmp_path / ".trm" / "ray_results"
        deadline = time.time() + 300
        while time.time() < deadline and not any(
            p.stat().st_size for p in results.glob("*.driver.lock")
        ):
            time.sleep(0.5)
        second = ablate(tmp_path, *command)
        assert second.returncode == 2, second.stderr[-3000:]
        assert "already being run by another driver" in second.stderr
        assert f"pid {driver.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        kill_driver(driver, tmp_path)
    _, children, _ = runs(f"sqlite:///{tmp_path}/.trm/mlflow.db")
    assert len(children) <= 1  # the refused driver started no run of its own


@pytest.mark.slow
def test_the_embedded_ray_keeps_its_files_in_the_working_directory_and_sweeps_a_killed_one(
    tmp_path,
):
    """Ray's session files live under .trm/ray (or the short folder it links to), not the
    system temp dir; the processes and session a kill -9 left are gone after the next run."""
    from orchestration.ray_session import ray_temp_dir, session_processes

    command = [*SMOKE, "arms=[trm]", "seeds=1", "scale.steps=400"]
    driver = start_driver(tmp_path, command)
    temp = ray_temp_dir(tmp_path)
    deadline = time.time() + 300
    while time.time() < deadline and not list(temp.glob("session_2*")):
        time.sleep(0.5)
    (killed_session,) = list(temp.glob("session_2*"))
    results = tmp_path / ".trm" / "ray_results"
    while time.time() < deadline and not list(results.glob("*/*/checkpoint_*")):
        time.sleep(0.5)  # a trial is training: Ray's daemons and a worker are up
    os.killpg(driver.pid, signal.SIGKILL)  # only the driver's group: daemons may outlive it
    driver.wait()
    result = ablate(tmp_path, *SMOKE, "arms=[trm]", "seeds=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not killed_session.exists()
    assert session_processes(temp, killed_session.name) == []
    assert session_processes(temp) == []  # the finished run's Ray is gone too
    assert (tmp_path / ".trm" / "ray").exists()


@pytest.mark.slow
def test_a_resume_whose_saved_state_names_a_deleted_checkpoint_still_makes_progress(tmp_path):
    """Tune's saved experiment state names a checkpoint that is gone by the rerun (a retention
    rule or a store lost it; here: every checkpoint but the first is deleted after the kill).
    Every rerun used to fail that trial for good; it must fall back to what exists."""
    command = [*SMOKE, "arms=[trm]", "seeds=1", "scale.steps=600", "scale.eval_every=5"]
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"}  # the state names a recent one
    driver = start_driver(tmp_path, command, env)
    results = tmp_path / ".trm" / "ray_results"
    deadline = time.time() + 300

    def checkpoints() -> list[Path]:
        return sorted(results.glob("*/*/checkpoint_*"), key=lambda p: int(p.name.split("_")[1]))

    while time.time() < deadline and len(checkpoints()) < 30:
        time.sleep(0.2)
    time.sleep(2)  # a save of the experiment state after the 30th checkpoint
    kill_driver(driver, tmp_path)
    kept, *deleted = checkpoints()
    assert kept.name == "checkpoint_000000" and len(deleted) >= 29
    for path in deleted:
        shutil.rmtree(path)
    result = ablate(tmp_path, *command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming" in result.stderr
    client, (run,), _ = runs(f"sqlite:///{tmp_path}/.trm/mlflow.db")
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "eval/exact_accuracy")]
    assert steps == list(range(5, 601, 5))  # each evaluation once, none missing

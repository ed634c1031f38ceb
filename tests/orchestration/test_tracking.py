"""Tracking calls survive passing failures (two trial processes racing on MLflow's first insert
of a shared dataset input) instead of using up a trial's retries; real failures still surface
at once. (A held sqlite lock needs no retry of ours: MLflow waits up to 20 s for it.)"""

import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.tracking import Tracker


def test_a_real_error_is_not_retried(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    real_get_run, calls = tracker.client._client.get_run, []

    def counted(*args):
        calls.append(args)
        return real_get_run(*args)

    tracker.client._client.get_run = counted
    with pytest.raises(Exception, match="nonexistent"):
        tracker.client.get_run("nonexistent")
    assert len(calls) == 1


# Every script waits for all the processes at a file barrier (imports take seconds and vary
# with the machine's load) before the part that races.
BARRIER = """
import os, time
from pathlib import Path
def all_here(folder, count):
    Path(folder, str(os.getpid())).touch()
    while len(os.listdir(folder)) < count:
        time.sleep(0.005)
"""

# Each process logs, round after round, the dataset every other process logs that round: MLflow
# looks a dataset up and inserts it when missing, so two first uses race on its unique key.
LOG_SAME_DATASETS = (
    BARRIER
    + """
import sys
from orchestration.tracking import Tracker
folder, count, uri, experiment, rounds = sys.argv[1:6]
tracker = Tracker(uri)
run = tracker.start_run(experiment, "trial", {"trm.arm": "a"})
all_here(folder, int(count))
start = time.time()
for i in range(int(rounds)):
    time.sleep(max(0.0, start + 0.5 * i - time.time()))  # all processes start a round together
    tracker.log_dataset(run, "sudoku", f"digest-{i}", "store", "train")
print("ok", flush=True)
"""
)


def run_together(folder: Path, script: str, *args: str, processes: int = 4) -> list[str]:
    """Run `script` in `processes` real processes at once (meeting at a barrier in `folder`);
    their stdouts, each asserted ok."""
    folder.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(folder), str(processes), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-2000:]
    return [out.strip() for out, _ in outputs]


def test_concurrent_first_uses_of_a_dataset_input_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = Tracker(uri).experiment("trm-lab/datasets")
    outputs = run_together(tmp_path / "ready", LOG_SAME_DATASETS, uri, experiment, "8")
    assert outputs == ["ok"] * 4


# Opens the tracker of a store that does not exist yet, at the same moment as the others.
OPEN_FRESH_STORE = (
    BARRIER
    + """
import sys
from orchestration.tracking import Tracker
all_here(sys.argv[1], int(sys.argv[2]))
tracker = Tracker(sys.argv[3])
print(tracker.experiment("trm-lab/fresh"), flush=True)
"""
)


def test_drivers_creating_one_fresh_store_at_once_all_get_a_working_store(tmp_path):
    uri = f"sqlite:///{tmp_path / '.trm' / 'mlflow.db'}"
    outputs = run_together(tmp_path / "ready", OPEN_FRESH_STORE, uri)
    assert len(set(outputs)) == 1  # one experiment, seen by all
    assert sorted(p.name for p in (tmp_path / ".trm").iterdir()) == ["mlflow.db"]

"""`python -m orchestration.rescore` end to end with real components (issue 12): a smoke suite
trained through real Ray and a sqlite MLflow store, then its kept checkpoints re-scored under
three protocols as Ray tasks. Checked: one FINISHED run per (trial, protocol) nested under the
trial's run with the protocol's fields; every evaluation checkpoint scored on test and on the
validation split; the paper protocol's final score is exactly what the trial logged; deeper
recursion runs 4× the trained steps; a rerun scores nothing twice; the suite's report then
carries the protocol section; bad input is refused before anything runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.orchestration.test_ablate import SMOKE, ablate, runs

pytestmark = pytest.mark.slow


def rescore(cwd: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestration.rescore", *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ},
    )


@pytest.fixture(scope="module")
def rescored(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("rescore")
    # one full checkpoint kept: the older evaluation is slimmed to its weights, still scored
    trained = ablate(cwd, *SMOKE, "seeds=1", "scale.full_checkpoints=1")
    assert trained.returncode == 0, trained.stderr[-3000:]
    first = rescore(cwd, "suite=smoke", "protocol=paper,deeper,voting")
    assert first.returncode == 0, first.stderr[-3000:]
    return cwd, first


def test_every_trial_and_protocol_has_one_nested_finished_run(rescored):
    cwd, first = rescored
    client, children, parents = runs(f"sqlite:///{cwd}/.trm/mlflow.db")
    trials = [r for r in children if r.data.tags.get("trm.role") != "rescore"]
    scored = [r for r in children if r.data.tags.get("trm.role") == "rescore"]
    assert len(trials) == 2 and len(scored) == 6
    assert not [r for r in children + parents if r.info.status == "RUNNING"]
    for trial in trials:
        mine = [r for r in scored if r.data.tags["mlflow.parentRunId"] == trial.info.run_id]
        assert sorted(r.data.tags["trm.protocol"] for r in mine) == ["deeper", "paper", "voting"]
        assert all(r.info.status == "FINISHED" for r in mine)
        assert all(r.data.tags["trm.rescored_execution"] == parents[0].info.run_id for r in mine)
        by_protocol = {r.data.tags["trm.protocol"]: r for r in mine}
        paper, deeper, voting = (by_protocol[p] for p in ("paper", "deeper", "voting"))
        trained = int(trial.data.params["model.halt_max_steps"])
        assert paper.data.params["resolved.supervision_steps"] == str(trained)
        assert deeper.data.params["resolved.supervision_steps"] == str(4 * trained)
        assert deeper.data.params["protocol.supervision_factor"] == "4"
        assert voting.data.params["resolved.samples"] == "8"
        assert voting.data.metrics["test_flops_per_puzzle"] == pytest.approx(
            8 * paper.data.metrics["test_flops_per_puzzle"]
        )
        # every evaluation checkpoint (steps 10 and 20 at smoke) on both splits
        for split in ("test", "validation"):
            history = client.get_metric_history(paper.info.run_id, f"{split}/exact_accuracy")
            assert sorted(m.step for m in history) == [10, 20]
        assert paper.data.params["checkpoints"] == "10,20"
        # the paper protocol's score of every checkpoint (the slimmed one too) is the trial's
        # own evaluation at that step, exactly
        for metric in ("exact_accuracy", "token_accuracy"):
            ours = client.get_metric_history(paper.info.run_id, f"test/{metric}")
            logged = client.get_metric_history(trial.info.run_id, f"eval/{metric}")
            assert {m.step: m.value for m in ours} == {m.step: m.value for m in logged}
        assert (
            paper.data.metrics["final/exact_accuracy"] == trial.data.metrics["eval/exact_accuracy"]
        )
        assert paper.data.metrics["best_validation/step"] in (10.0, 20.0)
        listed = json.loads(
            (Path(client.download_artifacts(paper.info.run_id, "checkpoints.json"))).read_text()
        )
        assert [c["step"] for c in listed] == [10, 20]
    assert "warning" not in first.stderr


def test_older_evaluations_keep_only_their_weights(rescored):
    """scale.full_checkpoints=1: the step-10 evaluation was slimmed once step 20's existed."""
    import torch

    from orchestration.checkpoints import SLIM_MARKER

    cwd, _ = rescored
    _, children, _ = runs(f"sqlite:///{cwd}/.trm/mlflow.db")
    for trial in [r for r in children if r.data.tags.get("trm.role") != "rescore"]:
        folder = Path(trial.data.tags["trm.checkpoint_dir"])
        states = {}
        for path in sorted(folder.glob("checkpoint_*/state.pt")):
            state = torch.load(path, weights_only=False)
            states[state["trainer"]["step"]] = (path.parent, state)
        assert sorted(states) == [10, 20]
        slim_folder, slim = states[10]
        assert (slim_folder / SLIM_MARKER).exists() and "optimizer" not in slim["trainer"]
        assert slim["report"]["step"] == 10.0 and "model" in slim["trainer"]
        full_folder, full = states[20]
        assert not (full_folder / SLIM_MARKER).exists() and full["trainer"]["optimizer"]


def test_a_rerun_scores_nothing_twice(rescored):
    cwd, _ = rescored
    again = rescore(cwd, "suite=smoke", "protocol=paper,deeper,voting")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "rescored 0 (trial, protocol) pairs" in again.stderr
    _, children, _ = runs(f"sqlite:///{cwd}/.trm/mlflow.db")
    assert len([r for r in children if r.data.tags.get("trm.role") == "rescore"]) == 6


def test_the_protocol_section_is_printed_and_in_the_suite_report(rescored):
    cwd, first = rescored
    assert "**Protocols — Smoke" in first.stdout
    assert "best on validation" in first.stdout and "voting over 8 augmentations" in first.stdout
    report = subprocess.run(
        [sys.executable, "-m", "orchestration.report", "suite=smoke"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "**Protocols — Smoke" in report.stdout
    parent = next(cwd.glob(".trm/reports/*/protocols.md")).parent
    assert (parent / "accuracy_vs_flops.png").stat().st_size > 0
    assert "paper" in (parent / "protocols.csv").read_text().splitlines()[1]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["suite=smoke", "protocol=deepest"], "unknown protocol(s) ['deepest']"),
        (["suite=smoke", "force=maybe"], "force='maybe'"),
        (["protocol=paper"], "suite=NAME is required"),
        (["suite=smoke", "depth=3"], "expected key=value with key in"),
    ],
)
def test_bad_input_is_refused_with_what_is_allowed(rescored, arguments, message):
    cwd, _ = rescored
    refused = rescore(cwd, *arguments)
    assert refused.returncode == 2
    assert message in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_search_execution_is_refused_with_what_to_do_instead(rescored):
    cwd, _ = rescored
    client, _, parents = runs(f"sqlite:///{cwd}/.trm/mlflow.db")
    search = client.create_run(
        parents[0].info.experiment_id, tags={"trm.role": "suite", "trm.kind": "search"}
    )
    client.set_terminated(search.info.run_id)
    refused = rescore(cwd, "suite=smoke", f"run={search.info.run_id}")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "is a search" in refused.stderr and "search_values=" in refused.stderr

"""The report over a fixture MLflow store: means, 95 % Student-t intervals, deltas vs the paper
and vs the baseline, parameter counts and failed/missing trials, checked against numbers
computed by hand here; every output format is written and logged on the parent run."""

import dataclasses
import math

import pytest
from mlflow import MlflowClient

from orchestration.report import report
from orchestration.suite import load_suite
from orchestration.tracking import Tracker

SHAPE = dict(vocab_size=6, seq_len=16, num_puzzle_ids=1)
SCALE_MODEL = dict(hidden=32, heads=2, expansion=2, swiglu_multiple=16)


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri)
    suite = load_suite("smoke")
    experiment = tracker.experiment("trm-lab/smoke", (tmp_path / "artifacts").as_uri())
    parent = tracker.start_run(
        experiment, "smoke-exec", {"trm.role": "suite", "trm.scale": "smoke"}, params={"seeds": 3}
    )
    results = {"trm": [0.5, 0.6, 0.7], "one_step_grad": [0.40, 0.45, None]}  # None = failed
    for arm, values in results.items():
        model, _ = suite.resolve(arm, SHAPE, SCALE_MODEL, {})
        for seed, value in enumerate(values):
            run = tracker.start_run(
                experiment,
                f"{arm}/seed{seed}",
                {
                    "mlflow.parentRunId": parent,
                    "trm.arm": arm,
                    "trm.seed": str(seed),
                    "trm.device": "cpu",
                },
                params={"model": dataclasses.asdict(model)},
            )
            if value is None:
                tracker.finish(run, "FAILED", error="boom")
                continue
            for step, fraction in ((10, value / 2), (20, value)):
                tracker.log_metrics(
                    run,
                    {
                        "eval/exact_accuracy": fraction,
                        "eval/token_accuracy": 0.9 + fraction / 10,
                        "eval/exact_accuracy/step=1": fraction / 2,
                        "eval/exact_accuracy/step=2": fraction,
                        "wall_time_s": 360.0,
                    },
                    step=step,
                )
            tracker.finish(run)
    tracker.finish(parent)
    return uri, parent, tmp_path


def test_table_numbers_match_hand_computation(store):
    uri, parent, tmp_path = store
    markdown = report("smoke", uri, out=tmp_path / "reports")
    lines = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in markdown.splitlines()
        if line.startswith("| ") and "---" not in line
    }
    # trm: 50, 60, 70 → mean 60, s = 10, t(0.975, 2) = 4.302653 → ± 24.84
    trm = lines["TRM (T=2, n=2)"]
    assert trm[1] == f"60.0 ± {4.302653 * 10 / math.sqrt(3):.1f} (n=3)"
    # one_step: 40, 45 → mean 42.5, s = 3.5355, t(0.975, 1) = 12.7062 → ± 31.8; one failed
    one = lines["w/ 1-step gradient"]
    assert one[1] == f"42.5 ± {12.7062 * math.sqrt(12.5) / math.sqrt(2):.1f} (n=2) [1 failed]"
    assert one[3] == "-17.5"  # Δ vs the baseline
    assert trm[2] == "—" and trm[3] == "—"  # the smoke suite has no paper numbers
    assert trm[4] == "96.0" and one[4] == f"{90 + 4.25:.1f}"  # token accuracy, mean of seeds
    assert trm[7] == f"{3 * 360 / 3600:.2f} CPU-h"
    assert trm[5].endswith("M") and trm[6] == str(2 * 3 * 2)  # depth T(n+1)·layers
    client = MlflowClient(uri)
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {
        "report/table.md",
        "report/table.csv",
        "report/table.html",
        "report/table.tex",
        "report/accuracy_vs_step.png",
        "report/accuracy_vs_supervision_step.png",
    } <= logged


def test_delta_to_the_paper_is_only_shown_at_the_papers_scale():
    from orchestration.report import ArmRow, table

    rows = [ArmRow("trm", "TRM", 87.4, values=[80.0, 82.0]), ArmRow("x", "X", 50.0, values=[40.0])]
    assert [r["Δ paper"] for r in table(rows)] == ["-6.4", "-10.0"]
    assert [r["Δ paper"] for r in table(rows, comparable=False)] == ["n/c", "n/c"]
    assert [r["Δ baseline"] for r in table(rows, comparable=False)] == ["—", "-41.0"]


def test_missing_trials_are_shown_not_dropped(store):
    uri, _, tmp_path = store
    client = MlflowClient(uri)
    for run in client.search_runs(
        [client.get_experiment_by_name("trm-lab/smoke").experiment_id],
        "tags.`trm.arm` = 'one_step_grad'",
    ):
        client.delete_run(run.info.run_id)
    markdown = report("smoke", uri, out=tmp_path / "reports")
    assert "| w/ 1-step gradient | — | missing [3 missing] |" in markdown


def test_report_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no MLflow experiment trm-lab/paper"):
        report("paper", f"sqlite:///{tmp_path}/empty.db")


def test_main_suite_is_pivoted_by_method_and_task_with_each_tasks_metric(tmp_path):
    """Tables 4–5: one row per method, paper | ours per task; ARC reads pass@2 (logged by
    MLflow's rules as ARC/pass_2), the other tasks exact accuracy."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri)
    experiment = tracker.experiment("trm-lab/main", (tmp_path / "artifacts").as_uri())
    parent = tracker.start_run(
        experiment, "main-exec", {"trm.role": "suite", "trm.scale": "paper"}, params={"seeds": 1}
    )
    logged = {
        "trm_att_sudoku": {"eval/exact_accuracy": 0.70, "eval/ARC/pass@2": 0.99},
        "trm_att_arc1": {"eval/exact_accuracy": 0.10, "eval/ARC/pass@2": 0.40},
    }
    for arm, metrics in logged.items():
        run = tracker.start_run(
            experiment, f"{arm}/seed0", {"mlflow.parentRunId": parent, "trm.arm": arm}
        )
        tracker.log_metrics(run, metrics, step=1)
        tracker.finish(run)
    failed = tracker.start_run(
        experiment, "hrm_arc1/seed0", {"mlflow.parentRunId": parent, "trm.arm": "hrm_arc1"}
    )
    tracker.finish(failed, "FAILED", error="out of memory")
    tracker.finish(parent)

    markdown = report("main", uri, out=tmp_path / "reports")
    assert "exact_accuracy, ARC/pass@2, scale paper" in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("| method"))
    assert header.split(" | ")[1:3] == ["sudoku paper", "sudoku ours"]
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in markdown.splitlines()
        if line.startswith("| ") and "---" not in line and not line.startswith("| method")
    }
    assert list(rows) == ["TRM-Att", "HRM", "TRM-MLP"]
    att, hrm = rows["TRM-Att"], rows["HRM"]
    assert att[0:2] == ["74.7", "70.0 (n=1)"]  # Sudoku: exact accuracy
    assert att[4:6] == ["44.6", "40.0 (n=1)"]  # ARC-AGI-1: pass@2, not exact accuracy
    assert att[2:4] == ["85.3", "missing [1 missing]"]  # Maze: not run, shown as such
    assert hrm[4:6] == ["40.3", "failed [1 failed]"]

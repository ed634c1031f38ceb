"""The report over fixture MLflow stores (real sqlite stores, runs written as ablate writes
them): means, 95 % Student-t intervals, deltas vs the paper and vs the baseline with a Welch
interval, parameter counts and failed/missing trials, checked against numbers computed by hand
here; the CSV holds numbers only; the HTML page is self-contained; captions name the task, the
scale and the overrides; plots are titled, labelled and keep overlapping arms apart; search
suites list their trials ranked with the command that reruns the best one."""

import base64
import csv
import dataclasses
import io
import json
import math
import re
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from orchestration.report import (
    BAND_NOTE,
    Curve,
    Execution,
    collect,
    grid_figures,
    plot_panels,
    report,
    where_to_look,
)
from orchestration.suite import load_suite
from orchestration.tracking import Tracker

SHAPE = dict(vocab_size=6, seq_len=16, num_puzzle_ids=1)
SCALE_MODEL = dict(hidden=32, heads=2, expansion=2, swiglu_multiple=16)
T_975 = {1: 12.7062047, 2: 4.3026527}  # Student-t quantiles from tables


def table_cells(markdown: str) -> dict[str, list[str]]:
    """First column → the other cells, for every body row of the Markdown table."""
    return {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in markdown.splitlines()
        if line.startswith("| ") and "---" not in line
    }


def table_columns(markdown: str) -> dict[str, dict[str, str]]:
    """First column → {header: cell} for every body row of the Markdown table."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    header = [c.strip() for c in lines[0].split("|")[1:-1]]
    return {
        cells[0]: dict(zip(header, cells, strict=True))
        for cells in ([c.strip() for c in line.split("|")[1:-1]] for line in lines[1:])
    }


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow sqlite store with its tables: creating them takes ≈ 5 s, copying 0.1 s."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    Tracker(f"sqlite:///{path}").client.search_experiments()
    return path


@pytest.fixture
def fresh(tmp_path, empty_store) -> Path:
    """tmp_path with an empty store in it, where `start_execution` looks."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return tmp_path


def start_execution(tmp_path: Path, suite: str, tags: dict, params: dict) -> tuple:
    """(tracking URI, tracker, experiment id, parent run id) of the store in tmp_path."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri)
    experiment = tracker.experiment(f"trm-lab/{suite}", (tmp_path / "artifacts").as_uri())
    parent = tracker.start_run(
        experiment, f"{suite}-exec", {"trm.role": "suite", **tags}, params=params
    )
    return uri, tracker, experiment, parent


def add_trial(
    tracker: Tracker,
    experiment: str,
    parent: str,
    name: str,
    tags: dict,
    history: list[tuple[int, dict]],
    status: str = "FINISHED",
    params: dict | None = None,
) -> str:
    """A child run with metrics logged at each (step, metrics) of `history`."""
    run = tracker.start_run(experiment, name, {"mlflow.parentRunId": parent, **tags}, params)
    for step, metrics in history:
        tracker.log_metrics(run, metrics, step=step)
    tracker.finish(run, status, error="boom" if status == "FAILED" else None)
    return run


def smoke_history(value: float) -> list[tuple[int, dict]]:
    return [
        (
            step,
            {
                "eval/exact_accuracy": fraction,
                "eval/token_accuracy": 0.9 + fraction / 10,
                "eval/exact_accuracy/step=1": fraction / 2,
                "eval/exact_accuracy/step=2": fraction,
                "wall_time_s": 360.0,
            },
        )
        for step, fraction in ((10, value / 2), (20, value))
    ]


def smoke_store(tmp_path: Path, results: dict, parent_tags=None, parent_params=None) -> tuple:
    suite = load_suite("smoke")
    uri, tracker, experiment, parent = start_execution(
        tmp_path,
        "smoke",
        {"trm.scale": "smoke", **(parent_tags or {})},
        {"seeds": 3, **(parent_params or {})},
    )
    for arm, values in results.items():
        model, _ = suite.resolve(arm, SHAPE, SCALE_MODEL, {})
        for seed, value in enumerate(values):
            add_trial(
                tracker,
                experiment,
                parent,
                f"{arm}/seed{seed}",
                {"trm.arm": arm, "trm.seed": str(seed), "trm.device": "cpu"},
                [] if value is None else smoke_history(value),
                status="FAILED" if value is None else "FINISHED",  # None = failed
                params={
                    "model": dataclasses.asdict(model),
                    "budget": {"steps": 20},
                    "train": {"global_batch_size": 16},
                },
            )
    tracker.finish(parent)
    return uri, parent, tmp_path


@pytest.fixture
def store(fresh):
    return smoke_store(fresh, {"trm": [0.5, 0.6, 0.7], "one_step_grad": [0.40, 0.45, None]})


def test_table_numbers_match_hand_computation(store):
    uri, parent, tmp_path = store
    markdown = report("smoke", uri, out=tmp_path / "reports")
    lines = table_columns(markdown)
    # trm: 50, 60, 70 → mean 60, s = 10, t(0.975, 2) = 4.302653 → ± 24.84
    trm = lines["TRM (T=2, n=2)"]
    assert trm["ours"] == f"60.0 ± {4.302653 * 10 / math.sqrt(3):.1f} (n=3)"
    # one_step: 40, 45 → mean 42.5, s = 3.5355, t(0.975, 1) = 12.7062 → ± 31.8; one failed
    one = lines["w/ 1-step gradient"]
    assert one["ours"] == f"42.5 ± {12.7062 * math.sqrt(12.5) / math.sqrt(2):.1f} (n=2) [1 failed]"
    # Δ vs the baseline, Welch: se² = 12.5/2 + 100/3, dof = se⁴ / (6.25²/1 + 33.3²/2) = 2.635,
    # t(0.975, 2.635) = 3.4442 → -17.5 ± 21.69
    assert one["Δ baseline"] == "-17.5 [-39.2, +4.2]"
    # it contains 0 and is 21.7 > 2 points wide each side; the smoke suite has no paper Δ
    assert one["Δ verdict"] == "undecided" and trm["Δ verdict"] == "—"
    for cell in ("Δ paper", "verdict"):  # the smoke suite has no paper numbers
        assert trm[cell] == one[cell] == "—"
    assert trm["token acc"] == "96.0" and one["token acc"] == f"{90 + 4.25:.1f}"  # seeds' mean
    assert trm["compute"] == f"{3 * 360 / 3600:.2f} CPU-h"
    assert trm["params"].endswith("M") and trm["depth"] == str(2 * 3 * 2)  # depth T(n+1)·layers
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


def test_welch_interval_matches_scipy_and_needs_two_seeds_each_side():
    from scipy import stats

    from orchestration.report import welch_interval

    a, b = [81.0, 84.5, 79.0, 88.0], [70.0, 90.0, 75.5]
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert welch_interval(a, b) == pytest.approx((expected.low, expected.high))
    assert welch_interval([1.0], b) is None and welch_interval(a, [2.0]) is None
    assert welch_interval([0.0, 0.0], [0.0, 0.0]) == (0.0, 0.0)  # all at 0 %: no spread


def test_delta_to_the_paper_is_only_shown_at_the_papers_scale():
    from orchestration.report import ArmRow, table

    rows = [ArmRow("trm", "TRM", 87.4, values=[80.0, 82.0]), ArmRow("x", "X", 50.0, values=[40.0])]
    assert [r["Δ paper"] for r in table(rows)] == ["-6.4", "-10.0"]
    assert [r["Δ paper"] for r in table(rows, comparable=False)] == ["n/c", "n/c"]
    # one seed on one side: the delta, and no interval (said so)
    assert [r["Δ baseline"] for r in table(rows, comparable=False)] == [
        "—",
        "-41.0 (n<2, no interval)",
    ]


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


def test_report_without_runs_is_a_clear_error(fresh):
    with pytest.raises(ValueError, match="no MLflow experiment trm-lab/paper"):
        report("paper", f"sqlite:///{fresh}/mlflow.db")


def test_csv_holds_numbers_and_empty_cells_never_rendered_text(store):
    uri, parent, tmp_path = store
    report("smoke", uri, out=tmp_path / "reports")
    trm, one = read_csv(tmp_path / "reports" / parent / "table.csv")
    numeric = [
        "paper", "mean", "ci_low", "ci_high", "n", "failed", "missing", "delta_paper",
        "delta_baseline", "delta_baseline_ci_low", "delta_baseline_ci_high", "token_accuracy",
        "params", "depth", "compute_hours", "paper_delta_baseline", "tolerance", "train_flops",
        "test_flops_per_puzzle",
    ]  # fmt: skip
    for row in (trm, one):
        for column in numeric:
            assert row[column] == "" or math.isfinite(float(row[column])), (column, row[column])
    half = T_975[2] * 10 / math.sqrt(3)
    assert (trm["arm"], trm["task"]) == ("trm", "tiny_sudoku")
    assert float(trm["mean"]) == pytest.approx(60.0)
    assert float(trm["ci_low"]) == pytest.approx(60 - half, abs=1e-3)
    assert float(trm["ci_high"]) == pytest.approx(60 + half, abs=1e-3)
    assert (trm["n"], trm["failed"], trm["missing"]) == ("3", "0", "0")
    assert trm["paper"] == trm["delta_paper"] == trm["delta_baseline"] == ""
    assert (one["n"], one["failed"], one["missing"]) == ("2", "1", "0")
    assert float(one["delta_baseline"]) == pytest.approx(-17.5)
    assert float(one["delta_baseline_ci_low"]) == pytest.approx(-39.1865, abs=1e-3)
    assert float(one["delta_baseline_ci_high"]) == pytest.approx(4.1865, abs=1e-3)
    assert float(one["token_accuracy"]) == pytest.approx(94.25)
    assert int(trm["params"]) > 0 and trm["depth"] == "12"
    assert float(trm["compute_hours"]) == pytest.approx(0.3)


def test_html_is_a_whole_self_contained_page_with_plots_and_provenance(fresh):
    tmp_path = fresh
    command = "python -m orchestration.ablate suite=smoke scale=smoke seeds=3"
    uri, parent, _ = smoke_store(
        tmp_path,
        {"trm": [0.5, 0.6], "one_step_grad": [0.4, 0.45]},
        parent_tags={"trm.command": command, "trm.git_commit": "0123abc-dirty"},
    )
    report("smoke", uri, out=tmp_path / "reports")
    page = (tmp_path / "reports" / parent / "table.html").read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert '<meta charset="utf-8">' in page
    title = re.search(r"<title>(.*?)</title>", page).group(1)
    assert "Smoke: TRM vs its 1-step-gradient" in title and "scale smoke" in title
    assert f"<caption>{title}</caption>" in page
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    assert all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    assert 'src="accuracy' not in page  # nothing refers to a file beside the page
    footer = re.search(r"<footer>(.*)</footer>", page, re.S).group(1)
    assert f"<code>{command}</code>" in footer and "0123abc-dirty" in footer
    assert parent in footer
    assert BAND_NOTE in page


def test_html_footer_falls_back_when_the_run_has_no_provenance_tags(store):
    uri, parent, tmp_path = store
    report("smoke", uri, out=tmp_path / "reports")
    page = (tmp_path / "reports" / parent / "table.html").read_text(encoding="utf-8")
    footer = re.search(r"<footer>(.*)</footer>", page, re.S).group(1)
    assert "python -m orchestration.ablate suite=smoke scale=smoke" in footer
    assert "reconstructed" in footer and "unknown" in footer


def test_latex_names_task_and_scale_and_says_it_needs_booktabs(store):
    uri, parent, tmp_path = store
    report("smoke", uri, out=tmp_path / "reports")
    tex = (tmp_path / "reports" / parent / "table.tex").read_text(encoding="utf-8")
    assert tex.splitlines()[0].startswith("%") and "\\usepackage{booktabs}" in tex.splitlines()[0]
    caption = re.search(r"\\caption\{(.*)\}", tex).group(1)
    assert "task tiny\\_sudoku (exact accuracy)" in caption and "scale smoke" in caption


def test_caption_names_overrides_and_arms_not_requested_are_not_missing(fresh):
    tmp_path = fresh
    uri, parent, _ = smoke_store(
        tmp_path,
        {"trm": [0.5, 0.6, 0.7]},
        parent_tags={  # as ablate records Hydra's overrides: the suite and scale choice too
            "trm.overrides": json.dumps(
                ["suite=smoke", "scale=smoke", "model.hidden=16", "scale.steps=200"]
            )
        },
        parent_params={"arms": ["trm"]},  # logged as the string "['trm']"
    )
    assert MlflowClient(uri).get_run(parent).data.params["arms"] == "['trm']"
    markdown = report("smoke", uri, out=tmp_path / "reports")
    assert "scale smoke, overrides: model.hidden=16, scale.steps=200" in markdown.splitlines()[0]
    assert list(table_cells(markdown)) == ["arm", "TRM (T=2, n=2)"]  # no one_step_grad row
    assert [r["arm"] for r in read_csv(tmp_path / "reports" / parent / "table.csv")] == ["trm"]


def test_an_arm_run_with_a_declared_override_is_not_compared_with_the_paper(fresh):
    tmp_path = fresh
    suite = load_suite("paper")
    uri, tracker, experiment, parent = start_execution(
        tmp_path, "paper", {"trm.scale": "paper"}, {"seeds": 1, "arms": ["trm", "act_continue"]}
    )
    for arm, override in (("trm", False), ("act_continue", True)):
        tags = {"trm.arm": arm, "trm.seed": "0"}
        if override:
            tags["trm.declared_override"] = "true"
        add_trial(
            tracker, experiment, parent, f"{arm}/seed0", tags, [(5, {"eval/exact_accuracy": 0.8})]
        )
    tracker.finish(parent)
    markdown = report("paper", uri, out=tmp_path / "reports")
    rows = table_cells(markdown)
    act_label = suite.arm("act_continue").label
    assert rows[suite.baseline.label][2] == f"{80 - suite.baseline.paper['accuracy']:+.1f}"
    assert rows[act_label][2] == "n/c"  # even at the paper's scale
    assert table_columns(markdown)[act_label]["verdict"] == "n/c"
    assert (
        "declares overridden" in markdown.splitlines()[0] and act_label in markdown.splitlines()[0]
    )
    records = {r["arm"]: r for r in read_csv(tmp_path / "reports" / parent / "table.csv")}
    assert (
        records["act_continue"]["delta_paper"] == ""
        and records["act_continue"]["declared_override"] == "1"
    )
    assert float(records["trm"]["delta_paper"]) == pytest.approx(80 - 87.4)


def test_flops_per_arm_come_from_each_runs_model_budget_and_batch(store):
    from orchestration.report import flops_text
    from trm_core.flops import supervision_step_flops, test_flops_per_puzzle, training_flops

    uri, parent, tmp_path = store
    suite = load_suite("smoke")
    markdown = report("smoke", uri, out=tmp_path / "reports")
    records = {r["arm"]: r for r in read_csv(tmp_path / "reports" / parent / "table.csv")}
    for arm, label in (("trm", "TRM (T=2, n=2)"), ("one_step_grad", "w/ 1-step gradient")):
        model, _ = suite.resolve(arm, SHAPE, SCALE_MODEL, {})
        # the fixture's runs: budget.steps 20, train.global_batch_size 16
        train = 20 * 16 * supervision_step_flops(model, training=True)
        test = model.halt_max_steps * supervision_step_flops(model, training=False)
        assert train == training_flops(model, 20, 16)
        assert test == test_flops_per_puzzle(model, model.halt_max_steps, samples=1)
        assert float(records[arm]["train_flops"]) == pytest.approx(train)
        assert float(records[arm]["test_flops_per_puzzle"]) == pytest.approx(test)
        cells = table_columns(markdown)[label]
        assert (cells["train FLOPs"], cells["test FLOPs/puzzle"]) == (
            flops_text(train),
            flops_text(test),
        )
    # the one-step gradient differentiates fewer calls: cheaper to train, same to answer
    assert float(records["one_step_grad"]["train_flops"]) < float(records["trm"]["train_flops"])
    assert (
        records["one_step_grad"]["test_flops_per_puzzle"] == records["trm"]["test_flops_per_puzzle"]
    )
    assert "train FLOPs: one trial's model FLOPs" in markdown


def test_flops_are_written_short():
    from orchestration.report import flops_text

    assert flops_text(2.1e18) == "2.1e18"
    assert flops_text(1.23e9) == "1.2e9"
    assert flops_text(9.96e5) == "1.0e6"
    assert flops_text(None) == "—"


# Table 1 at the paper's scale, seeds chosen so that every verdict appears (tolerance 2.0,
# paper.yaml). Each value list: (our %, per seed).
VERDICT_VALUES = {
    "trm": [87.0, 87.4, 87.8],  # paper 87.4
    "hrm": [0.0, 1.0, 2.0],  # paper 55.0
    "act_continue": [86.0, 86.4, 86.8],  # paper 86.1
    "dual_net": [70.0, 90.0, 95.0],  # paper 82.4
    "no_ema": [89.0, 89.4, 89.8],  # paper 79.9
    "t2_n2": [87.2, 87.6, 88.0],  # paper 73.7
}


def verdict_store(tmp_path: Path, scale: str) -> tuple[str, str]:
    uri, tracker, experiment, parent = start_execution(
        tmp_path, "paper", {"trm.scale": scale}, {"seeds": 3, "arms": list(VERDICT_VALUES)}
    )
    for arm, values in VERDICT_VALUES.items():
        for seed, value in enumerate(values):
            tags = {"trm.arm": arm, "trm.seed": str(seed)}
            history = [(5, {"eval/exact_accuracy": value / 100})]
            add_trial(tracker, experiment, parent, f"{arm}/seed{seed}", tags, history)
    tracker.finish(parent)
    return uri, parent


def test_verdicts_at_the_papers_scale_match_hand_computation(fresh):
    """By hand, tolerance 2 points. s = 0.4 for the three seeds x, x+0.4, x+0.8: t-interval
    half-width 4.302653 · 0.4 / √3 = 0.9937. Welch between two such arms: se² = 2 · 0.16/3,
    dof = 4, t(0.975, 4) = 2.776445, half-width 2.776445 · √(0.10667) = 0.9068."""
    uri, parent = verdict_store(fresh, "paper")
    markdown = report("paper", uri, out=fresh / "reports")
    suite = load_suite("paper")
    cells = {arm: table_columns(markdown)[suite.arm(arm).label] for arm in VERDICT_VALUES}
    records = {r["arm"]: r for r in read_csv(fresh / "reports" / parent / "table.csv")}
    # trm [86.41, 88.39] holds 87.4, ±0.99 ≤ 2
    assert cells["trm"]["verdict"] == "reproduced" and cells["trm"]["Δ verdict"] == "—"
    # act [85.41, 87.39] holds 86.1: reproduced. Δ -1.0 [-1.91, -0.09]: excludes 0 below, the
    # paper's Δ 86.1 − 87.4 = -1.3 is below too and inside, ±0.91 ≤ 2
    assert cells["act_continue"]["verdict"] == "reproduced"
    assert cells["act_continue"]["Δ baseline"] == "-1.0 [-1.9, -0.1]"
    assert cells["act_continue"]["Δ verdict"] == "reproduced; same direction"
    # hrm 1.0 ± 2.48 [-1.48, 3.48]: 55.0 outside. Δ -86.4, Welch se² = 1/3 + 0.16/3,
    # dof 2.62 → about [-88.5, -84.3]: excludes 0 below like the paper's -32.4, which lies
    # outside it
    assert cells["hrm"]["verdict"] == "not reproduced"
    assert cells["hrm"]["Δ verdict"] == "not reproduced; same direction"
    # dual_net 70, 90, 95: mean 85, s = √175, ± 32.9: holds 82.4 but too wide; Δ likewise
    assert cells["dual_net"]["verdict"] == "undecided"
    assert cells["dual_net"]["Δ verdict"] == "undecided; undecided"
    # no_ema [88.41, 90.39]: 79.9 outside. Δ +2.0 [1.09, 2.91]: above 0, the paper's -7.5 below
    assert cells["no_ema"]["verdict"] == "not reproduced"
    assert cells["no_ema"]["Δ verdict"] == "not reproduced; opposite direction"
    # t2_n2: Δ +0.2 [-0.71, 1.11] holds 0 and is ±0.91 ≤ 2 wide: no effect; the paper's
    # -13.7 lies outside it
    assert cells["t2_n2"]["verdict"] == "not reproduced"
    assert cells["t2_n2"]["Δ verdict"] == "not reproduced; no effect"
    act = records["act_continue"]
    assert float(act["paper_delta_baseline"]) == pytest.approx(-1.3)
    assert float(act["delta_baseline_ci_low"]) == pytest.approx(-1.0 - 0.9068, abs=1e-3)
    assert float(act["delta_baseline_ci_high"]) == pytest.approx(-1.0 + 0.9068, abs=1e-3)
    assert (act["verdict_paper"], act["verdict_delta_baseline"], act["direction"]) == (
        "reproduced",
        "reproduced",
        "same direction",
    )
    assert float(act["tolerance"]) == 2.0
    assert records["trm"]["direction"] == records["trm"]["verdict_delta_baseline"] == ""
    note = next(line for line in markdown.splitlines() if line.startswith("Verdicts"))
    assert "95 % intervals, tolerance ±2 points" in note and "the paper's Δ against" in note
    assert "seeds=auto" not in markdown  # fixed seeds: no sequential-looks caveat


def test_below_the_papers_scale_only_the_direction_is_judged(fresh):
    """The same seeds at scale=mini: no verdict against the paper's numbers (n/c), and for Δ
    baseline the direction only, still against the sign of the paper's Δ."""
    uri, parent = verdict_store(fresh, "mini")
    markdown = report("paper", uri, out=fresh / "reports")
    suite = load_suite("paper")
    cells = {arm: table_columns(markdown)[suite.arm(arm).label] for arm in VERDICT_VALUES}
    assert {c["verdict"] for c in cells.values()} == {"n/c"}
    assert {arm: c["Δ verdict"] for arm, c in cells.items()} == {
        "trm": "—",
        "hrm": "same direction",
        "act_continue": "same direction",
        "dual_net": "undecided",
        "no_ema": "opposite direction",
        "t2_n2": "no effect",
    }
    records = {r["arm"]: r for r in read_csv(fresh / "reports" / parent / "table.csv")}
    assert records["hrm"]["verdict_paper"] == records["hrm"]["verdict_delta_baseline"] == ""
    note = next(line for line in markdown.splitlines() if line.startswith("Verdicts"))
    assert "the paper's Δ against" not in note


def test_a_seeds_auto_execution_says_how_many_seeds_each_arm_got_and_why_it_stopped(fresh):
    """Runs as a seeds=auto execution leaves them (rule: first 3, add 2, max 5): act_continue
    3 seeds, decided (reproduced; same direction); dual_net 5, still undecided at the maximum;
    trm 3, itself reproduced but the baseline of dual_net's undecided Δ below the maximum, so
    its rounds were cut short (a driver that died, or a report read mid-run): undecided."""
    values = {
        "trm": [87.0, 87.4, 87.8],
        "act_continue": [86.0, 86.4, 86.8],
        "dual_net": [70.0, 90.0, 95.0, 60.0, 99.0],
    }
    uri, tracker, experiment, parent = start_execution(
        fresh,
        "paper",
        {"trm.scale": "paper", "trm.seeds": "auto"},
        {"seeds": "auto", "arms": list(values), "seeds_auto": {"first": 3, "add": 2, "max": 5}},
    )
    for arm, seeds in values.items():
        for seed, value in enumerate(seeds):
            tags = {"trm.arm": arm, "trm.seed": str(seed)}
            history = [(5, {"eval/exact_accuracy": value / 100})]
            add_trial(tracker, experiment, parent, f"{arm}/seed{seed}", tags, history)
    tracker.finish(parent)
    markdown = report("paper", uri, out=fresh / "reports")
    line = next(line for line in markdown.splitlines() if line.startswith("seeds=auto"))
    assert "first 3 seeds per arm, then +2 per round" in line and "at most 5" in line
    assert "TRM (T=3, n=6): 3 seeds (undecided)" in line  # wanted more (dual_net's Δ), below max
    assert "w/ ACT: 3 seeds (decided)" in line
    assert "w/ separate f_H, f_L: 5 seeds (max reached)" in line
    assert "repeated" not in markdown and "every round looked at the intervals again" in markdown
    records = {r["arm"]: r for r in read_csv(fresh / "reports" / parent / "table.csv")}
    assert records["dual_net"]["seeds_run"] == "5" and records["dual_net"]["missing"] == "0"
    assert records["act_continue"]["seeds_stop"] == "decided"


def test_plots_are_titled_labelled_and_explain_the_seed_band(store):
    uri, _, tmp_path = store
    suite = load_suite("smoke")
    parent, rows, series = collect(suite, Tracker(uri))
    figures = grid_figures(suite, Execution.of(parent), rows, series, tmp_path)
    path, figure = figures["step"]
    assert path.read_bytes().startswith(b"\x89PNG")
    title = figure._suptitle.get_text()
    assert suite.title in title and "task tiny_sudoku" in title and "scale smoke" in title
    exact, token = figure.axes
    assert (exact.get_ylabel(), exact.get_xlabel()) == ("exact accuracy (%)", "training step")
    assert token.get_ylabel() == "token accuracy (%)"
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert {"TRM (T=2, n=2)", "w/ 1-step gradient", BAND_NOTE} <= set(legend)
    # the token panel draws token accuracy: trm's seeds end at 95, 96, 97 → mean 96 (± shift)
    trm_token = next(line for line in token.get_lines() if line.get_label() == "TRM (T=2, n=2)")
    assert trm_token.get_ydata()[-1] == pytest.approx(96.0, abs=0.5)
    _, supervision = figures["supervision"]
    assert supervision.axes[0].get_xlabel() == "supervision step"
    assert supervision.axes[0].get_ylabel().startswith("exact accuracy")


def test_arms_at_the_same_value_stay_distinguishable(tmp_path):
    """Nine arms all at 0 %: every line has its own colour, dash and marker, and no two lines
    lie on each other."""
    curves = [
        Curve(f"arm {i}", [[(100, 0.0), (200, 0.0)], [(100, 0.0), (200, 0.0)]]) for i in range(9)
    ]
    figure = plot_panels([("exact accuracy", curves)], "title", "training step", tmp_path / "p.png")
    lines = figure.axes[0].get_lines()
    assert len(lines) == 9
    styles = {(line.get_color(), line.get_linestyle(), line.get_marker()) for line in lines}
    assert len(styles) == 9
    assert len({line.get_linestyle() for line in lines}) > 1
    assert len({line.get_marker() for line in lines}) == 9
    assert len({tuple(line.get_ydata()) for line in lines}) == 9
    assert max(abs(y) for line in lines for y in line.get_ydata()) < 2.0  # small shifts only
    assert "shifted" in figure.legends[0].get_title().get_text()


def main_store(tmp_path: Path) -> tuple[str, str]:
    uri, tracker, experiment, parent = start_execution(
        tmp_path, "main", {"trm.scale": "paper"}, {"seeds": 1}
    )
    logged = {
        "trm_att_sudoku": {"eval/exact_accuracy": 0.70, "eval/ARC/pass@2": 0.99},
        "trm_att_arc1": {"eval/exact_accuracy": 0.10, "eval/ARC/pass@2": 0.40},
    }
    for arm, metrics in logged.items():
        history = [(1, {**metrics, "eval/token_accuracy": 0.9})]
        add_trial(tracker, experiment, parent, f"{arm}/seed0", {"trm.arm": arm}, history)
    add_trial(tracker, experiment, parent, "hrm_arc1/seed0", {"trm.arm": "hrm_arc1"}, [], "FAILED")
    tracker.finish(parent)
    return uri, parent


def test_main_suite_is_pivoted_by_method_and_task_with_each_tasks_metric(fresh):
    tmp_path = fresh
    """Tables 4–5: one row per method, paper | ours per task; ARC reads pass@2 (logged by
    MLflow's rules as ARC/pass_2), the other tasks exact accuracy."""
    uri, _ = main_store(tmp_path)
    markdown = report("main", uri, out=tmp_path / "reports")
    assert (
        "tasks sudoku (exact accuracy), maze (exact accuracy), arc1 (pass@2), arc2 (pass@2), "
        "scale paper" in markdown.splitlines()[0]
    )
    header = next(line for line in markdown.splitlines() if line.startswith("| method"))
    assert header.split(" | ")[1:3] == ["sudoku paper", "sudoku ours"]
    rows = {k: v for k, v in table_cells(markdown).items() if k != "method"}
    assert list(rows) == ["TRM-Att", "HRM", "TRM-MLP"]
    att, hrm = rows["TRM-Att"], rows["HRM"]
    assert att[0:2] == ["74.7", "70.0 (n=1)"]  # Sudoku: exact accuracy
    assert att[4:6] == ["44.6", "40.0 (n=1)"]  # ARC-AGI-1: pass@2, not exact accuracy
    assert att[2:4] == ["85.3", "missing [1 missing]"]  # Maze: not run, shown as such
    assert hrm[4:6] == ["40.3", "failed [1 failed]"]


def test_arc_arms_are_plotted_as_pass_at_2(fresh):
    tmp_path = fresh
    uri, _ = main_store(tmp_path)
    suite = load_suite("main")
    parent, rows, series = collect(suite, Tracker(uri))
    _, figure = grid_figures(suite, Execution.of(parent), rows, series, tmp_path)["step"]
    by_label = {axis.get_ylabel(): axis for axis in figure.axes}
    assert set(by_label) == {"exact accuracy (%)", "pass@2 (%)", "token accuracy (%)"}
    arc = by_label["pass@2 (%)"]
    plotted = {line.get_label(): line.get_ydata()[-1] for line in arc.get_lines()}
    assert plotted["TRM-Att · arc1"] == pytest.approx(40.0, abs=2)  # pass@2, not exact (10 %)
    assert "TRM-Att · sudoku" not in plotted


def search_store(tmp_path: Path) -> tuple[str, str]:
    """A search_lr execution: trials tagged with their sampled values, one stopped early by
    ASHA, one failed, one from before the values were tagged (read from its params)."""
    uri, tracker, experiment, parent = start_execution(
        tmp_path,
        "search_lr",
        {
            "trm.scale": "smoke",
            "trm.overrides": json.dumps(
                ["suite=search_lr", "scale=smoke", "model.hidden=16", "seeds=1"]
            ),
        },
        {"seeds": 1, "arms": ["trm"], "scale": {"steps": 20}},
    )
    trials = {  # trial id: (values, [(step, exact)], status)
        "a_00000": ({"train.lr": 0.0012, "train.weight_decay": 0.1, "model.T": 3, "model.n": 2},
                    [(10, 0.5), (20, 0.8)], "FINISHED"),
        "a_00001": ({"train.lr": 0.0005, "train.weight_decay": 0.5, "model.T": 1, "model.n": 1},
                    [(10, 0.3)], "KILLED"),
        "a_00002": ({"train.lr": 0.002, "train.weight_decay": 0.05, "model.T": 2, "model.n": 4},
                    [(10, 0.4), (20, 0.6)], "FINISHED"),
        "a_00003": ({"train.lr": 0.0001, "train.weight_decay": 0.9, "model.T": 2, "model.n": 3},
                    [], "FAILED"),
    }  # fmt: skip
    for trial, (values, points, status) in trials.items():
        history = [
            (step, {"eval/exact_accuracy": v, "eval/token_accuracy": 0.5 + v / 2, "step": step})
            for step, v in points
        ]
        tags = {"trm.arm": "trm", "trm.seed": "0", "trm.trial_id": trial}
        tags["trm.search_values"] = json.dumps(values)
        add_trial(
            tracker, experiment, parent, f"trm/{trial}", tags, history, status,
            params={"budget": {"steps": 20}},
        )  # fmt: skip
    legacy = {"train": {"lr": 0.003, "weight_decay": 0.2}, "model": {"T": 1, "n": 5}}
    add_trial(
        tracker, experiment, parent, "trm/a_00004",
        {"trm.arm": "trm", "trm.seed": "0", "trm.trial": "a_00004"},
        [(20, {"eval/exact_accuracy": 0.55, "step": 20})], params=legacy,
    )  # fmt: skip
    tracker.finish(parent)
    return uri, parent


def test_search_report_ranks_trials_and_gives_the_rerun_command(fresh):
    tmp_path = fresh
    uri, parent = search_store(tmp_path)
    markdown = report("search_lr", uri, out=tmp_path / "reports")
    lines = markdown.splitlines()
    assert "6 trials" not in lines[0] and "5 trials ranked by exact accuracy" in lines[0]
    assert "scale smoke, overrides: model.hidden=16, seeds=1 (not comparable" in lines[0]
    header = next(line for line in lines if line.startswith("| rank"))
    assert header == (
        "| rank | trial | train.lr | train.weight_decay | model.T | model.n | exact accuracy "
        "| token acc | steps | status |"
    )
    rows = table_cells(markdown)
    ranked = [(cells[0], cells[-1]) for rank, cells in rows.items() if rank != "rank"]
    assert ranked == [
        ("a_00000", "finished"),
        ("a_00002", "finished"),
        ("a_00004", "finished"),
        ("a_00001", "stopped early (step 10 of 20)"),
        ("a_00003", "failed"),
    ]
    assert rows["1"][1:] == ["0.0012", "0.1", "3", "2", "80.0", "90.0", "20", "finished"]
    assert rows["3"][1:5] == ["0.003", "0.2", "1", "5"]  # values read from the run's params
    assert "Best: trial a_00000 (train.lr=0.0012, train.weight_decay=0.1, model.T=3" in markdown
    assert (
        "`python -m orchestration.ablate suite=search_lr scale=smoke model.hidden=16 "
        "'search_values={train.lr: 0.0012, train.weight_decay: 0.1, model.T: 3, model.n: 2}' "
        "seeds=3`" in markdown
    )
    records = read_csv(tmp_path / "reports" / parent / "table.csv")
    assert [r["trial_id"] for r in records] == [
        "a_00000",
        "a_00002",
        "a_00004",
        "a_00001",
        "a_00003",
    ]
    assert float(records[0]["train.lr"]) == 0.0012 and float(records[0]["exact_accuracy"]) == 80
    assert (records[3]["steps"], records[3]["budget_steps"], records[3]["stopped_early"]) == (
        "10", "20", "1",
    )  # fmt: skip
    assert records[4]["exact_accuracy"] == "" and records[4]["status"] == "FAILED"
    summary = MlflowClient(uri).get_run(parent).data.metrics
    assert summary["summary/best/exact_accuracy"] == pytest.approx(80.0)
    assert summary["summary/a_00001/steps"] == 10
    page = (tmp_path / "reports" / parent / "table.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 1
    assert (tmp_path / "reports" / parent / "table.tex").exists()


def test_a_search_suite_rerun_at_chosen_values_is_reported_as_a_grid_of_seeds(fresh):
    """`ablate suite=search_lr search_values={...} seeds=3` tags its parent trm.kind=grid: the
    report is the baseline's row over seeds, not a ranking of one-seed trials."""
    uri, tracker, experiment, parent = start_execution(
        fresh, "search_lr", {"trm.scale": "smoke", "trm.kind": "grid"}, {"seeds": 2}
    )
    values = json.dumps({"train.lr": 0.0012, "model.T": 3})
    for seed, value in enumerate((0.6, 0.7)):
        tags = {"trm.arm": "trm", "trm.seed": str(seed), "trm.search_values": values}
        tags["trm.label"] = "TRM [search values]"
        history = [(20, {"eval/exact_accuracy": value, "eval/token_accuracy": 0.9})]
        add_trial(tracker, experiment, parent, f"trm/seed{seed}", tags, history)
    tracker.finish(parent)
    markdown = report("search_lr", uri, out=fresh / "reports")
    assert "| rank |" not in markdown and "Best:" not in markdown
    rows = table_cells(markdown)
    assert (
        rows["TRM [search values]"][1]
        == f"65.0 ± {T_975[1] * 5 * math.sqrt(2) / math.sqrt(2):.1f} (n=2)"
    )


def test_search_trials_that_tie_on_the_metric_are_ranked_by_token_accuracy():
    from orchestration.report import SearchTrial, rank_trials, search_notes

    def trial(ident: str, metric: float | None, token: float | None) -> SearchTrial:
        return SearchTrial(ident, {"train.lr": 0.001}, metric, token, 20, 20, "FINISHED")

    ranked = rank_trials([trial("a", 0.0, 18.0), trial("b", None, None), trial("c", 0.0, 22.0)])
    assert [t.trial_id for t in ranked] == ["c", "a", "b"]
    execution = Execution("r", "1", "search", "smoke", [], None, None, None, None, None)
    best = search_notes(load_suite("search_lr"), execution, ranked)[0]
    assert best.startswith("Best: trial c (train.lr=0.001): exact accuracy 0.0 % at step 20")
    assert "(2 trials tie on it: ranked by token accuracy)" in best


def test_search_plot_draws_one_curve_per_trial(fresh):
    tmp_path = fresh
    from orchestration.report import collect_search, search_figures

    uri, _ = search_store(tmp_path)
    suite = load_suite("search_lr")
    parent, trials = collect_search(suite, Tracker(uri))
    _, figure = search_figures(suite, Execution.of(parent), trials, tmp_path)["step"]
    exact, token = figure.axes
    assert exact.get_ylabel() == "exact accuracy (%)" and exact.get_xlabel() == "training step"
    assert token.get_ylabel() == "token accuracy (%)"
    assert [line.get_label() for line in exact.get_lines()] == [
        "#1 a_00000",
        "#2 a_00002",
        "#3 a_00004",
        "#4 a_00001",
    ]  # fmt: skip  (the failed trial has no curve)
    assert exact.get_lines()[0].get_ydata()[-1] == 80.0  # apart from the others: not shifted
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "#5 a_00003" not in legend and figure.legends[0].get_title().get_text() == ""


def test_report_says_where_to_look_and_logs_summary_metrics(store):
    uri, parent, tmp_path = store
    text = report("smoke", uri, out=tmp_path / "reports")
    experiment = MlflowClient(uri).get_experiment_by_name("trm-lab/smoke").experiment_id
    assert f"Report folder: {(tmp_path / 'reports' / parent).resolve()}" in text
    assert f"Parent run: {parent}" in text
    assert f"`mlflow ui --backend-store-uri {uri}`" in text
    assert f"/#/experiments/{experiment}/runs/{parent}" in text
    metrics = MlflowClient(uri).get_run(parent).data.metrics
    assert metrics["summary/trm/exact_accuracy_mean"] == pytest.approx(60.0)
    assert metrics["summary/trm/token_accuracy_mean"] == pytest.approx(96.0)
    assert metrics["summary/one_step_grad/n"] == 2
    assert metrics["summary/one_step_grad/exact_accuracy_ci_low"] < 42.5


def test_an_http_tracking_uri_is_where_the_ui_is_and_hides_a_password(tmp_path):
    execution = Execution("r1", "7", "grid", "smoke", [], None, None, None, None, None)
    text = where_to_look(tmp_path, execution, "http://me:secret@mlflow.example:5000/")
    assert "MLflow UI: http://me:***@mlflow.example:5000/#/experiments/7/runs/r1" in text
    assert "secret" not in text and "mlflow ui --backend" not in text


def test_help_prints_usage_and_exits_0(capsys):
    from orchestration.report import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("Turn a suite's MLflow runs")
    assert "usage: python -m orchestration.report suite=NAME" in out

"""`python -m orchestration.ablate` end to end with real components: a real local Ray, MLflow
(sqlite file, and a real `mlflow server` with S3 artifacts on the loopback moto server), the
smoke suite. Checked: one MLflow child run per trial with its tags, params, dataset input and
resolved config; a failing trial is retried and ends FAILED with its error; S3 and a tracking
server resume on a fresh machine; bad suites, arms and fields fail fast with clear errors and
launch nothing. Kills and other faults: test_ablate_faults.py (its helpers come from here)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

SMOKE = ["suite=smoke", "scale=smoke"]
REPO = Path(__file__).resolve().parents[2]


def ablate(cwd: Path, *overrides: str, env: dict | None = None, timeout: int = 600):
    return subprocess.run(
        [sys.executable, "-m", "orchestration.ablate", *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def start_driver(
    cwd: Path, command: list[str], env: dict | None = None, capture: bool = False
) -> subprocess.Popen:
    """`ablate` in the background, in its own process group (so kill_driver takes it all);
    `capture`: its stdout and stderr as text pipes (read them with communicate())."""
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "orchestration.ablate", *command],
        cwd=cwd,
        env=env,
        stdout=output,
        stderr=output,
        text=capture,
        start_new_session=True,
    )


def kill_driver(driver: subprocess.Popen, cwd: Path) -> None:
    """kill -9 of the driver and everything it started: its process group, then the Ray
    processes of its working directory's session folder that outlived it, each by PID (never
    `ray stop --force`, which would end every Ray of the machine)."""
    from orchestration.ray_session import end_processes, ray_temp_dir, session_processes

    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    end_processes(session_processes(ray_temp_dir(cwd)))


def runs(tracking_uri: str, suite: str = "smoke"):
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(f"trm-lab/{suite}")
    found = client.search_runs([experiment.experiment_id])
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in found if r.data.tags.get("trm.role") == "suite"]
    return client, children, parents


def compose(*overrides: str) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    import orchestration.ablate  # noqa: F401  (registers the field overrides)

    with initialize_config_module(config_module="orchestration.conf", version_base=None):
        return OmegaConf.to_container(
            hydra_compose("config", overrides=list(overrides)), resolve=True
        )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["suite=nope"], "unknown suite 'nope'; available suites: ["),
        (
            ["suite=smoke", "arms=[trm,bogus]"],
            "has no arm 'bogus'; its arms are ['trm', 'one_step_grad']",
        ),
        (["suite=smoke", "scale=smoke", "model.hidden=0"], "model.hidden=0 is not allowed"),
        (
            ["suite=smoke", "scale=smoke", "scale.gpus_per_trial=0.3"],
            "must be a whole number or one",
        ),
    ],
)
def test_bad_plans_are_refused_before_anything_runs(tmp_path, overrides, message):
    from orchestration.ablate import plan

    with pytest.raises(ValueError) as err:
        plan(compose(*overrides), tmp_path)
    assert message in str(err.value)
    assert not (tmp_path / ".trm" / "ray_results").exists()


def test_plan_orders_trials_longest_first_and_takes_seeds_from_the_scale(tmp_path):
    from orchestration.ablate import plan
    from trm_core.flops import supervision_step_flops

    planned = plan(compose("suite=paper", "scale=mini", "scale.seeds=2"), tmp_path)
    specs = planned["specs"]
    assert len(specs) == 9 * 2  # every Table 1 arm, the scale's seed count
    flops = [supervision_step_flops(s.model, training=True) for s in specs]
    assert flops == sorted(flops, reverse=True)
    assert {s.arm for s in specs[-2:]} == {"t2_n2"}  # the cheapest arm runs last
    assert planned["scale"]["seeds"] == 2
    assert len(plan(compose("suite=paper", "scale=mini", "seeds=1"), tmp_path)["specs"]) == 9


CONCEPT_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "conceptarc"
needs_conceptarc = pytest.mark.skipif(
    not CONCEPT_DIR.is_dir(), reason=f"ConceptARC tasks not found at {CONCEPT_DIR}"
)
MAIN_SMOKE = ["suite=main", "scale=smoke", "arms=[trm_att_sudoku,trm_att_arc1]", "seeds=1"]


@needs_conceptarc
def test_a_suite_over_several_tasks_builds_each_dataset_and_budget(tmp_path, monkeypatch):
    from orchestration.ablate import SuiteError, plan

    monkeypatch.setenv("TRM_CONCEPTARC_DIR", str(CONCEPT_DIR))
    planned = plan(compose(*MAIN_SMOKE), tmp_path)
    by_arm = {s.arm: s for s in planned["specs"]}
    assert set(planned["dataset_ids"]) == {"sudoku", "arc1"}
    sudoku, arc = by_arm["trm_att_sudoku"], by_arm["trm_att_arc1"]
    assert sudoku.dataset.id == planned["dataset_ids"]["sudoku"] != arc.dataset.id
    assert (sudoku.task, arc.task) == ("sudoku", "arc1")
    assert sudoku.model.seq_len == 81 and arc.model.seq_len == 900
    assert arc.model.num_puzzle_ids > 1 and arc.train.weight_decay == 0.1
    assert arc.tags["trm.task"] == "arc1"
    with pytest.raises(SuiteError, match="scale 'smoke' has no data settings for task 'maze'"):
        plan(compose("suite=main", "scale=smoke", "arms=[trm_att_maze]"), tmp_path)


def test_paper_scale_counts_steps_from_epochs_as_the_official_code():
    from orchestration.ablate import trial_budget

    scale = compose("suite=paper", "scale=paper")["scale"]
    sudoku = {"splits": {"train": {"groups": 1000, "puzzles": 1_001_000, "examples": 1_001_000}}}
    assert trial_budget(scale, "sudoku", sudoku, 768) == {
        "steps": 65104,  # TRM_SPEC §2.1: 50k epochs of 1000 groups at batch 768
        "eval_every": 6510,
        "eval_batch_size": 768,
    }
    arc = {"splits": {"train": {"groups": 960, "puzzles": 876_694, "examples": 3_630_000}}}
    assert trial_budget(scale, "arc1", arc, 768)["steps"] == int(1e5 * 960 * 3.63e6 / 876694 / 768)


def test_an_arm_with_its_own_budget_runs_it_and_says_so_in_its_label():
    """Table 1's HRM row is HRM's recipe, 20k epochs = 26,041 steps at batch 768 (TRM_SPEC §4),
    not TRM's 50k: the paper suite gives the arm budget fraction 0.4; at a step-based scale the
    fraction scales the steps and keeps the number of evaluations."""
    from orchestration.ablate import trial_budget
    from orchestration.suite import load_suite

    paper = load_suite("paper")
    assert paper.arm("hrm").budget_fraction == 0.4 and paper.arm("trm").budget_fraction == 1.0
    scale = compose("suite=paper", "scale=paper")["scale"]
    sudoku = {"splits": {"train": {"groups": 1000, "puzzles": 1_001_000, "examples": 1_001_000}}}
    assert trial_budget(scale, "sudoku", sudoku, 768, 0.4)["steps"] == 26041
    mini = compose("suite=paper", "scale=mini")["scale"]
    assert trial_budget(mini, "sudoku", sudoku, 32, 0.4) == {
        "steps": 224,  # 0.4 x 560
        "eval_every": 56,  # still 4 evaluations
        "eval_batch_size": mini["eval_batch_size"],
    }


def test_an_arm_budget_that_is_not_a_positive_fraction_is_refused(tmp_path):
    from orchestration.suite import load_suite

    text = (REPO / "ablations" / "smoke.yaml").read_text()
    for bad, message in [
        ("{fraction: 0}", "budget.fraction=0: give a number > 0"),
        ("{fraction: abc}", "budget.fraction='abc': give a number > 0"),
        ("{steps: 10}", "unknown key(s) ['steps']"),
    ]:
        (tmp_path / "smoke.yaml").write_text(
            text.replace("    axes: [model.grad]", f"    axes: [model.grad]\n    budget: {bad}", 1)
        )
        with pytest.raises(ValueError, match=re.escape(message)):
            load_suite("smoke", tmp_path)


def test_unknown_field_is_refused_by_the_command_line(tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match=r"model\.hiden"):
        compose("suite=smoke", "model.hiden=3")
    result = ablate(tmp_path, "suite=nope", timeout=180)
    assert result.returncode == 2
    assert "error: unknown suite 'nope'; available suites: [" in result.stderr
    assert not (tmp_path / ".trm").exists()


@pytest.mark.slow
def test_smoke_suite_logs_one_child_run_per_trial(tmp_path):
    result = ablate(tmp_path, *SMOKE, "seeds=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| trm | 0 | FINISHED |" in result.stdout
    assert "trm/seed0: step 20/20  exact " in result.stdout  # a progress line per evaluation
    assert "(2 of 2 ended)" in result.stdout and "started with configuration" not in result.stdout
    client, children, parents = runs(f"sqlite:///{tmp_path}/.trm/mlflow.db")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children) == ["one_step_grad/seed0", "trm/seed0"]
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        tags = run.data.tags
        assert tags["trm.suite"] == "smoke" and tags["trm.scale"] == "smoke"
        assert tags["trm.seed"] == "0" and len(tags["trm.dataset_id"]) == 32
        assert tags["axis.grad"] == ("one_step" if tags["trm.arm"] == "one_step_grad" else "full")
        assert run.data.params["model.hidden"] == "32"
        history = client.get_metric_history(run.info.run_id, "eval/exact_accuracy")
        assert [m.step for m in history] == [10, 20]
        assert "train/examples_per_s" in run.data.metrics
        assert "peak_memory_gib" in run.data.metrics
        assert run.inputs.dataset_inputs[0].dataset.digest == tags["trm.dataset_id"]
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
        assert "resolved_config.yaml" in artifacts
        assert not any("secret" in k.lower() for k in run.data.params)
    for run in [*children, *parents]:  # MLflow's own columns say which code and who
        assert len(run.data.tags["mlflow.source.git.commit"]) == 40
        assert run.data.tags["mlflow.user"] and run.data.tags["trm.code"]
    assert parents[0].data.tags["trm.command"].endswith("suite=smoke scale=smoke seeds=1")
    assert json.loads(parents[0].data.tags["trm.overrides"]) == [*SMOKE, "seeds=1"]


@pytest.mark.slow
def test_failing_trials_are_retried_and_end_failed_or_recover(tmp_path):
    result = ablate(
        tmp_path,
        *SMOKE,
        "seeds=1",
        "+inject_failure.trm=always",
        "+inject_failure.one_step_grad=first_attempt",
    )
    assert result.returncode == 1
    assert "| trm | 0 | FAILED |" in result.stdout
    assert "| one_step_grad | 0 | FINISHED |" in result.stdout
    _, children, parents = runs(f"sqlite:///{tmp_path}/.trm/mlflow.db")
    status = {r.info.run_name: r for r in children}
    assert sorted(status) == ["one_step_grad/seed0", "trm/seed0"]  # retries reuse their run
    assert status["trm/seed0"].info.status == "FAILED"
    assert "injected failure in trm/seed0" in status["trm/seed0"].data.tags["error"]
    assert status["one_step_grad/seed0"].info.status == "FINISHED"
    assert parents[0].info.status == "FAILED"


@pytest.mark.slow
def test_smoke_suite_on_s3_and_a_tracking_server_resumes_from_s3_on_a_fresh_machine(tmp_path):
    """storage=s3 tracking=server end to end, with the driver killed (-9) mid-suite and the
    same command run again from a fresh working directory (a RayJob retry on a new cluster):
    the dataset and the Tune experiment are found on S3, each trial keeps its one MLflow run."""

    from orchestration.stack import local_stack

    command = [
        *SMOKE, "arms=[trm]", "scale.steps=60", "scale.eval_every=10",
        "scale.max_concurrent_trials=1", "storage=s3", "tracking=server",
    ]  # fmt: skip
    with local_stack(tmp_path / "stack", bucket="trm") as stack:
        env = {**os.environ, **stack.env(), "TRM_RESULTS_URI": "s3://trm/ray_results"}
        s3 = boto3_client(stack.env())

        def keys() -> list[str]:
            return [
                o["Key"]
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket="trm")
                for o in page.get("Contents", [])
            ]

        first = tmp_path / "first"
        first.mkdir()
        driver = start_driver(first, command, env)
        deadline = time.time() + 300
        while time.time() < deadline and not (
            any("checkpoint_" in k for k in keys())
            and any("experiment_state-" in k for k in keys())
        ):
            time.sleep(1)
        assert any("checkpoint_" in k for k in keys()), "no checkpoint reached S3 before the kill"
        kill_driver(driver, first)
        shutil.rmtree(first)  # nothing local survives: a fresh machine

        second = tmp_path / "second"
        second.mkdir()
        result = ablate(second, *command, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "resuming" in result.stderr
        assert "stored as" not in result.stderr  # the dataset was found on S3, not rebuilt
        client, children, parents = runs(stack.tracking_uri)
        assert sorted(r.info.run_name for r in children) == ["trm/seed0", "trm/seed1"]
        assert all(r.info.status == "FINISHED" for r in children)
        assert [r.info.status for r in parents] == ["FINISHED"]
        for run in children:
            history = client.get_metric_history(run.info.run_id, "eval/exact_accuracy")
            assert [m.step for m in history][-1] == 60
        assert "resolved_config.yaml" in [
            a.path for a in client.list_artifacts(children[0].info.run_id)
        ]
        stored = keys()
        assert any(k.startswith("datasets/") and k.endswith("manifest.json") for k in stored)
        assert any(k.startswith("datasets/requests/") for k in stored)
        assert any(k.startswith("ray_results/") and "checkpoint_" in k for k in stored)
        assert any(k.startswith("mlflow/") and k.endswith("resolved_config.yaml") for k in stored)
        assert not (second / ".trm" / "ray_results").exists()  # nothing fell back to local


@pytest.mark.slow
@needs_conceptarc
def test_main_suite_runs_sudoku_and_arc_arms_and_reports_them_by_task(tmp_path):
    # ARC at smoke width is still 900 tokens (~2.5 s per CPU step): a few steps suffice here
    result = ablate(
        tmp_path,
        *MAIN_SMOKE,
        "scale.steps=4",
        "scale.eval_every=2",
        env={"TRM_CONCEPTARC_DIR": str(CONCEPT_DIR)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| method | sudoku paper | sudoku ours |" in result.stdout
    _, children, _ = runs(f"sqlite:///{tmp_path}/.trm/mlflow.db", suite="main")
    by_arm = {r.data.tags["trm.arm"]: r for r in children}
    assert all(r.info.status == "FINISHED" for r in children)
    assert "eval/ARC/pass_2" in by_arm["trm_att_arc1"].data.metrics  # voting hook, logged
    assert by_arm["trm_att_arc1"].data.tags["trm.task"] == "arc1"
    assert "eval/ARC/pass_2" not in by_arm["trm_att_sudoku"].data.metrics


def boto3_client(env: dict):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


@pytest.mark.slow
def test_search_suite_samples_the_declared_space_with_optuna(tmp_path):
    result = ablate(tmp_path, "suite=search_lr", "scale=smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    _, children, parents = runs(f"sqlite:///{tmp_path}/.trm/mlflow.db", suite="search_lr")
    assert len(children) == 6 and parents[0].info.status == "FINISHED"
    assert all(r.info.status in ("FINISHED", "KILLED") for r in children)  # KILLED = ASHA stop
    lrs = {float(r.data.params["train.lr"]) for r in children}
    assert len(lrs) == 6 and all(1e-4 <= lr <= 3e-3 for lr in lrs)
    assert all(r.data.params["model.T"] in ("1", "2", "3") for r in children)
    assert len({r.data.tags["trm.trial"] for r in children}) == 6
    for run in children:  # tags say what the trial ran, not the baseline it was sampled around
        params, tags = run.data.params, run.data.tags
        assert tags["axis.T"] == params["model.T"] and tags["axis.n"] == params["model.n"]
        sampled = json.loads(tags["trm.search_values"])
        assert sampled["model.T"] == int(params["model.T"])
        assert sampled["train.lr"] == float(params["train.lr"])
        assert tags["trm.trial_id"] == tags["trm.trial"] and "train.lr=" in tags["trm.label"]
    assert "(6 of 6 ended)" in result.stdout and " of 1 ended" not in result.stdout
    assert "trm/seed0" not in result.stdout  # progress lines name the trial and its values


def test_trial_runs_left_open_are_closed_by_what_tune_saw_of_their_trials(tmp_path):
    """The suite's end closes every trial run still open, from Tune's result for its trial: a
    trial that trained its budget but whose actor Tune ended before it closed its run ends
    FINISHED, as does one ended KILLED when a dead driver's suite resumed while Tune had its
    final result; one a scheduler stopped early ends KILLED and says where; an errored one
    ends FAILED; a run with no result to go by ends KILLED with the reason."""
    from types import SimpleNamespace

    from orchestration.ablate import _close_trial_runs, plan
    from orchestration.tracking import INTERRUPTED_TAG, STOPPED_EARLY_TAG, Tracker
    from orchestration.trial_spec import Tracking

    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = tracker.experiment("trm-lab/smoke", str(tmp_path / "artifacts"))
    parent = tracker.start_run(experiment, "suite", {"trm.role": "suite"})
    (spec,) = plan(compose(*SMOKE, "arms=[trm]", "seeds=1"), tmp_path)["specs"]
    steps = spec.budget.steps
    results, runs_by_case = [], {}
    for case, reached, status, error in [
        ("stopped_after_last_report", steps, "RUNNING", None),
        ("finished_as_driver_died", steps, "KILLED", None),
        ("stopped_by_scheduler", steps // 2, "RUNNING", None),
        ("errored", steps // 2, "RUNNING", RuntimeError("boom")),
    ]:
        attached = spec.attach(f"exe-{case}", Tracking(tracker.uri, experiment, parent))
        run = tracker.start_run(
            experiment, case, {**attached.run_tags(), "mlflow.parentRunId": parent}
        )
        if status == "KILLED":
            tracker.client.set_tag(run, INTERRUPTED_TAG, "the suite's driver died")
            tracker.client.set_terminated(run, status="KILLED")
        runs_by_case[case] = run
        config = {"trial": attached.to_dict()}
        results.append(SimpleNamespace(config=config, metrics={"step": reached}, error=error))
    orphan = tracker.start_run(experiment, "orphan", {"mlflow.parentRunId": parent})

    _close_trial_runs(tracker, experiment, parent, results)
    got = {case: tracker.client.get_run(run) for case, run in runs_by_case.items()}
    assert got["stopped_after_last_report"].info.status == "FINISHED"
    assert got["finished_as_driver_died"].info.status == "FINISHED"
    assert INTERRUPTED_TAG not in got["finished_as_driver_died"].data.tags
    assert got["stopped_by_scheduler"].info.status == "KILLED"
    assert got["stopped_by_scheduler"].data.tags[STOPPED_EARLY_TAG] == f"at step {steps // 2}"
    assert got["errored"].info.status == "FAILED"
    orphaned = tracker.client.get_run(orphan)
    assert (
        orphaned.info.status == "KILLED"
        and "without closing" in (orphaned.data.tags[INTERRUPTED_TAG])
    )

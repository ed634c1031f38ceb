"""Re-score a suite's finished trials under evaluation protocols, without retraining.

usage: python -m orchestration.rescore suite=NAME [run=latest|PARENT_RUN_ID]
           [protocol=paper,deeper,...] [arms=a,b] [tracking_uri=URI] [device=auto|cpu|cuda]
           [address=RAY_ADDRESS] [force=false] [out=.trm/reports]

  suite=NAME        the suite whose execution is re-scored (ablations/NAME.yaml); required
  run=ID            the suite execution (its MLflow parent run); default: the latest
  protocol=A,B      protocols of ablations/protocols/ (file stems); default: those marked
                    `default: true` (paper, deeper, q_halt, voting)
  arms=A,B          only these arms (default: every arm that ran)
  tracking_uri=URI  default: $MLFLOW_TRACKING_URI, else sqlite:///.trm/mlflow.db
  device=auto       where the checkpoints are scored (auto: a GPU when the Ray task has one)
  address=ADDR      join this Ray cluster (default: start the embedded local Ray)
  force=false       true: score again what was already scored (a new run each)

Every evaluation checkpoint a trial kept (its run's `trm.checkpoint_dir`) is scored on the test
split and, where the dataset has one, the validation split, under each protocol, as one Ray task
per trial (1 CPU, or 1 GPU where the suite's scale ran on GPUs). Each (trial, protocol) becomes an
MLflow run nested under the trial's run: the protocol's fields as params and tags, the score of
every checkpoint as a metric history (`test/…`, `validation/…` by training step), and the three
selections (`final/…`, `best_validation/…`, `best_test/…` with the step chosen). A protocol
already scored for a trial is skipped (unless force=true), so a rerun after a crash only does
what is missing; runs are written only once their scores exist, so none is left RUNNING. At the
end it prints the protocol report (orchestration/protocol_report.py), also written beside the
suite's report. As a check on itself, the `paper` protocol's score of the final checkpoint must
equal the metric the trial logged at its last evaluation; a mismatch is printed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from orchestration.checkpoints import CHECKPOINT_DIR_TAG, evaluation_checkpoints, load_state
from orchestration.protocols import (
    ARC_TASKS,
    Protocol,
    answer_steps,
    scorer,
    select,
    selections,
)
from orchestration.tracking import Tracker, metric_name

ROLE = "rescore"
RESCORED_RUN_TAG = "trm.rescored_run"  # the trial's run a rescore run scores
EXECUTION_PARENT_TAG = "trm.rescored_execution"  # the suite execution's parent run
PROTOCOL_TAG = "trm.protocol"
PROTOCOL_DIGEST_TAG = "trm.protocol_digest"
CHECK_TOLERANCE = 1e-9  # the paper protocol's final score vs the trial's own logged metric


# --- in the Ray task: score one trial's checkpoints ------------------------------------------


def _transform_plan(protocols: list[Protocol], task: str, manifest: dict, trained: int):
    """[(transform or None, supervision steps to run)] and, per protocol, the indices into it
    of its transforms: a transform shared by protocols (the identity always is) runs once, for
    the most steps any of them needs."""
    from datasets.test_time import sample_transforms

    plan: list[list[Any]] = []
    index: dict[Any, int] = {}
    uses: dict[str, list[int]] = {}
    for protocol in protocols:
        samples = protocol.samples(task)
        transforms = (
            sample_transforms(task, manifest, samples, protocol.vote_seed)
            if samples > 1
            else [None]
        )
        uses[protocol.name] = []
        for transform in transforms:
            if transform is not None and transform.is_identity:
                transform = None  # the identity is the untransformed batch
            key = (
                None
                if transform is None
                else (
                    transform.positions.tobytes(),
                    transform.values.tobytes(),
                )
            )
            if key not in index:
                index[key] = len(plan)
                plan.append([transform, 0])
            plan[index[key]][1] = max(plan[index[key]][1], protocol.steps(trained))
            uses[protocol.name].append(index[key])
    return plan, uses


def protocol_answers(protocol: Protocol, predictions: list, uses: list[int], trained: int):
    """[(answer grid [B, L] in the original frame, confidence [B])] of one protocol, one per
    transform it votes over: the prediction at the step its halting rule picks, mapped back
    through the transform's inverse. `predictions`: (transform or None, Prediction) per entry of
    the transform plan."""
    import numpy as np

    answers = []
    for i in uses:
        transform, prediction = predictions[i]
        step = answer_steps(prediction.halts.numpy(), protocol.steps(trained), protocol.halting)
        rows = np.arange(prediction.tokens.shape[1])
        grid = prediction.tokens.numpy()[step, rows].astype(np.int64)
        if transform is not None:
            grid = transform.invert(grid)
        answers.append((grid, prediction.q_halt_prob.numpy()[step, rows]))
    return answers


def _score_checkpoint(trainer, trained, protocols, plan, uses, splits, scorers, batch_size):
    """Feed one checkpoint's answers on every split to every protocol's scorer."""
    from datasets.loader import eval_batches

    with trainer.evaluation_weights():
        for split, arrays in splits.items():
            for batch in eval_batches(arrays, batch_size):
                predictions = []
                for transform, steps in plan:
                    shown = batch
                    if transform is not None:
                        shown = {
                            **batch,
                            "inputs": transform.apply(batch["inputs"]),
                            "labels": transform.apply(batch["labels"]),
                        }
                    predictions.append((transform, trainer.predict(shown, steps)))
                for protocol in protocols:
                    answers = protocol_answers(protocol, predictions, uses[protocol.name], trained)
                    scorers[(protocol.name, split)].update(batch, answers)


def score_trial(job: dict[str, Any]) -> dict[str, Any]:
    """Every evaluation checkpoint of one trial under every protocol of `job` (a plain dict:
    this runs as a Ray task). Returns per protocol and split the (step, metrics) of each
    checkpoint, in step order."""
    import torch

    from datasets.format import read_manifest, read_split
    from datasets.store import DatasetStore
    from datasets.task import task as data_task
    from orchestration.trial import CHECKPOINT_FILE
    from trm_core import ModelConfig, TrainConfig, Trainer

    started = time.perf_counter()
    torch.set_num_threads(job["threads"])
    protocols = [Protocol(**p) for p in job["protocols"]]
    store = DatasetStore(job["dataset"]["store"], cache_dir=job["cache"])
    local = store.fetch(job["dataset"]["id"])
    manifest = read_manifest(local)
    task = manifest["task"]
    columns = data_task(task).eval_columns
    splits = {"test": read_split(local, "test", manifest, extras=columns)}
    if "validation" in manifest["splits"]:
        splits["validation"] = read_split(local, "validation", manifest, extras=columns)
    checkpoints = evaluation_checkpoints(job["checkpoint_dir"], CHECKPOINT_FILE)
    if not checkpoints:
        raise ValueError(
            f"run {job['run_id']}: no evaluation checkpoint in {job['checkpoint_dir']} (the "
            "trial's results storage); was it deleted, or is it on another machine's disk?"
        )
    from orchestration.checkpoints import filesystem_for

    filesystem, _ = filesystem_for(job["checkpoint_dir"])
    scores: dict[str, dict[str, list]] = {p.name: {s: [] for s in splits} for p in protocols}
    scorers: dict[tuple[str, str], Any] = {}
    plan = uses = None
    trained = None
    trainer = None
    for step, path in checkpoints:
        state = load_state(filesystem, path)["trainer"]
        if trainer is None:  # one model per trial: its checkpoints differ in weights only
            trainer = Trainer(
                ModelConfig.from_dict(state["model_config"]),
                TrainConfig.from_dict(state["train_config"]),
                device=job["device"],
            )
        trainer.load_weights(state)  # a slimmed old evaluation has no optimiser
        if plan is None:
            trained = trainer.model_config.halt_max_steps
            plan, uses = _transform_plan(protocols, task, manifest, trained)
        for protocol in protocols:
            for split in splits:
                key = (protocol.name, split)
                # ARC votes pooled over checkpoints (the official evaluator) keep their pool
                if not (task in ARC_TASKS and protocol.arc_votes == "pooled" and key in scorers):
                    scorers[key] = scorer(protocol, task, trained, manifest)
        _score_checkpoint(
            trainer, trained, protocols, plan, uses, splits, scorers, job["eval_batch_size"]
        )
        for (name, split), made in scorers.items():
            scores[name][split].append((step, made.compute()))
    return {
        "run_id": job["run_id"],
        "checkpoints": checkpoints,
        "scores": scores,
        "trained_supervision_steps": trained,
        "test_puzzles": int(splits["test"].num_examples),
        "seconds": time.perf_counter() - started,
        "device": str(trainer.device),
    }


# --- on the driver -----------------------------------------------------------------------------


def _trial_runs(tracker: Tracker, suite, run: str, arms: list[str] | None):
    """(parent run, the execution's finished trial runs, in arm then seed order)."""
    from orchestration.report import _execution_runs

    parent, children = _execution_runs(suite, tracker, run)
    if parent.data.tags.get("trm.kind") == "search":
        raise ValueError(
            f"execution {parent.info.run_id} is a search (one trial per sample); rescore compares "
            "arms over seeds: rerun the chosen values as a grid (`search_values={...} seeds=3`, "
            "the command the search's report prints) and rescore that execution"
        )
    order = {a.name: i for i, a in enumerate(suite.all_arms)}
    trials = [
        child
        for child in children
        if child.info.status == "FINISHED"
        and child.data.tags.get("trm.arm") in order
        and (not arms or child.data.tags["trm.arm"] in arms)
    ]
    trials.sort(key=lambda r: (order[r.data.tags["trm.arm"]], int(r.data.tags.get("trm.seed", 0))))
    return parent, trials


def _scored(tracker: Tracker, experiment_id: str, trial_run: str, protocol: Protocol) -> bool:
    found = tracker.client.search_runs(
        [experiment_id],
        f"tags.`{RESCORED_RUN_TAG}` = '{trial_run}' and "
        f"tags.`{PROTOCOL_DIGEST_TAG}` = '{protocol.digest}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return bool(found)


def _job(trial, protocols: list[Protocol], base: Path, device: str) -> dict[str, Any]:
    params, tags = trial.data.params, trial.data.tags
    if CHECKPOINT_DIR_TAG not in tags:
        raise ValueError(
            f"trial run {trial.info.run_id} ({trial.info.run_name}) has no {CHECKPOINT_DIR_TAG} "
            "tag: it ran before checkpoints were listed on runs (issue 12). Run the suite again "
            "(a new execution) to re-score it"
        )
    return {
        "run_id": trial.info.run_id,
        "checkpoint_dir": tags[CHECKPOINT_DIR_TAG],
        "dataset": {"id": params["dataset.id"], "store": params["dataset.store"]},
        "cache": str((base / ".trm" / "cache" / "datasets").resolve()),
        "eval_batch_size": int(params.get("budget.eval_batch_size", 256)),
        "protocols": [{"name": p.name, "label": p.label, **p.knobs()} for p in protocols],
        "threads": 1,
        "device": device,
    }


def _log(tracker, experiment_id, parent_id, trial, protocol: Protocol, result, suite, code):
    """One FINISHED run under the trial's run for one protocol's scores."""
    from orchestration.provenance import run_tags
    from orchestration.report import _parse
    from trm_core import ModelConfig
    from trm_core.flops import test_flops_per_puzzle, training_flops

    tags, params = trial.data.tags, trial.data.params
    task = tags.get("trm.task", suite.task)
    metric = suite.metric_for(task)
    scores = result["scores"][protocol.name]
    test = [(step, m[metric]) for step, m in scores["test"] if metric in m]
    validation = [(step, m[metric]) for step, m in scores.get("validation", []) if metric in m]
    chosen = selections(test, validation or None)
    model = ModelConfig.from_dict(
        {k[6:]: _parse(v) for k, v in params.items() if k.startswith("model.")}
    )
    trained = result["trained_supervision_steps"]
    steps, samples = protocol.steps(trained), protocol.samples(task)
    run_id = tracker.start_run(
        experiment_id,
        f"{trial.info.run_name} · {protocol.name}",
        {
            "mlflow.parentRunId": trial.info.run_id,
            "trm.role": ROLE,
            RESCORED_RUN_TAG: trial.info.run_id,
            EXECUTION_PARENT_TAG: parent_id,
            PROTOCOL_TAG: protocol.name,
            PROTOCOL_DIGEST_TAG: protocol.digest,
            "trm.protocol_label": protocol.label,
            "trm.arm": tags.get("trm.arm", ""),
            "trm.seed": tags.get("trm.seed", ""),
            "trm.label": tags.get("trm.label", ""),
            "trm.task": task,
            "trm.scale": tags.get("trm.scale", ""),
            "trm.dataset_id": params.get("dataset.id", ""),
            "trm.device": result["device"],
            **run_tags(code),
            "mlflow.source.name": "orchestration.rescore",
        },
        params={
            "protocol": {**protocol.knobs(), "name": protocol.name},
            "resolved": {"supervision_steps": steps, "samples": samples, "metric": metric},
            "checkpoints": ",".join(str(step) for step, _ in result["checkpoints"]),
            "selection": {
                "final": "the last evaluation's checkpoint",
                "best_validation": "highest validation score; ties: the later checkpoint"
                if validation
                else "no validation split in the dataset",
                "best_test": "highest test score (optimistic: chosen on the test split)",
            },
        },
    )
    for split, series in (("test", scores["test"]), ("validation", scores.get("validation", []))):
        for step, metrics in series:
            tracker.log_metrics(run_id, {f"{split}/{k}": v for k, v in metrics.items()}, step=step)
    summary: dict[str, float] = {}
    for name, picked in chosen.items():
        if picked is not None:
            summary[f"{name}/{metric}"] = picked[1]
            summary[f"{name}/step"] = float(picked[0])
    summary["test_flops_per_puzzle"] = test_flops_per_puzzle(model, steps, samples)
    summary["train_flops"] = training_flops(
        model, int(float(params["budget.steps"])), int(float(params["train.global_batch_size"]))
    )
    summary["test_puzzles"] = float(result["test_puzzles"])
    summary["rescore_seconds"] = result["seconds"]
    tracker.log_metrics(run_id, summary, step=0)
    tracker.log_text(
        run_id,
        json.dumps([{"step": s, "path": p} for s, p in result["checkpoints"]], indent=1),
        "checkpoints.json",
    )
    tracker.finish(run_id, "FINISHED")
    return chosen


def _check_against_training(trial, protocol: Protocol, chosen, metric: str) -> str | None:
    """The paper protocol's final score must be the trial's own last logged evaluation."""
    if protocol.knobs() != Protocol(name="", label="").knobs() or chosen["final"] is None:
        return None
    logged = trial.data.metrics.get(metric_name(f"eval/{metric}"))
    if logged is None or abs(logged - chosen["final"][1]) <= CHECK_TOLERANCE:
        return None
    return (
        f"warning: {trial.info.run_name}: protocol {protocol.name!r} scores the final checkpoint "
        f"{chosen['final'][1]:.6f}, the trial logged {logged:.6f}"
    )


def rescore(
    suite_name: str,
    tracking_uri: str,
    run: str = "latest",
    protocols: list[str] | None = None,
    arms: list[str] | None = None,
    device: str = "auto",
    address: str | None = None,
    force: bool = False,
    base: Path | None = None,
    out: Path | None = None,
) -> str:
    """Score, log, and return the protocol report (Markdown plus where to look)."""
    from orchestration.protocol_report import protocol_report
    from orchestration.suite import load_suite

    base = base or Path.cwd()
    suite = load_suite(suite_name)
    chosen = select(protocols)
    tracker = Tracker(tracking_uri)
    parent, trials = _trial_runs(tracker, suite, run, arms)
    if not trials:
        raise ValueError(
            f"execution {parent.info.run_id} of suite {suite_name!r} has no finished trial"
            + (f" of arms {arms}" if arms else "")
        )
    experiment_id = parent.info.experiment_id
    work = []
    for trial in trials:
        todo = [
            p for p in chosen if force or not _scored(tracker, experiment_id, trial.info.run_id, p)
        ]
        if todo:
            work.append((trial, todo))
    started = time.perf_counter()
    if work:
        _run_jobs(work, parent, suite, tracker, experiment_id, base, device, address)
    print(
        f"rescored {sum(len(t) for _, t in work)} (trial, protocol) pairs of {len(trials)} "
        f"trials in {time.perf_counter() - started:.1f} s "
        f"({len(trials) * len(chosen) - sum(len(t) for _, t in work)} already scored)",
        file=sys.stderr,
    )
    return protocol_report(
        suite,
        tracker,
        parent.info.run_id,
        [p.name for p in chosen],
        out or base / ".trm" / "reports",
    )


def _run_jobs(work, parent, suite, tracker, experiment_id, base, device, address) -> None:
    import ray

    from orchestration.ablate import _start_ray
    from orchestration.provenance import code_identity

    code = code_identity()
    share = parent.data.params.get("scale.gpus_per_trial", "0")
    scale_has_gpus = share == "auto" or float(share or 0) > 0
    _start_ray({"address": address, "num_cpus": None}, base)
    gpus = 1 if scale_has_gpus and ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=1)(score_trial)
    pending = {task.remote(_job(trial, todo, base, device)): (trial, todo) for trial, todo in work}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        trial, todo = pending.pop(done[0])
        result = ray.get(done[0])
        for protocol in todo:
            picked = _log(
                tracker, experiment_id, parent.info.run_id, trial, protocol, result, suite, code
            )
            warning = _check_against_training(
                trial,
                protocol,
                picked,
                suite.metric_for(trial.data.tags.get("trm.task", suite.task)),
            )
            if warning:
                print(warning, file=sys.stderr)
        print(
            f"{trial.info.run_name}: {len(result['checkpoints'])} checkpoints x "
            f"{len(todo)} protocols in {result['seconds']:.1f} s",
            flush=True,
        )


def _list(value: str) -> list[str]:
    return [v for v in value.strip("[]").replace(" ", "").split(",") if v]


def main(argv: list[str] | None = None) -> None:
    from orchestration.cli import fail, key_values, tracking_uri

    options: dict[str, Any] = {
        "suite": None, "run": "latest", "protocol": None, "arms": None, "tracking_uri": None,
        "device": "auto", "address": None, "force": "false", "out": None,
    }  # fmt: skip
    options = key_values(argv, options, __doc__)
    if options["force"] not in ("true", "false"):
        fail(f"force={options['force']!r}: give true or false")
    try:
        print(
            rescore(
                options["suite"],
                tracking_uri(options["tracking_uri"]),
                options["run"],
                _list(options["protocol"]) if options["protocol"] else None,
                _list(options["arms"]) if options["arms"] else None,
                options["device"],
                options["address"],
                options["force"] == "true",
                out=Path(options["out"]) if options["out"] else None,
            )
        )
    except ValueError as err:
        fail(str(err))


if __name__ == "__main__":
    main()

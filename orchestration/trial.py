"""One Ray Tune trial = one (arm, seed): fetch and verify the dataset, train with the Trainer,
log to the trial's MLflow child run, and report metrics plus a full-state checkpoint at every
evaluation. A restarted trial (retry after an error, or the suite resumed after the driver died)
loads its last checkpoint and continues its own MLflow run. The trial depends only on the spec it
is given (orchestration/trial_spec.py: no Hydra state; paths in it are absolute or URIs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import resource
import signal
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import yaml
from ray import tune

from datasets.loader import TrainBatches, eval_batches
from orchestration.checkpoints import (
    CHECKPOINT_DIR_TAG,
    bound_trial_storage,
    trial_storage_uri,
)
from orchestration.preemption import PreemptionCheckpoints, training, write_to_trial_storage
from orchestration.suite import describe_values
from orchestration.tasks import open_trial_data, trial_trainer
from orchestration.tracking import STOPPED_EARLY_TAG, Tracker, axis_tags
from orchestration.trial_spec import TrialSpec, TrialSpecError
from trm_core import Trainer, TrainerCallback

CHECKPOINT_FILE = "state.pt"
POOLED_TAG = "trm.eval_votes"  # says that a task's votes (ARC) pool over the run's evaluations


def apply_search(spec: TrialSpec, values: dict[str, Any], trial_id: str) -> TrialSpec:
    """The spec with a search sample's values (`train__lr` → train.lr) written in, and its
    tags and label saying what this trial runs (not the baseline it was sampled around)."""
    changes: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    sampled = {}
    for key, value in values.items():
        group, _, name = key.partition("__")
        changes[group][name] = sampled[f"{group}.{name}"] = (
            value.item() if hasattr(value, "item") else value
        )
    model = spec.model.replace(**changes["model"])  # a sample must be valid
    train = spec.train.replace(**changes["train"])
    label = f"{spec.label} [{describe_values(sampled)}]"
    return dataclasses.replace(
        spec,
        model=model,
        train=train,
        label=label,
        search_trial=trial_id,
        tags={
            **spec.tags,
            **axis_tags(dataclasses.asdict(model), dataclasses.asdict(train)),
            "trm.label": label,
            "trm.search_values": json.dumps(sampled, sort_keys=True),
            "trm.trial_id": trial_id,
        },
    )


def _reset_peak_memory(device: torch.device) -> None:
    """Start the trial's peak-memory window: an actor reused for several trials would otherwise
    report its lifetime peak, which only grows in trial order."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with contextlib.suppress(OSError):  # Linux: "5" resets the peak resident set (VmHWM)
            Path("/proc/self/clear_refs").write_text("5")


def _peak_memory_gib(device: torch.device) -> float:
    """Peak since `_reset_peak_memory`: allocated CUDA memory, or the process's VmHWM."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # not per trial


def kill_this_process() -> None:
    """Fault injection ("killed_after_log"): the process ends as a lost node's would."""
    os.kill(os.getpid(), signal.SIGKILL)


class TunePublisher:
    """Where a trial trained in its own Tune actor puts its evaluations and checkpoints: each
    evaluation's state goes to Tune with the report (Tune numbers and uploads the folder);
    a checkpoint between evaluations goes straight into the trial's folder (preemption.py)."""

    rank = 0

    def __init__(self, full_checkpoints: int | None):
        self.full_checkpoints = full_checkpoints
        self.trial_uri = trial_storage_uri()

    def evaluation(self, report: dict[str, float], state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as directory:
            torch.save(state, Path(directory) / CHECKPOINT_FILE)
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(directory))
        if self.full_checkpoints:
            bound_trial_storage(self.full_checkpoints, CHECKPOINT_FILE)

    def between(self, state: dict[str, Any]) -> str:
        return write_to_trial_storage(state, CHECKPOINT_FILE)


class EvaluationReports(TrainerCallback):
    """At every evaluation: the metrics to MLflow (rank 0 only) and, with the trial's full
    state, to the publisher (TunePublisher, or workers.WorkerGroupPublisher on every rank of a
    worker group: building the state is a collective there)."""

    def __init__(
        self,
        tracker: Tracker,
        run_id: str,
        loader: TrainBatches,
        progress: dict[str, int],
        publisher,
        after_log=None,  # fault injection (tests): called after an evaluation is logged
        pooled: list | None = None,  # evaluation hooks whose state the checkpoint carries
    ):
        self.pooled = pooled or []
        self.publisher = publisher
        self.after_log = after_log
        self.tracker, self.run_id, self.loader = tracker, run_id, loader
        self.progress = progress  # the last step reported, read when Tune stops the trial
        # steps an earlier attempt of this trial logged already (deterministic resume: the
        # values would be the same): logging them again would duplicate them in the history
        self.logged_through = tracker.last_step(run_id) if publisher.rank == 0 else 0
        self.started = time.perf_counter()
        self.window_examples, self.window_seconds = 0, 0.0
        self.last_train: dict[str, float] = {}

    def on_train_step(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.window_examples += trainer.train_config.global_batch_size
        self.window_seconds += metrics["step_time_s"]
        self.last_train = metrics

    def on_evaluate(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        report = {f"eval/{k}": v for k, v in metrics.items()}
        report.update(
            {
                f"train/{k}": self.last_train[k]
                for k in ("loss", "lm_loss", "exact_accuracy", "token_accuracy", "halt_step", "lr")
                if k in self.last_train
            }
        )
        report["train/examples_per_s"] = self.window_examples / max(self.window_seconds, 1e-9)
        report["wall_time_s"] = time.perf_counter() - self.started
        report["peak_memory_gib"] = _peak_memory_gib(trainer.device)
        report["step"] = float(trainer.step)
        self.window_examples, self.window_seconds = 0, 0.0
        self.progress["step"] = trainer.step
        if self.publisher.rank == 0 and trainer.step > self.logged_through:
            self.tracker.log_metrics(self.run_id, report, step=trainer.step)
        if self.after_log:
            self.after_log()
        self.publisher.evaluation(report, self.state(trainer, report))

    def state(self, trainer: Trainer, report: dict[str, float] | None = None) -> dict[str, Any]:
        """What a checkpoint holds: everything an exact resume needs, and the run it logs to."""
        return {
            "trainer": trainer.state_dict(),
            "loader": self.loader.state_dict(),
            "run_id": self.run_id,
            "report": report,  # an evaluation's, said again by an attempt with nothing left to do
            "pooled_hooks": [hook.state_dict() for hook in self.pooled],
        }

    def save_between_evaluations(self, trainer: Trainer) -> str:
        """A checkpoint Tune does not record (orchestration/preemption.py); its folder."""
        return self.publisher.between(self.state(trainer))


def run_trial(config: dict[str, Any]) -> None:
    """Tune function trainable; `config["trial"]` is the resolved trial spec's plain form."""
    spec = TrialSpec.from_dict(config["trial"])
    if spec.tracking is None or spec.execution is None:
        raise TrialSpecError("a trial spec handed to Tune needs its execution and tracking")
    if config.get("search"):
        spec = apply_search(spec, config["search"], tune.get_context().get_trial_id())
    torch.set_num_threads(spec.threads)
    tracker = Tracker(spec.tracking.uri)
    experiment_id = spec.tracking.experiment_id
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = torch.load(
                Path(directory) / CHECKPOINT_FILE, weights_only=False, map_location="cpu"
            )
    run_id = state["run_id"] if state else tracker.find_run(experiment_id, spec.run_tags())
    first_attempt = run_id is None
    if run_id:  # an earlier attempt's run: this attempt continues it, from its checkpoint or 0
        tracker.resume(run_id, from_step=state["trainer"]["step"] if state else 0)
    else:
        tags = {
            **spec.run_tags(),
            **spec.tags,
            "mlflow.parentRunId": spec.tracking.parent_run_id,
        }
        plain = spec.to_dict()
        run_id = tracker.start_run(
            experiment_id,
            spec.run_name,
            tags,
            params={name: plain[name] for name in ("model", "train", "budget", "dataset")},
        )
        tracker.log_dataset(run_id, spec.task, spec.dataset.id, spec.dataset.store, "training")
        tracker.log_text(run_id, yaml.safe_dump(plain, sort_keys=True), "resolved_config.yaml")
    progress = {"step": state["trainer"]["step"] if state else 0}
    try:
        # Fault injection, for the tests of retries: "first_attempt" or "always" raise;
        # "killed" ends the worker process (SIGKILL) at every attempt, before it can close its
        # run; "killed_after_log" ends it on its first attempt right after its first
        # evaluation was logged, before that evaluation's checkpoint exists.
        injected = spec.inject_failure
        if injected == "always" or (injected == "first_attempt" and first_attempt):
            raise RuntimeError(f"injected failure in {spec.run_name}")
        if injected == "killed":
            os.kill(os.getpid(), signal.SIGKILL)
        if state is not None and state["trainer"]["step"] >= spec.budget.steps and state["report"]:
            # restored from its final checkpoint (one Tune's saved state had not recorded): the
            # training is done; Tune (and a scheduler) still needs its last result
            tune.report(state["report"])
        elif spec.workers > 1:
            from orchestration.workers import train_on_workers

            train_on_workers(spec, run_id, first_attempt)
        else:
            after_log = None
            if injected == "killed_after_log" and first_attempt:
                after_log = kill_this_process
            _train(spec, tracker, run_id, state, progress, after_log)
    except SystemExit as stop:
        # Tune ends a trial its scheduler stops (ASHA) with SystemExit(0) inside tune.report.
        if stop.code not in (0, None):
            tracker.finish(run_id, "FAILED", error=f"SystemExit({stop.code})")
            raise
        if progress["step"] < spec.budget.steps:
            tracker.client.set_tag(run_id, STOPPED_EARLY_TAG, f"at step {progress['step']}")
            tracker.finish(run_id, "KILLED")
        else:
            tracker.finish(run_id, "FINISHED")
        raise
    except BaseException as err:
        tracker.finish(
            run_id, "FAILED", error=f"{type(err).__name__}: {err}\n" + traceback.format_exc()
        )
        raise
    tracker.finish(run_id, "FINISHED")


def _train(
    spec: TrialSpec,
    tracker: Tracker,
    run_id: str,
    state: dict[str, Any] | None,
    progress: dict[str, int],
    after_log=None,
) -> None:
    """The trial trained in this Tune actor (one worker)."""
    trainer = trial_trainer(spec)
    publisher = TunePublisher(spec.full_checkpoints)
    train_trial(spec, trainer, tracker, run_id, state, progress, publisher, after_log)


def train_trial(
    spec: TrialSpec,
    trainer: Trainer,
    tracker: Tracker,
    run_id: str,
    state: dict[str, Any] | None,
    progress: dict[str, int],
    publisher,
    after_log=None,
    agree=None,
) -> None:
    """Train `trainer` (fresh, or resumed from `state`) to the spec's budget, evaluating,
    logging and checkpointing through `publisher`: in the trial's own Tune actor, or on every
    rank of its worker group (orchestration/workers.py; `agree` keeps the ranks' checkpoint
    decisions in step)."""
    manifest, task, train, test = open_trial_data(spec.dataset)
    _reset_peak_memory(trainer.device)
    if publisher.rank == 0:
        tracker.client.set_tag(run_id, "trm.device", str(trainer.device))
        tracker.client.set_tag(run_id, "trm.workers", str(spec.workers))
        # where this attempt runs: the node, and the worker a preemption or a kill would end
        tracker.client.set_tag(run_id, "trm.worker", f"{socket.gethostname()}:{os.getpid()}")
        # where its evaluations' weights are kept, for orchestration.rescore
        tracker.client.set_tag(run_id, CHECKPOINT_DIR_TAG, publisher.trial_uri)
    loader = TrainBatches(train, trainer.train_config.global_batch_size, seed=spec.seed)
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        loader.load_state_dict(state["loader"])
    budget = spec.budget
    # Hooks that pool over evaluations (ARC's vote, as the official evaluator) live for the
    # whole trial and resume from the checkpoint; the others are fresh at every evaluation.
    pooled = [h for h in task.eval_hooks(manifest) if getattr(h, "pools_evaluations", False)]
    if pooled and publisher.rank == 0:
        tracker.client.set_tag(run_id, POOLED_TAG, "pooled over the run's evaluations")
    for hook, saved in zip(pooled, (state or {}).get("pooled_hooks") or [], strict=False):
        hook.load_state_dict(saved)

    def hooks() -> list:
        fresh = [h for h in task.eval_hooks(manifest) if not getattr(h, "pools_evaluations", False)]
        return pooled + fresh

    reporter = EvaluationReports(tracker, run_id, loader, progress, publisher, after_log, pooled)
    between = PreemptionCheckpoints(
        reporter.save_between_evaluations,
        spec.checkpoint_every_s,
        budget.eval_every,
        budget.steps,
        agree,
    )
    with training():  # SIGTERM from here on: checkpoint, then stop (Tune retries)
        trainer.fit(
            loader,
            budget.steps,
            eval_batches=lambda: eval_batches(test, budget.eval_batch_size),
            eval_every=budget.eval_every,
            hooks=hooks,
            callbacks=[reporter, between],  # the evaluation's checkpoint first
        )

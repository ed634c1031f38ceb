"""MLflow tracking through an explicit client (no global state, safe in Ray workers).

An experiment per suite; a parent run per suite execution; a child run per trial named
`<arm>/seed<k>` and tagged with suite, arm, seed, every axis, dataset id, git commit and scale.
Params are the flattened resolved config, logged once (MLflow params are immutable); a resumed
trial finds and continues its own run by tags. A failed trial's run ends FAILED with its error.
Values that look like credentials are never logged.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param

PARENT_TAG = "mlflow.parentRunId"
INTERRUPTED_TAG = "trm.interrupted"
ERROR_TAG = "error"
STOPPED_EARLY_TAG = "trm.stopped_early"
RESUMED_TAG = "trm.resumed_from_steps"  # "30,50": each restart of the trial, and from where
SECRET_PATTERN = re.compile(r"(secret|password|token|credential|access_key)", re.IGNORECASE)


def default_artifact_location(base: Path, tracking_uri: str) -> str | None:
    """Artifacts of the embedded sqlite store live under .trm/ too; a server stores its own."""
    if tracking_uri.startswith("sqlite:"):
        return (base / ".trm" / "mlartifacts").resolve().as_uri()
    return None


INVALID_METRIC_CHARACTERS = re.compile(r"[^A-Za-z0-9_\-./: ]")


def default_tracking_uri(base: Path) -> str:
    (base / ".trm").mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(base / '.trm' / 'mlflow.db').resolve()}"


def axis_tags(model: dict[str, Any], train: dict[str, Any]) -> dict[str, str]:
    """`axis.<field>` tags of what a trial runs (every model field, EMA), for MLflow filters."""
    tags = {f"axis.{k}": str(v) for k, v in model.items()}
    tags.update({"axis.ema": str(train["ema"]), "axis.ema_rate": str(train["ema_rate"])})
    return tags


def metric_name(name: str) -> str:
    """The MLflow name of a trainer metric: MLflow allows only letters, digits and `_-./: `, so
    `exact_accuracy/step=2` is logged as `exact_accuracy/step_2`, `ARC/pass@2` as `ARC/pass_2`."""
    return INVALID_METRIC_CHARACTERS.sub("_", name)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict → {"a.b": "value"}; keys that look like credentials are dropped."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if SECRET_PATTERN.search(name):
            continue
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:6000]
    return flat


# A tracking call that fails for a passing reason is retried here, with backoff, instead of
# failing the trial: a trial's retries are for training faults (issue 15). Passing reasons: a
# lock held past sqlite's busy wait, a server restarting, and two trials' first use of one
# dataset input (MLflow looks the dataset up, then inserts it: the loser of that race hits the
# unique key, and its retry finds the row). A retried call either succeeds or fails for good.
TRANSIENT = (
    "database is locked",
    "unique constraint failed",
    "connection",
    "temporarily unavailable",
    "timed out",
)
TRACKING_ATTEMPTS = int(os.environ.get("TRM_TRACKING_ATTEMPTS", "6"))


def _transient(err: Exception) -> bool:
    if isinstance(err, ConnectionError | TimeoutError):
        return True
    text = f"{type(err).__name__}: {err}".lower()
    return any(marker in text for marker in TRANSIENT)


class _RetryingClient:
    """MlflowClient with every call retried on transient errors (0.1 s, 0.2 s … backoff)."""

    def __init__(self, client: MlflowClient):
        self._client = client

    def __getattr__(self, name: str):
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            for attempt in range(TRACKING_ATTEMPTS):
                try:
                    return method(*args, **kwargs)
                except Exception as err:
                    if attempt == TRACKING_ATTEMPTS - 1 or not _transient(err):
                        raise
                    time.sleep(min(0.1 * 2**attempt, 5.0))
            raise AssertionError("unreachable")

        return call


def publish_sqlite_store(uri: str) -> None:
    """Create a missing sqlite MLflow store whole: its schema is built in a file of this
    process's own and published with a no-clobber link. Built in place, a store that two
    drivers created at once, or whose creator was killed mid-migration, was left broken."""
    if not uri.startswith("sqlite:///"):
        return
    target = Path(uri.removeprefix("sqlite:///"))
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.{time.time_ns()}.tmp")
    try:
        MlflowClient(tracking_uri=f"sqlite:///{staging}").search_experiments(max_results=1)
        with contextlib.suppress(FileExistsError):  # another process published first: theirs
            os.link(staging, target)
    finally:
        staging.unlink(missing_ok=True)


class Tracker:
    def __init__(self, uri: str):
        self.uri = uri
        publish_sqlite_store(uri)
        self.client = _RetryingClient(MlflowClient(tracking_uri=uri))

    def experiment(self, name: str, artifact_location: str | None = None) -> str:
        """The experiment's id, created on first use (`artifact_location` for file stores:
        otherwise MLflow puts artifacts in ./mlruns of whatever the working directory is)."""
        found = self.client.get_experiment_by_name(name)
        if found:
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=artifact_location)

    def find_run(self, experiment_id: str, tags: dict[str, str]) -> str | None:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([experiment_id], filter_string=query, max_results=1)
        return runs[0].info.run_id if runs else None

    def start_run(
        self,
        experiment_id: str,
        name: str,
        tags: dict[str, str],
        params: dict[str, Any] | None = None,
    ) -> str:
        run = self.client.create_run(experiment_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        if params:
            items = list(flatten(params).items())
            for start in range(0, len(items), 100):  # MLflow accepts 100 params per batch
                self.client.log_batch(
                    run_id, params=[Param(k, v) for k, v in items[start : start + 100]]
                )
        return run_id

    def resume(self, run_id: str, from_step: int | None = None) -> None:
        """Continue a run: RUNNING again, and the tags of how its last attempt ended gone.
        `from_step`: the step a restarted trial continues from (0: it starts afresh), added to
        RESUMED_TAG, so a run says how often and from where it was resumed."""
        self.client.update_run(run_id, status="RUNNING")
        tags = self.client.get_run(run_id).data.tags
        for stale in (INTERRUPTED_TAG, ERROR_TAG, STOPPED_EARLY_TAG):
            if stale in tags:
                self.client.delete_tag(run_id, stale)
        if from_step is not None:
            steps = [s for s in tags.get(RESUMED_TAG, "").split(",") if s]
            self.client.set_tag(run_id, RESUMED_TAG, ",".join([*steps, str(from_step)]))

    def end_running_children(
        self,
        experiment_id: str,
        parent_run_id: str,
        status: str,
        reason: str,
        failed_since_ms: int | None = None,
    ) -> int:
        """End the parent's children still RUNNING with `status`, tagged with `reason`: a trial
        whose process died (killed, out of memory, its driver gone) never closed its own run.
        `failed_since_ms`: also those that ended FAILED since then (a trial that failed because
        of the outage that stops the suite was not a training fault)."""
        query = f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
        runs = [
            run
            for run in self.client.search_runs([experiment_id], query)
            if run.info.status == "RUNNING"
            or (
                failed_since_ms is not None
                and run.info.status == "FAILED"
                and (run.info.end_time or 0) >= failed_since_ms
            )
        ]
        for run in runs:
            self.client.set_tag(run.info.run_id, INTERRUPTED_TAG, reason)
            self.client.set_terminated(run.info.run_id, status=status)
        return len(runs)

    def mark_interrupted(self, experiment_id: str, parent_run_id: str) -> int:
        """After a driver crash: end the children still RUNNING as KILLED, tagged. Trials Tune
        resumes flip back to RUNNING (see `resume`); the others were lost with the driver (a
        search may re-sample their configuration as a new trial) and must not stay RUNNING."""
        return self.end_running_children(
            experiment_id, parent_run_id, "KILLED", "the suite's driver died"
        )

    def last_step(self, run_id: str, metric: str = "step") -> int:
        """The highest step logged for `metric` (-1 if none): a resumed trial logs only beyond
        it, so a driver or worker restart never duplicates a step of the history."""
        history = self.client.get_metric_history(run_id, metric)
        return max((m.step for m in history), default=-1)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        clean = {metric_name(k): float(v) for k, v in metrics.items()}
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in clean.items()])

    def log_dataset(
        self, run_id: str, name: str, dataset_id: str, source: str, context: str
    ) -> None:
        dataset = Dataset(name=name, digest=dataset_id, source_type="trm-lab-store", source=source)
        self.client.log_inputs(
            run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])]
        )

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def finish(self, run_id: str, status: str = "FINISHED", error: str | None = None) -> None:
        if error:
            self.client.set_tag(run_id, ERROR_TAG, error[-4000:])
        self.client.set_terminated(run_id, status=status)

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

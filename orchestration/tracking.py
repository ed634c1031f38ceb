"""MLflow tracking through an explicit client (no global state, safe in Ray workers).

An experiment per suite; a parent run per suite execution; a child run per trial named
`<arm>/seed<k>` and tagged with suite, arm, seed, every axis, dataset id, git commit and scale.
Params are the flattened resolved config, logged once (MLflow params are immutable); a resumed
trial finds and continues its own run by tags. A failed trial's run ends FAILED with its error.
Values that look like credentials are never logged.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param

PARENT_TAG = "mlflow.parentRunId"
INTERRUPTED_TAG = "trm.interrupted"
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


class Tracker:
    def __init__(self, uri: str):
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)

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

    def resume(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")
        if INTERRUPTED_TAG in self.client.get_run(run_id).data.tags:
            self.client.delete_tag(run_id, INTERRUPTED_TAG)

    def mark_interrupted(self, experiment_id: str, parent_run_id: str) -> int:
        """After a driver crash: end the children still RUNNING as KILLED, tagged. Trials Tune
        resumes flip back to RUNNING (see `resume`); the others were lost with the driver (a
        search may re-sample their configuration as a new trial) and must not stay RUNNING."""
        runs = self.client.search_runs(
            [experiment_id],
            f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.status = 'RUNNING'",
        )
        for run in runs:
            self.client.set_tag(run.info.run_id, INTERRUPTED_TAG, "the suite's driver died")
            self.client.set_terminated(run.info.run_id, status="KILLED")
        return len(runs)

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
            self.client.set_tag(run_id, "error", error[-4000:])
        self.client.set_terminated(run_id, status=status)

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

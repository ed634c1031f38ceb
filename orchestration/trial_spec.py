"""The trial's contract: everything one Ray Tune trial (one arm, one seed) needs, as a type.

    spec = TrialSpec.from_dict(config["trial"])   # in the trial: validated, or a clear error
    param_space = {"trial": tune.grid_search([s.to_dict() for s in specs])}   # in the driver

`orchestration.ablate.plan` resolves a suite into TrialSpecs; the driver attaches where the trial
logs (`attach`) and hands Tune their plain-dict form, which Tune stores in the experiment's
state and gives back on every attempt and on resume. The dict is read back through `from_dict`,
which rejects a missing or unknown field, a wrong type and an invalid model or train config,
naming the field, so a spec written by other code (another version, a hand-edited state) fails
before any training starts instead of deep inside it. A spec holds plain values and absolute
paths or URIs only (no Hydra state): a trial may run on any node.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trm_core.config import ModelConfig, TrainConfig


class TrialSpecError(ValueError):
    """A dict that is not a valid trial spec; the message names the field and what is allowed."""


@dataclass(frozen=True)
class Budget:
    """How long the trial trains and how often it evaluates (orchestration.ablate.trial_budget)."""

    steps: int
    eval_every: int
    eval_batch_size: int


@dataclass(frozen=True)
class DatasetRef:
    """The trial's dataset: its content id, the store holding it (a folder or s3:// URI) and
    the node-local cache it is fetched and verified into (None: the store's default)."""

    id: str
    store: str
    cache: str | None


@dataclass(frozen=True)
class Tracking:
    """Where the trial's MLflow run lives: the server, the suite's experiment, its parent run."""

    uri: str
    experiment_id: str
    parent_run_id: str


@dataclass(frozen=True)
class TrialSpec:
    suite: str
    arm: str
    label: str  # the table row, as run (a fractional budget says so)
    seed: int
    task: str
    scale: str
    device: str  # "auto", "cpu", "cuda", ...
    threads: int  # torch threads: the scale's CPUs per trial
    model: ModelConfig
    train: TrainConfig  # its seed is the trial's
    budget: Budget
    dataset: DatasetRef
    tags: Mapping[str, str]  # the trial run's MLflow tags (identity, code, axes)
    # Data-parallel workers (a Ray Train worker group, orchestration/workers.py); the global
    # batch is split across them. 1: the trial trains in its own Tune actor.
    workers: int = 1
    # What does not change a result (left out of the execution's name by ablate.plan):
    gpus_per_worker: float = 0.0  # with workers > 1 (a single worker's GPUs are Tune's)
    inject_failure: str | None = None  # fault injection for the tests of retries
    checkpoint_every_s: float | None = None  # checkpoints between evaluations (preemption)
    full_checkpoints: int | None = None  # evaluations whose full state is kept
    # Set by the driver when it hands the spec to Tune, and by a search for its samples:
    execution: str | None = None
    tracking: Tracking | None = None
    search_trial: str | None = None  # a search sample's Tune trial id

    @property
    def run_name(self) -> str:
        return f"{self.arm}/" + (self.search_trial or f"seed{self.seed}")

    def run_tags(self) -> dict[str, str]:
        """Identity of the trial's run: what a resumed trial looks its run up by."""
        tags = {
            "trm.execution": self.execution or "",
            "trm.arm": self.arm,
            "trm.seed": str(self.seed),
        }
        if self.search_trial:  # search samples share arm and seed; the trial id separates them
            tags["trm.trial"] = self.search_trial
        return tags

    def attach(self, execution: str, tracking: Tracking) -> TrialSpec:
        return dataclasses.replace(self, execution=execution, tracking=tracking)

    def with_tags(self, **tags: str) -> TrialSpec:
        return dataclasses.replace(self, tags={**self.tags, **tags})

    def to_dict(self) -> dict[str, Any]:
        """The plain form Tune carries (JSON-able: str, int, float, bool, None, lists, dicts)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("model", "train", "budget", "dataset", "tracking"):
            value = out[name]
            out[name] = None if value is None else dataclasses.asdict(value)
        out["tags"] = dict(self.tags)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrialSpec:
        if isinstance(values, TrialSpec):
            return values
        if not isinstance(values, Mapping):
            raise TrialSpecError(f"a trial spec is a dict, not {type(values).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise TrialSpecError(f"unknown trial spec field(s) {unknown}; allowed: {names}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in values]
        if missing:
            raise TrialSpecError(f"trial spec is missing {missing}")
        given = dict(values)
        try:
            given["model"] = ModelConfig.from_dict(dict(_mapping(values, "model")))
            given["train"] = TrainConfig.from_dict(dict(_mapping(values, "train")))
        except (TypeError, ValueError) as err:
            raise TrialSpecError(f"trial spec: {err}") from None
        given["budget"] = _record(Budget, values, "budget")
        given["dataset"] = _record(DatasetRef, values, "dataset")
        if values.get("tracking") is not None:
            given["tracking"] = _record(Tracking, values, "tracking")
        tags = _mapping(values, "tags")
        bad = [k for k, v in tags.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise TrialSpecError(f"trial spec tags must map str to str; not so for {bad}")
        given["tags"] = dict(tags)
        spec = cls(**given)
        _check_scalars(spec)
        return spec

    def digest_form(self) -> dict[str, Any]:
        """The dict without what changes no result, nor where or who runs it (ablate.plan
        names executions by it): the same command from another working directory (a retried
        RayJob on a fresh cluster) must find the same execution."""
        out = self.to_dict()
        out["gpus_per_worker"] = 0.0  # the device (in `device`) may; its share does not
        out["checkpoint_every_s"] = None  # when to checkpoint changes no result
        out["full_checkpoints"] = None  # nor what is kept of old ones
        out["dataset"] = {**out["dataset"], "cache": None}
        out["tags"] = {k: v for k, v in self.tags.items() if k != "mlflow.user"}
        return out

    def __str__(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _mapping(values: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = values[name]
    if not isinstance(value, Mapping):
        raise TrialSpecError(f"trial spec field {name!r} must be a dict, not {value!r}")
    return value


def _record(kind: type, values: Mapping[str, Any], name: str):
    """One of the small records (Budget, DatasetRef, Tracking), field names and types checked."""
    given = _mapping(values, name)
    names = [f.name for f in dataclasses.fields(kind)]
    if sorted(given) != sorted(names):
        raise TrialSpecError(
            f"trial spec field {name!r} must have exactly the keys {names}, not {sorted(given)}"
        )
    record = kind(**given)
    for f in dataclasses.fields(kind):
        _check_type(f"{name}.{f.name}", getattr(record, f.name), f.type)
    return record


_TYPES = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "str | None": (str, type(None)),
    "int | None": (int, type(None)),
    "float | None": (int, float, type(None)),
}


def _check_type(where: str, value: Any, declared: Any) -> None:
    allowed = _TYPES.get(str(declared))
    if allowed is None:
        return
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise TrialSpecError(f"trial spec field {where!r} must be {declared}, not {value!r}")


def _check_scalars(spec: TrialSpec) -> None:
    for f in dataclasses.fields(spec):
        _check_type(f.name, getattr(spec, f.name), f.type)
    if spec.seed < 0 or spec.threads < 1 or spec.workers < 1 or spec.gpus_per_worker < 0:
        raise TrialSpecError(
            f"trial spec needs seed >= 0, threads >= 1, workers >= 1 and gpus_per_worker >= 0, "
            f"not {spec}"
        )
    if spec.train.global_batch_size % spec.workers:
        raise TrialSpecError(
            f"train.global_batch_size={spec.train.global_batch_size} does not split over "
            f"workers={spec.workers}"
        )
    if spec.train.seed != spec.seed:
        raise TrialSpecError(
            f"trial spec seed {spec.seed} differs from its train.seed {spec.train.seed}"
        )
    budget = spec.budget
    if budget.steps < 1 or budget.eval_every < 1 or budget.eval_batch_size < 1:
        raise TrialSpecError(f"trial spec budget must be positive integers, not {budget}")

"""Suites: a baseline, arms as named deltas, seeds and the paper's numbers (files in ablations/).

    from orchestration.suite import load_suite
    suite = load_suite("paper")
    model, train = suite.resolve("one_step_grad", task_shape, scale_model, scale_train)

An arm's `set` maps dotted fields (`model.T`, `train.ema`, `model.preset`, `train.preset`) to
values, applied on top of the baseline's `set`. Its `axes` must list every resolved field that
differs from the baseline: `validate` rejects an arm that changes something it did not declare
(for example a preset switch that silently changes more than the label says).
Resolution order for one trial: preset ← task shape ← scale ← explicit `set` fields ← CLI.
An arm may name its own `task` (the main results put the same methods on several datasets);
it is then compared with the baseline resolved on that task.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import ablations
from trm_core.config import ModelConfig, TrainConfig

SUITE_DIR = Path(ablations.__file__).resolve().parent
SUITE_KEYS = {
    "name",
    "title",
    "task",
    "kind",
    "seeds",
    "metric",
    "task_metrics",
    "baseline",
    "arms",
    "search",
}
ARM_KEYS = {"name", "label", "task", "set", "axes", "paper", "note"}
KINDS = ("grid", "search")
PRESET_KEYS = ("model.preset", "train.preset")
SEARCH_KEYS = {"num_samples", "seed", "space", "scheduler"}
DISTRIBUTIONS = {"loguniform": 2, "uniform": 2, "randint": 2, "choice": None}


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITE_DIR.glob("*.yaml"))


@dataclass(frozen=True)
class SuiteArm:
    name: str
    label: str
    set: dict[str, Any] = field(default_factory=dict)
    axes: tuple[str, ...] = ()
    paper: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    task: str | None = None  # None: the suite's task (Tables 4–5 put arms on several tasks)


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    task: str
    kind: str
    seeds: int
    metric: str
    baseline: SuiteArm
    arms: tuple[SuiteArm, ...]
    search: dict[str, Any] | None = None
    path: Path | None = None
    task_metrics: dict[str, str] = field(default_factory=dict)  # e.g. ARC scores pass@2

    def metric_for(self, task: str) -> str:
        """The evaluation metric (trainer name) the suite reports for `task`."""
        return self.task_metrics.get(task, self.metric)

    @property
    def all_arms(self) -> tuple[SuiteArm, ...]:
        return (self.baseline, *self.arms)

    def task_of(self, arm: SuiteArm | str) -> str:
        arm = self.arm(arm) if isinstance(arm, str) else arm
        return arm.task or self.task

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every task the suite's arms run on, the suite's own first."""
        return tuple(dict.fromkeys([self.task, *(self.task_of(a) for a in self.all_arms)]))

    def arm(self, name: str) -> SuiteArm:
        for arm in self.all_arms:
            if arm.name == name:
                return arm
        raise ValueError(
            f"suite {self.name!r} has no arm {name!r}; its arms are "
            f"{[a.name for a in self.all_arms]}"
        )

    def settings(self, arm: SuiteArm) -> dict[str, Any]:
        """The arm's `set` merged over the baseline's."""
        return {**self.baseline.set, **arm.set} if arm is not self.baseline else dict(arm.set)

    def resolve(
        self,
        arm_name: str,
        task_shape: dict[str, Any],
        scale_model: dict[str, Any],
        scale_train: dict[str, Any],
        cli_model: dict[str, Any] | None = None,
        cli_train: dict[str, Any] | None = None,
    ) -> tuple[ModelConfig, TrainConfig]:
        settings = self.settings(self.arm(arm_name))
        explicit = {"model": {}, "train": {}}
        for key, value in settings.items():
            if key in PRESET_KEYS:
                continue
            group, _, name = key.partition(".")
            explicit[group][name] = value
        model = ModelConfig.from_preset(
            settings.get("model.preset", "trm_mlp"),
            **{**task_shape, **scale_model, **explicit["model"], **(cli_model or {})},
        )
        train = TrainConfig.from_preset(
            settings.get("train.preset", "trm_sudoku"),
            **{**scale_train, **explicit["train"], **(cli_train or {})},
        )
        return model, train

    def validate(
        self,
        task_shapes: dict[str, dict[str, Any]],
        scale_model: dict[str, Any],
        scale_train: dict[str, Any],
    ) -> None:
        """Every arm on a task of `task_shapes` resolves to valid configs and changes only the
        axes it declares. An arm is compared with the baseline resolved on the arm's own task,
        so the fields the data fixes (vocabulary, length, puzzle ids) never count as changes."""
        bases: dict[str, dict[str, Any]] = {}  # task → the baseline resolved on it
        for arm in self.arms:
            task = self.task_of(arm)
            if task not in task_shapes:
                continue  # its data is not built in this run (e.g. `arms=[...]` skips the task)
            shape = task_shapes[task]
            if task not in bases:
                bases[task] = _flat(
                    *self.resolve(self.baseline.name, shape, scale_model, scale_train)
                )
            base = bases[task]
            try:
                model, train = self.resolve(arm.name, shape, scale_model, scale_train)
            except ValueError as err:
                raise ValueError(f"suite {self.name!r}, arm {arm.name!r}: {err}") from None
            changed = {k for k, v in _flat(model, train).items() if base[k] != v}
            undeclared = sorted(changed - set(arm.axes))
            if undeclared:
                raise ValueError(
                    f"suite {self.name!r}, arm {arm.name!r} changes {undeclared} without declaring "
                    f"them in `axes` (declared: {list(arm.axes)}); declare them or narrow `set`"
                )


def _flat(model: ModelConfig, train: TrainConfig) -> dict[str, Any]:
    flat = {f"model.{k}": v for k, v in dataclasses.asdict(model).items()}
    flat.update({f"train.{k}": v for k, v in dataclasses.asdict(train).items() if k != "seed"})
    return flat


def _check_keys(where: str, values: dict[str, Any], allowed: set[str], required: set[str]) -> None:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(values))
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")


def _arm(where: str, raw: Any) -> SuiteArm:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: an arm is a mapping with {sorted(ARM_KEYS)}")
    _check_keys(where, raw, ARM_KEYS, {"name", "label"})
    settings = dict(raw.get("set") or {})
    model_fields = {f"model.{f.name}" for f in dataclasses.fields(ModelConfig)}
    train_fields = {f"train.{f.name}" for f in dataclasses.fields(TrainConfig)} - {"train.seed"}
    for key in settings:
        if key not in model_fields | train_fields | set(PRESET_KEYS):
            raise ValueError(
                f"{where}: `set` key {key!r} is not a field; use model.<field>, "
                f"train.<field>, model.preset or train.preset (model fields: "
                f"{sorted(k[6:] for k in model_fields)})"
            )
    for axis in raw.get("axes") or ():
        if axis not in model_fields | train_fields:
            raise ValueError(f"{where}: axis {axis!r} is not a model.* or train.* field")
    return SuiteArm(
        name=str(raw["name"]),
        label=str(raw["label"]),
        set=settings,
        axes=tuple(raw.get("axes") or ()),
        paper=dict(raw.get("paper") or {}),
        note=raw.get("note"),
        task=str(raw["task"]) if raw.get("task") else None,
    )


def _search(where: str, raw: Any) -> dict[str, Any]:
    """A search block: Optuna samples `space` (dotted fields → one distribution each) for
    `num_samples` trials, seeded; `scheduler.asha` stops weak trials early (in evaluations)."""
    if not isinstance(raw, dict):
        raise ValueError(
            f"{where}: a search suite needs a `search` mapping with {sorted(SEARCH_KEYS)}"
        )
    _check_keys(f"{where} search", raw, SEARCH_KEYS, {"num_samples", "space"})
    fields = {f"model.{f.name}" for f in dataclasses.fields(ModelConfig)}
    fields |= {f"train.{f.name}" for f in dataclasses.fields(TrainConfig)} - {"train.seed"}
    for key, spec in raw["space"].items():
        if key not in fields:
            raise ValueError(f"{where} search.space: {key!r} is not a model.* or train.* field")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise ValueError(
                f"{where} search.space.{key}: give one of {sorted(DISTRIBUTIONS)}, "
                "e.g. {loguniform: [1.0e-4, 1.0e-2]}"
            )
        kind, args = next(iter(spec.items()))
        if DISTRIBUTIONS[kind] and (not isinstance(args, list) or len(args) != 2):
            raise ValueError(f"{where} search.space.{key}: {kind} takes [low, high]")
    scheduler = raw.get("scheduler") or {}
    if set(scheduler) - {"asha"}:
        raise ValueError(
            f"{where} search.scheduler: only `asha` is supported, got {sorted(scheduler)}"
        )
    return {
        "num_samples": int(raw["num_samples"]),
        "seed": int(raw.get("seed", 0)),
        "space": dict(raw["space"]),
        "scheduler": scheduler,
    }


def load_suite(name: str, directory: Path = SUITE_DIR) -> Suite:
    path = directory / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"unknown suite {name!r}; available suites: {available_suites()}")
    raw = yaml.safe_load(path.read_text())
    where = str(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a suite file is a mapping")
    _check_keys(where, raw, SUITE_KEYS, {"name", "task", "baseline"})
    if raw["name"] != name:
        raise ValueError(f"{where}: name {raw['name']!r} must match the file name {name!r}")
    kind = raw.get("kind", "grid")
    if kind not in KINDS:
        raise ValueError(f"{where}: kind={kind!r} is not allowed; choose one of {list(KINDS)}")
    seeds = raw.get("seeds", 1)
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"{where}: seeds={seeds!r} must be an integer >= 1")
    arms = tuple(_arm(f"{where} arms[{i}]", a) for i, a in enumerate(raw.get("arms") or []))
    baseline = _arm(f"{where} baseline", raw["baseline"])
    names = [a.name for a in (baseline, *arms)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{where}: arm names must be unique; repeated: {duplicates}")
    search = _search(where, raw.get("search")) if kind == "search" else None
    if kind == "grid" and raw.get("search"):
        raise ValueError(f"{where}: `search` needs kind: search")
    return Suite(
        name=name,
        title=str(raw.get("title", name)),
        task=str(raw["task"]),
        kind=kind,
        seeds=seeds,
        metric=str(raw.get("metric", "exact_accuracy")),
        task_metrics={str(k): str(v) for k, v in (raw.get("task_metrics") or {}).items()},
        baseline=baseline,
        arms=arms,
        search=search,
        path=path,
    )

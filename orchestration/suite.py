"""Suites: a baseline, arms as named deltas, seeds and the paper's numbers (files in ablations/).

    from orchestration.suite import load_suite
    suite = load_suite("paper")
    model, train = suite.resolve("one_step_grad", task_shape, scale_model, scale_train)

An arm's `set` maps dotted fields (`model.T`, `train.ema`, `model.preset`, `train.preset`) to
values, applied on top of the baseline's `set`. Its `axes` must list every resolved field that
differs from the baseline: `validate` rejects an arm that changes something it did not declare
(for example a preset switch that silently changes more than the label says), and an arm whose
declared change did not survive the scale (it resolves to the baseline's value).

Fields an arm owns (`owned_fields`: its axes and the fields its merged `set` names) are what its
row is about, so nothing outside the suite file may change them silently:
- a scale's `model:`/`train:` blocks may not set a field any arm of the suite owns; a scale that
  must shrink one (smoke: T, n) lists it under `shrink:`, applied only to the arms that do not
  own it and shown in their labels (`Resolution.label`);
- a command-line override of an owned field is refused unless explicitly opted into
  (`override_declared=true` in ablate), and then shown in the label as well.
Resolution order for one trial: preset ← task shape ← scale ← shrink (arms not owning the
field) ← explicit `set` fields ← CLI.
An arm may name its own `task` (the main results put the same methods on several datasets);
it is then compared with the baseline resolved on that task.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import ablations
from datasets.task import task_names
from orchestration.verdicts import DEFAULT_TOLERANCE, check_tolerance
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
    "tolerance",
}
ARM_KEYS = {"name", "label", "task", "set", "axes", "paper", "note", "budget"}
BUDGET_KEYS = {"fraction", "reason"}
KINDS = ("grid", "search")
PRESET_KEYS = ("model.preset", "train.preset")
SEARCH_KEYS = {"num_samples", "seed", "space", "scheduler"}
DISTRIBUTIONS = {"loguniform": 2, "uniform": 2, "randint": 2, "choice": None}
MODEL_FIELDS = frozenset(f"model.{f.name}" for f in dataclasses.fields(ModelConfig))
# the seed is the trial's own (one per seed of an arm), never a suite or scale field
FIELDS = MODEL_FIELDS | {f"train.{f.name}" for f in dataclasses.fields(TrainConfig)} - {
    "train.seed"
}


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
    # The arm's own training budget as a fraction of the scale's (e.g. HRM's Table 1 number
    # comes from HRM's recipe, 20k epochs, not TRM's 50k: fraction 0.4; TRM_SPEC §4). 1.0: the
    # scale's. Shown in the arm's label, and its `reason` in the report.
    budget_fraction: float = 1.0
    budget_reason: str | None = None


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
    # Points: the largest 95 % half-width at which a verdict (orchestration.verdicts) is
    # decided; also how far the paper's number may be from ours and still be "reproduced".
    tolerance: float = DEFAULT_TOLERANCE

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

    def owned_fields(self, arm: SuiteArm | str) -> set[str]:
        """The fields an arm's row is about: its declared axes and the fields its `set` (merged
        over the baseline's) names."""
        arm = self.arm(arm) if isinstance(arm, str) else arm
        return set(arm.axes) | {k for k in self.settings(arm) if k not in PRESET_KEYS}

    def owners(self, tasks: tuple[str, ...] | None = None) -> dict[str, list[str]]:
        """Field → the arms owning it, over every arm on `tasks` (default: all) including the
        baseline (its value of a field some arm declares is what that arm is compared with, so
        it is protected too) and, for a search, the searched fields."""
        owners: dict[str, list[str]] = {}
        for arm in self.all_arms:
            if tasks is None or arm is self.baseline or self.task_of(arm) in tasks:
                for name in sorted(self.owned_fields(arm)):
                    owners.setdefault(name, []).append(arm.name)
        for name in (self.search or {}).get("space", {}):
            owners.setdefault(name, []).append("search.space")
        return owners

    def resolve(
        self,
        arm_name: str,
        task_shape: dict[str, Any],
        scale_model: dict[str, Any],
        scale_train: dict[str, Any],
        cli_model: dict[str, Any] | None = None,
        cli_train: dict[str, Any] | None = None,
        shrink: dict[str, Any] | None = None,
    ) -> tuple[ModelConfig, TrainConfig]:
        """The arm's (model, train) configs; see the module docstring for the order."""
        arm = self.arm(arm_name)
        settings = self.settings(arm)
        owned = self.owned_fields(arm)
        layers = {"model": {}, "train": {}}
        for key, value in (shrink or {}).items():
            if key not in owned:
                group, _, name = key.partition(".")
                layers[group][name] = value
        for key, value in settings.items():
            if key not in PRESET_KEYS:
                group, _, name = key.partition(".")
                layers[group][name] = value
        model = ModelConfig.from_preset(
            settings.get("model.preset", "trm_mlp"),
            **{**task_shape, **scale_model, **layers["model"], **(cli_model or {})},
        )
        train = TrainConfig.from_preset(
            settings.get("train.preset", "trm_sudoku"),
            **{**scale_train, **layers["train"], **(cli_train or {})},
        )
        return model, train

    def resolution(
        self,
        arm_name: str,
        task_shape: dict[str, Any],
        scale: dict[str, Any],
        cli_model: dict[str, Any] | None = None,
        cli_train: dict[str, Any] | None = None,
    ) -> Resolution:
        """The arm resolved under a scale (its `model`, `train` and `shrink` blocks) and the
        command line, with what the shrink rule and the command line changed in it."""
        shrink = scale.get("shrink") or {}
        args = (arm_name, task_shape, scale["model"], scale["train"])
        model, train = self.resolve(*args, cli_model, cli_train, shrink)
        unshrunk = _flat(*self.resolve(*args))
        shrunk_only = _flat(*self.resolve(*args, shrink=shrink))
        final = _flat(model, train)
        cli = [f"model.{f}" for f in cli_model or {}] + [f"train.{f}" for f in cli_train or {}]
        return Resolution(
            label=self.arm(arm_name).label,
            model=model,
            train=train,
            shrunk={k: shrunk_only[k] for k in shrink if shrunk_only[k] != unshrunk[k]},
            overridden={k: final[k] for k in cli if final[k] != shrunk_only[k]},
            owners=self.owners(),
        )

    def validate(
        self,
        task_shapes: dict[str, dict[str, Any]],
        scale_model: dict[str, Any],
        scale_train: dict[str, Any],
        shrink: dict[str, Any] | None = None,
        arms: tuple[str, ...] | None = None,
    ) -> None:
        """Every arm on a task of `task_shapes` resolves to valid configs and changes only the
        axes it declares; every arm of `arms` (default: all) still differs from the baseline
        after the scale on each declared axis it differs on in the suite file (a shrink rule
        may erase a declared change: that arm is refused). An arm is compared with the baseline
        resolved on the arm's own task, so the fields the data fixes (vocabulary, length,
        puzzle ids) never count as changes."""
        bases: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}  # task → (as file, scaled)
        for arm in self.arms:
            task = self.task_of(arm)
            if task not in task_shapes:
                continue  # its data is not built in this run (e.g. `arms=[...]` skips the task)
            shape = task_shapes[task]
            scaled = (shape, scale_model, scale_train)
            if task not in bases:
                bases[task] = (
                    _flat(*self.resolve(self.baseline.name, shape, {}, {})),
                    _flat(*self.resolve(self.baseline.name, *scaled, shrink=shrink)),
                )
            base_as_file, base = bases[task]
            try:
                resolved = _flat(*self.resolve(arm.name, *scaled, shrink=shrink))
                as_file = _flat(*self.resolve(arm.name, shape, {}, {}))
            except ValueError as err:
                raise ValueError(f"suite {self.name!r}, arm {arm.name!r}: {err}") from None
            changed = {k for k, v in resolved.items() if base[k] != v}
            undeclared = sorted(changed - set(arm.axes))
            if undeclared:
                raise ValueError(
                    f"suite {self.name!r}, arm {arm.name!r} changes {undeclared} without declaring "
                    f"them in `axes` (declared: {list(arm.axes)}); declare them or narrow `set`"
                )
            declared = {k for k in arm.axes if as_file[k] != base_as_file[k]}
            erased = sorted(declared - changed)
            if erased and (arms is None or arm.name in arms):
                raise ValueError(
                    f"suite {self.name!r}, arm {arm.name!r}: its declared change of "
                    + ", ".join(f"{k} ({as_file[k]!r} vs {base_as_file[k]!r})" for k in erased)
                    + " does not survive the scale: it resolves to the baseline's "
                    + ", ".join(f"{k}={resolved[k]!r}" for k in erased)
                    + " (scale shrink rule: "
                    + (json.dumps(shrink, sort_keys=True) if shrink else "none")
                    + "), so its row would not test what its label says. Leave the arm out "
                    "(arms=[...]) or use a scale that keeps the change"
                )


@dataclass(frozen=True)
class Resolution:
    """One arm as it will run, and what outside the suite file changed in it."""

    label: str  # the suite file's label
    model: ModelConfig
    train: TrainConfig
    shrunk: dict[str, Any]  # field → value the scale's shrink rule gave this arm
    overridden: dict[str, Any]  # field → value the command line gave this arm
    owners: dict[str, list[str]]

    @property
    def declared_override(self) -> bool:
        """The command line changed a field some arm owns (only with an explicit opt-in): the
        row no longer is the suite's (or the paper's) configuration."""
        return any(k in self.owners for k in self.overridden)

    @property
    def run_label(self) -> str:
        """The label as run: the file's label plus whatever the scale or command line changed
        in a field some arm owns, e.g. "TRM (T=3, n=6) [scale: T=1, n=2]"."""
        label = self.label
        if self.shrunk:
            label += f" [scale: {_short(self.shrunk)}]"
        owned = {k: v for k, v in self.overridden.items() if k in self.owners}
        if owned:
            label += f" [override: {_short(owned)}]"
        return label


def _short(values: dict[str, Any]) -> str:
    return ", ".join(f"{k.partition('.')[2]}={v}" for k, v in values.items())


def describe_values(values: dict[str, Any]) -> str:
    """ "train.lr=0.00123, model.T=3": sampled or chosen values, short enough for a label."""
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(values.items())
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
    for key in settings:
        if key not in FIELDS | set(PRESET_KEYS):
            raise ValueError(
                f"{where}: `set` key {key!r} is not a field; use model.<field>, "
                f"train.<field>, model.preset or train.preset (model fields: "
                f"{sorted(k[6:] for k in MODEL_FIELDS)})"
            )
    for axis in raw.get("axes") or ():
        if axis not in FIELDS:
            raise ValueError(f"{where}: axis {axis!r} is not a model.* or train.* field")
    budget = raw.get("budget") or {}
    if not isinstance(budget, dict):
        raise ValueError(f"{where}: `budget` is a mapping with {sorted(BUDGET_KEYS)}")
    _check_keys(f"{where} budget", budget, BUDGET_KEYS, {"fraction"} if budget else set())
    fraction = budget.get("fraction", 1.0)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or fraction <= 0:
        raise ValueError(
            f"{where} budget.fraction={fraction!r}: give a number > 0, the arm's training "
            "steps as a fraction of the scale's (e.g. 0.4 for 20k of 50k epochs)"
        )
    return SuiteArm(
        name=str(raw["name"]),
        label=str(raw["label"]),
        budget_fraction=float(fraction),
        budget_reason=budget.get("reason"),
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
    for key, spec in raw["space"].items():
        if key not in FIELDS:
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
    where = str(path)
    try:
        with open(path) as stream:  # a stream, so the parser's message names the file
            raw = yaml.safe_load(stream)
    except yaml.YAMLError as err:  # its str names the line and column
        raise ValueError(f"{where} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a suite file is a mapping")
    _check_keys(where, raw, SUITE_KEYS, {"name", "task", "baseline"})
    tasks = task_names()
    for label, task in [("task", raw["task"])] + [
        (f"arms[{i}].task", arm.get("task"))
        for i, arm in enumerate(raw.get("arms") or [])
        if isinstance(arm, dict) and arm.get("task") is not None
    ]:
        if task not in tasks:
            raise ValueError(f"{where}: {label}={task!r} is not a task; the tasks are {tasks}")
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
    tolerance = check_tolerance(raw.get("tolerance", DEFAULT_TOLERANCE), f"{where}: tolerance")
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
        tolerance=tolerance,
    )

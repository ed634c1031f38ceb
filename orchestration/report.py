"""Turn a suite's MLflow runs into the paper's table with our numbers beside the paper's.

usage: python -m orchestration.report suite=NAME [run=latest|PARENT_RUN_ID] [tracking_uri=URI]
                                      [out=.trm/reports]

  suite=NAME        a suite of ablations/ (paper, smoke, search_lr, ...); required
  run=ID            the suite execution (its MLflow parent run); default: the latest
  tracking_uri=URI  default: $MLFLOW_TRACKING_URI, else sqlite:///.trm/mlflow.db
  out=DIR           the report goes to DIR/<parent run id>/; default: .trm/reports

A grid suite gets one row per arm that was run: paper | ours mean ± 95 % Student-t interval
over seeds (n) | Δ paper (n/c below the paper's scale or where an arm ran with a declared
override) | verdict against the paper's number (same n/c) | Δ baseline with a 95 % Welch
t-interval | Δ verdict (direction against the paper's sign; at the paper's scale the paper's Δ
against our interval first) | token accuracy | params | depth | train FLOPs per trial | test
FLOPs per puzzle | compute. The verdict rule, with the suite's `tolerance`, is
orchestration/verdicts.py's, stated under the table; a seeds=auto execution also says how many
seeds each arm got and why it stopped.
Missing and failed trials are shown as such, never dropped. A search suite gets one row per
trial (its sampled values, final metric, steps reached, status), ranked, and the command that
reruns the best configuration as a grid arm with seeds.
Writes table.md, table.csv (numbers only), table.html (a self-contained page with the plots),
table.tex and the plots (metric and token accuracy against training step; accuracy against
supervision step), logs them and per-arm summary metrics on the parent run, and prints the
Markdown with where to look next (report folder, parent run, MLflow UI).
"""

from __future__ import annotations

import ast
import base64
import contextlib
import csv
import html
import io
import json
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from orchestration.protocol_report import protocol_section
from orchestration.protocols import ARC_TASKS
from orchestration.suite import Suite, load_suite
from orchestration.tracking import Tracker, metric_name
from orchestration.verdicts import (
    DEFAULT_TOLERANCE,
    DELTA_DIRECTION,
    UNDECIDED,
    ArmState,
    difference_interval,
    direction,
    mean_half_width,
    mean_interval,
    stop_reasons,
    verdict,
)

PERCENT = 100.0
TOKEN_METRIC = "token_accuracy"
BAND_NOTE = "band: min–max over seeds"
RERUN_SEEDS = 3  # enough seeds for a t-interval when a search's best is rerun as a grid arm
RERUN_SETS = ("seeds", "arms", "search_values", "resume")  # the rerun command sets these itself
# Lines that would lie on each other are shifted apart by this fraction of the y axis each
# (≈ 3.5 px at the saved size), and an axis spans at least MIN_SPAN percentage points, so that
# nine arms at 0 % are a readable bundle, not a zoom into ±1 pp of nothing.
OFFSET_FRACTION = 0.007
MIN_SPAN = 10.0
# MLflow metric names: letters, digits and `_-./ ` (tracking.metric_name also lets `:` through)
SUMMARY_INVALID = re.compile(r"[^A-Za-z0-9_\-./ ]")


def metric_label(metric: str) -> str:
    """How a trainer metric reads in a table or on an axis: 'exact_accuracy' → 'exact
    accuracy', 'ARC/pass@2' → 'pass@2'."""
    return metric.rsplit("/", 1)[-1].replace("_", " ")


def _summary_key(*parts: str) -> str:
    return "/".join(SUMMARY_INVALID.sub("_", p.replace(" ", "_")) for p in parts)


# The interval math lives in orchestration.verdicts; this name stays for callers of the report.
welch_interval = difference_interval


@dataclass
class ArmRow:
    name: str
    label: str
    paper: float | None
    values: list[float] = field(default_factory=list)  # one per finished seed, in %
    token_values: list[float] = field(default_factory=list)  # token accuracy, same seeds
    seeds_expected: int = 0
    failed: int = 0
    params: int | None = None
    depth: int | None = None
    compute_hours: float = 0.0
    device: str = "cpu"
    task: str = ""
    multi_task: bool = False
    metric: str = "exact_accuracy"
    declared_override: bool = False  # ran with a field it declares overridden (an opt-in)
    runs: int = 0  # its trial runs of any status: the seeds it was given (seeds=auto counts them)
    train_flops: float | None = None  # one trial's training FLOPs (trm_core.flops)
    test_flops: float | None = None  # FLOPs to answer one test puzzle (halt_max_steps, 1 sample)

    @property
    def display(self) -> str:
        """The name in plots: a suite over several tasks repeats labels (HRM on each)."""
        return f"{self.label} · {self.task}" if self.multi_task else self.label

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / self.n if self.values else None

    @property
    def half_width(self) -> float | None:
        """Half-width of the 95 % Student-t interval (None below two seeds)."""
        return mean_half_width(self.values)

    @property
    def missing(self) -> int:
        return max(0, self.seeds_expected - self.n - self.failed)


@dataclass
class Execution:
    """What a suite execution's parent run says about itself (written by ablate); every field
    falls back gracefully when an older run lacks the tag or param."""

    run_id: str
    experiment_id: str
    kind: str | None  # "search" or "grid" (a search suite rerun at chosen values is a grid)
    scale: str
    overrides: list[str]
    arms: list[str] | None  # None: not recorded, so every arm of the suite counts
    seeds: int | None
    command: str | None
    commit: str | None
    budget_steps: int | None
    # seeds=auto: {"first", "add", "max"} of its rounds (orchestration.ablate); None: fixed seeds
    seeds_auto: dict[str, int] | None = None

    @classmethod
    def of(cls, parent: Any) -> Execution:
        tags, params = parent.data.tags, parent.data.params
        return cls(
            run_id=parent.info.run_id,
            experiment_id=parent.info.experiment_id,
            kind=tags.get("trm.kind"),
            scale=tags.get("trm.scale", "?"),
            overrides=_json_list(tags.get("trm.overrides")),
            arms=_literal_list(params.get("arms")),
            seeds=_int(params.get("seeds")),
            command=tags.get("trm.command"),
            # the commit plus a digest of local changes where ablate recorded one
            commit=tags.get("trm.code") or tags.get("trm.git_commit"),
            budget_steps=_int(params.get("scale.steps")),
            seeds_auto=(
                {key: _int(params.get(f"seeds_auto.{key}")) for key in ("first", "add", "max")}
                if tags.get("trm.seeds") == "auto"
                else None
            ),
        )

    @property
    def changes(self) -> list[str]:
        """The overrides beyond choosing the suite and the scale (which the caption names)."""
        return [o for o in self.overrides if _override_key(o) not in ("suite", "scale")]

    @property
    def comparable(self) -> bool:
        return self.scale == "paper"

    def scale_text(self) -> str:
        text = f"scale {self.scale}"
        if self.changes:
            text += f", overrides: {', '.join(self.changes)}"
        return text + ("" if self.comparable else " (not comparable to the paper)")

    def command_text(self, suite: Suite) -> str:
        if self.command:
            return self.command
        words = [f"suite={suite.name}", f"scale={self.scale}", *self.changes]
        return f"{_ablate_command(words)}  (reconstructed: the run has no trm.command tag)"


def _override_key(override: str) -> str:
    """'model.hidden=16' → 'model.hidden'; Hydra's +key / ~key prefixes dropped."""
    return override.lstrip("+~").partition("=")[0]


def _ablate_command(words: list[str]) -> str:
    return "python -m orchestration.ablate " + " ".join(shlex.quote(w) for w in words)


def _json_list(text: str | None) -> list[str]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return [text]  # not JSON: show it as written rather than lose it
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _literal_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return [str(v) for v in value] if isinstance(value, list | tuple) else None


def _int(text: Any) -> int | None:
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return None


def _parse(value: str) -> Any:
    if value in ("True", "False"):
        return value == "True"
    if value == "None":
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _parent_run(tracker: Tracker, experiment_id: str, run: str) -> Any:
    if run != "latest":
        return tracker.client.get_run(run)
    parents = tracker.client.search_runs(
        [experiment_id],
        "tags.`trm.role` = 'suite'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not parents:
        raise ValueError("no suite execution found in MLflow; run orchestration.ablate first")
    return parents[0]


def _execution_runs(suite: Suite, tracker: Tracker, run: str) -> tuple[Any, list[Any]]:
    """(parent run, its child runs)."""
    experiment = tracker.client.get_experiment_by_name(f"trm-lab/{suite.name}")
    if experiment is None:
        raise ValueError(f"no MLflow experiment trm-lab/{suite.name} at {tracker.uri}")
    parent = _parent_run(tracker, experiment.experiment_id, run)
    children = tracker.client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    return parent, children


def _history(tracker: Tracker, run_id: str, metric: str) -> list[tuple[int, float]]:
    """A metric's evaluations in % ordered by training step."""
    history = tracker.client.get_metric_history(run_id, metric_name(f"eval/{metric}"))
    return [(m.step, m.value * PERCENT) for m in sorted(history, key=lambda m: m.step)]


def _percent(metrics: dict[str, float], metric: str) -> float | None:
    key = metric_name(f"eval/{metric}")
    return metrics[key] * PERCENT if key in metrics else None


def collect(
    suite: Suite, tracker: Tracker, run: str = "latest", seeds_below: dict[str, int] | None = None
) -> tuple[Any, list[ArmRow], dict]:
    """(parent run, one row per arm that was run, series) where series is {"metric": {arm:
    {seed: [(step, %)]}}, "token": the same for token accuracy, "finals": {arm: [final metrics
    of each finished seed]}}. `seeds_below` ({arm: k}): only each arm's seeds below k count (what
    seeds=auto had run after a round, whatever later rounds added since)."""
    import torch

    from trm_core import ModelConfig, RecursiveReasoningModel, count_parameters

    parent, children = _execution_runs(suite, tracker, run)
    execution = Execution.of(parent)
    seeds = execution.seeds or suite.seeds
    # Arms left out on the command line (`arms=[...]`) were not asked for: not "missing".
    arms = [a for a in suite.all_arms if execution.arms is None or a.name in execution.arms]
    tasks = {suite.task_of(a) for a in arms}
    rows, series = [], {"metric": {}, "token": {}, "finals": {}}
    for arm in arms:
        task = suite.task_of(arm)
        row = ArmRow(
            arm.name,
            arm.label,
            arm.paper.get("accuracy"),
            seeds_expected=seeds,
            task=task,
            multi_task=len(tasks) > 1,
            metric=suite.metric_for(task),
        )
        for child in children:
            tags = child.data.tags
            if tags.get("trm.arm") != arm.name:
                continue
            index = _int(tags.get("trm.seed")) or 0
            if seeds_below is not None and index >= seeds_below.get(arm.name, 0):
                continue
            params = child.data.params
            row.label = tags.get("trm.label", row.label)
            row.declared_override |= tags.get("trm.declared_override") == "true"
            row.runs += 1
            if row.params is None and "model.hidden" in params:
                config = ModelConfig.from_dict(
                    {k[6:]: _parse(v) for k, v in params.items() if k.startswith("model.")}
                )
                with torch.device("meta"):
                    row.params = count_parameters(RecursiveReasoningModel(config))
                row.depth = config.depth
                row.train_flops, row.test_flops = _flops(config, params)
            row.device = tags.get("trm.device", row.device)
            row.compute_hours += child.data.metrics.get("wall_time_s", 0.0) / 3600
            value = _percent(child.data.metrics, row.metric)
            if child.info.status == "FINISHED" and value is not None:
                row.values.append(value)
                token = _percent(child.data.metrics, TOKEN_METRIC)
                if token is not None:
                    row.token_values.append(token)
                series["finals"].setdefault(arm.name, []).append(child.data.metrics)
                seed = tags.get("trm.seed")
                for key, metric in (("metric", row.metric), ("token", TOKEN_METRIC)):
                    history = _history(tracker, child.info.run_id, metric)
                    series[key].setdefault(arm.name, {})[seed] = history
            elif child.info.status == "FAILED":
                row.failed += 1
        if execution.seeds_auto is not None:  # each arm got the seeds its rounds gave it
            row.seeds_expected = row.runs
        rows.append(row)
    return parent, rows, series


def _flops(config: Any, params: dict[str, str]) -> tuple[float | None, float | None]:
    """(training FLOPs of one trial, FLOPs to answer one test puzzle) of a trial run, from its
    resolved model params and its budget.steps / train.global_batch_size params: model FLOPs
    as trm_core.flops counts them (matmuls, TRM_SPEC §7); a test puzzle is halt_max_steps
    forward supervision steps of one sample (no early halting, §4)."""
    from trm_core.flops import test_flops_per_puzzle, training_flops

    steps, batch = _int(params.get("budget.steps")), _int(params.get("train.global_batch_size"))
    train = training_flops(config, steps, batch) if steps and batch else None
    return train, test_flops_per_puzzle(config, config.halt_max_steps, samples=1)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def numbers(
    rows: list[ArmRow],
    comparable: bool = True,
    baseline: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[dict[str, Any]]:
    """One record of numbers per row (None where unknown): what the CSV holds and what the
    rendered tables format. `baseline` names the baseline arm (default: the first row); only
    rows on its task are compared with it. Verdicts (orchestration.verdicts, `tolerance` in
    points): `verdict_paper` our t-interval against the paper's number, only where comparable
    (the paper's scale, no declared override); for the other arms on the baseline's task
    `direction`, our Welch interval of Δ baseline against the sign of the paper's Δ (arm paper
    − baseline paper; without one, or with a declared override on either row, lower/higher),
    and where comparable `verdict_delta_baseline`, that interval against the paper's Δ."""
    base = next((r for r in rows if r.name == (baseline or rows[0].name)), None)
    out = []
    for row in rows:
        mean, half = row.mean, row.half_width
        delta = delta_ci = None
        same_task = base is not None and row is not base and row.task == base.task
        if same_task and mean is not None and base.mean is not None:
            delta = mean - base.mean
            delta_ci = difference_interval(row.values, base.values)
        paper_delta = None
        if mean is not None and row.paper is not None and comparable:
            paper_delta = None if row.declared_override else mean - row.paper
        to_paper = comparable and not row.declared_override
        verdict_paper = verdict(
            mean_interval(row.values), row.paper if to_paper else None, tolerance
        )
        paper_change = verdict_delta = way = None  # the paper's Δ baseline and our verdicts
        if same_task:
            if row.paper is not None and base.paper is not None:
                paper_change = row.paper - base.paper
            as_paper = not (row.declared_override or base.declared_override)
            way = direction(delta_ci, paper_change if as_paper else None, tolerance)
            if comparable and as_paper:
                verdict_delta = verdict(delta_ci, paper_change, tolerance)
        out.append(
            {
                "arm": row.name,
                "label": row.label,
                "task": row.task,
                "metric": row.metric,
                "paper": row.paper,
                "mean": _round(mean),
                "ci_low": _round(None if half is None else mean - half),
                "ci_high": _round(None if half is None else mean + half),
                "n": row.n,
                "failed": row.failed,
                "missing": row.missing,
                "delta_paper": _round(paper_delta),
                "verdict_paper": verdict_paper,
                "delta_baseline": _round(delta),
                "delta_baseline_ci_low": _round(delta_ci[0]) if delta_ci else None,
                "delta_baseline_ci_high": _round(delta_ci[1]) if delta_ci else None,
                "paper_delta_baseline": _round(paper_change),
                "verdict_delta_baseline": verdict_delta,
                "direction": way,
                "tolerance": tolerance,
                "token_accuracy": _round(_mean(row.token_values)),
                "params": row.params,
                "depth": row.depth,
                "train_flops": row.train_flops,
                "test_flops_per_puzzle": row.test_flops,
                "compute_hours": _round(row.compute_hours),
                "compute_unit": "GPU" if "cuda" in row.device else "CPU",
                "declared_override": int(row.declared_override),
            }
        )
    return out


def arm_states(records: list[dict[str, Any]], seeds: dict[str, int]) -> dict[str, ArmState]:
    """What seeds=auto decides on, per arm of `records` (numbers()): the verdicts that apply
    to it (against the paper where comparable; its Δ-baseline direction) and `seeds`, the
    seeds it was given so far."""
    return {
        record["arm"]: ArmState(
            {"vs paper": record["verdict_paper"], DELTA_DIRECTION: record["direction"]},
            seeds.get(record["arm"], 0),
        )
        for record in records
    }


def _signed(value: float) -> str:
    return f"{value:+.1f}"


def flops_text(value: float | None) -> str:
    """2.1e18 for 2.1 × 10¹⁸ FLOPs; — when unknown."""
    if value is None:
        return "—"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _render(row: ArmRow, record: dict[str, Any], baseline: bool) -> dict[str, str]:
    if row.mean is None:
        ours = "failed" if row.failed else "missing"
    else:
        ours = (
            f"{row.mean:.1f}"
            + (f" ± {row.half_width:.1f}" if row.half_width is not None else "")
            + f" (n={row.n})"
        )
    notes = [f"{row.failed} failed"] if row.failed else []
    if row.missing:
        notes.append(f"{row.missing} missing")
    if record["delta_paper"] is not None:
        paper_delta = _signed(record["delta_paper"])
    elif row.mean is None or row.paper is None:
        paper_delta = "—"
    else:
        paper_delta = "n/c"  # below the paper's scale, or a declared override
    # n/c: below the paper's scale, or a declared override
    paper_verdict = "—" if row.paper is None else record["verdict_paper"] or "n/c"
    if record["delta_baseline"] is None or baseline:
        base_delta = "—"
    elif record["delta_baseline_ci_low"] is None:
        base_delta = f"{_signed(record['delta_baseline'])} (n<2, no interval)"
    else:
        base_delta = (
            f"{_signed(record['delta_baseline'])} [{_signed(record['delta_baseline_ci_low'])},"
            f" {_signed(record['delta_baseline_ci_high'])}]"
        )
    if baseline or record["direction"] is None:
        base_verdict = "—"
    else:  # at the paper's scale: the magnitude against the paper's Δ, then the direction
        parts = [record["verdict_delta_baseline"], record["direction"]]
        base_verdict = "; ".join(p for p in parts if p is not None)
    token = record["token_accuracy"]
    return {
        "arm": row.label,
        "paper": "—" if row.paper is None else f"{row.paper:.1f}",
        "ours": ours + (f" [{', '.join(notes)}]" if notes else ""),
        "Δ paper": paper_delta,
        "verdict": paper_verdict,
        "Δ baseline": base_delta,
        "Δ verdict": base_verdict,
        # tells arms apart where exact accuracy is 0 for all (MINI_SCALE.md)
        "token acc": "—" if token is None else f"{token:.1f}",
        "params": "—" if row.params is None else f"{row.params / 1e6:.2f}M",
        "depth": "—" if row.depth is None else str(row.depth),
        "train FLOPs": flops_text(row.train_flops),
        "test FLOPs/puzzle": flops_text(row.test_flops),
        "compute": f"{row.compute_hours:.2f} {record['compute_unit']}-h",
    }


def table(
    rows: list[ArmRow],
    comparable: bool = True,
    baseline: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[dict[str, str]]:
    """The rendered rows. `comparable=False` (a scale other than the paper's) prints Δ paper
    and its verdict as n/c: a shrunk model on a shrunk task says nothing about the paper's
    number. Δ baseline carries its 95 % Welch t-interval in brackets; the verdicts use
    `tolerance` (points)."""
    base = baseline or rows[0].name
    return [
        _render(row, record, row.name == base)
        for row, record in zip(rows, numbers(rows, comparable, baseline, tolerance), strict=True)
    ]


def pivot(rows: list[ArmRow], tasks: tuple[str, ...]) -> list[dict[str, str]]:
    """Tables 4–5 layout: one row per method label, paper | ours per task."""
    cells = {
        (row.label, row.task): rendered for row, rendered in zip(rows, table(rows), strict=True)
    }
    out = []
    for label in dict.fromkeys(row.label for row in rows):
        line = {"method": label}
        for task in tasks:
            cell = cells.get((label, task))
            line[f"{task} paper"] = cell["paper"] if cell else "—"
            line[f"{task} ours"] = cell["ours"] if cell else "—"
        out.append(line)
    return out


# --- search suites --------------------------------------------------------------------------


@dataclass
class SearchTrial:
    trial_id: str
    values: dict[str, Any]  # dotted field → sampled value
    metric: float | None  # final value of the suite's metric, in %
    token: float | None
    steps: int | None  # the last training step the trial reached
    budget: int | None  # the steps it was given
    status: str  # the MLflow run status
    interrupted: bool = False  # its driver died; a resumed search sampled the slot again
    history: list[tuple[int, float]] = field(default_factory=list)
    token_history: list[tuple[int, float]] = field(default_factory=list)

    @property
    def stopped_early(self) -> bool:
        return self.steps is not None and self.budget is not None and self.steps < self.budget

    @property
    def state(self) -> str:
        if self.status == "FAILED":
            return "failed"
        if self.interrupted:
            return "interrupted (driver died)"
        if self.stopped_early:
            return f"stopped early (step {self.steps} of {self.budget})"
        return self.status.lower()


def _search_values(run: Any, space: dict[str, Any]) -> dict[str, Any]:
    """The sampled values in the space's order: the `trm.search_values` tag, else the space's
    fields in the run's params (runs from before the tag existed)."""
    values = {}
    tagged = run.data.tags.get("trm.search_values")
    if tagged:
        with contextlib.suppress(ValueError, TypeError):
            values = dict(json.loads(tagged))
    if not values:
        params = run.data.params
        values = {key: _parse(params[key]) for key in space if key in params}
    order = {key: i for i, key in enumerate(space)}
    return dict(sorted(values.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def collect_search(suite: Suite, tracker: Tracker, run: str = "latest") -> tuple[Any, list]:
    """(parent run, the trials ranked by the suite's metric, best first; no metric last)."""
    parent, children = _execution_runs(suite, tracker, run)
    execution = Execution.of(parent)
    space = (suite.search or {}).get("space", {})
    trials = []
    for child in children:
        tags, metrics = child.data.tags, child.data.metrics
        history = _history(tracker, child.info.run_id, suite.metric)
        steps = _int(metrics.get("step")) or (history[-1][0] if history else None)
        trials.append(
            SearchTrial(
                trial_id=tags.get("trm.trial_id") or tags.get("trm.trial") or child.info.run_name,
                values=_search_values(child, space),
                metric=_percent(metrics, suite.metric),
                token=_percent(metrics, TOKEN_METRIC),
                steps=steps,
                budget=_int(child.data.params.get("budget.steps")) or execution.budget_steps,
                status=child.info.status,
                interrupted="trm.interrupted" in tags,
                history=history,
                token_history=_history(tracker, child.info.run_id, TOKEN_METRIC),
            )
        )
    return parent, rank_trials(trials)


def rank_trials(trials: list[SearchTrial]) -> list[SearchTrial]:
    """Best first by the suite's metric; ties (several trials at 0 % exact accuracy on a short
    budget) by token accuracy; trials without a metric last."""
    return sorted(
        trials, key=lambda t: (t.metric is None, -(t.metric or 0.0), -(t.token or 0.0), t.trial_id)
    )


def _value_text(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _value_arg(value: Any) -> str:
    """A value as the command line's `search_values={...}` takes it: floats in full (the
    rerun must train the same configuration), booleans as YAML writes them."""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def search_keys(suite: Suite, trials: list[SearchTrial]) -> list[str]:
    space = list((suite.search or {}).get("space", {}))
    return list(dict.fromkeys([*space, *(k for t in trials for k in t.values)]))


def search_table(suite: Suite, trials: list[SearchTrial]) -> list[dict[str, str]]:
    label = metric_label(suite.metric)
    out = []
    for rank, trial in enumerate(trials, 1):
        line = {"rank": str(rank), "trial": trial.trial_id}
        for key in search_keys(suite, trials):
            line[key] = _value_text(trial.values[key]) if key in trial.values else "—"
        line[label] = "—" if trial.metric is None else f"{trial.metric:.1f}"
        line["token acc"] = "—" if trial.token is None else f"{trial.token:.1f}"
        line["steps"] = "—" if trial.steps is None else str(trial.steps)
        line["status"] = trial.state
        out.append(line)
    return out


def search_numbers(suite: Suite, trials: list[SearchTrial]) -> list[dict[str, Any]]:
    out = []
    for rank, trial in enumerate(trials, 1):
        record: dict[str, Any] = {"rank": rank, "trial_id": trial.trial_id}
        record.update({key: trial.values.get(key) for key in search_keys(suite, trials)})
        record.update(
            {
                suite.metric: _round(trial.metric),
                "token_accuracy": _round(trial.token),
                "steps": trial.steps,
                "budget_steps": trial.budget,
                "stopped_early": int(trial.stopped_early),
                "status": trial.status,
            }
        )
        out.append(record)
    return out


def best_trial(trials: list[SearchTrial]) -> SearchTrial | None:
    return next((t for t in trials if t.metric is not None and t.status != "FAILED"), None)


def rerun_command(suite: Suite, execution: Execution, trial: SearchTrial) -> str:
    """The best configuration as a grid arm with seeds: ablate runs the suite's baseline with
    `search_values` written in (under the same scale and overrides as the search)."""
    values = ", ".join(f"{k}: {_value_arg(v)}" for k, v in trial.values.items())
    return _ablate_command(
        [
            f"suite={suite.name}",
            f"scale={execution.scale}",
            *(o for o in execution.changes if _override_key(o) not in RERUN_SETS),
            f"search_values={{{values}}}",
            f"seeds={RERUN_SEEDS}",
        ]
    )


def search_notes(suite: Suite, execution: Execution, trials: list[SearchTrial]) -> list[str]:
    best = best_trial(trials)
    if best is None:
        return ["No trial reached an evaluation: there is no best configuration."]
    values = ", ".join(f"{k}={_value_text(v)}" for k, v in best.values.items())
    reached = f" at step {best.steps}" if best.steps is not None else ""
    tied = sum(t.metric == best.metric for t in trials)
    tie = f" ({tied} trials tie on it: ranked by token accuracy)" if tied > 1 else ""
    return [
        f"Best: trial {best.trial_id} ({values}): {metric_label(suite.metric)} "
        f"{best.metric:.1f} %{reached}{tie}, one seed. Rerun it as a grid arm with "
        f"{RERUN_SEEDS} seeds:",
        f"`{rerun_command(suite, execution, best)}`",
    ]


# --- output formats -------------------------------------------------------------------------


def to_markdown(rows: list[dict[str, str]], caption: str, notes: list[str] = ()) -> str:
    header = list(rows[0])
    lines = [f"**{caption}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r[h] for h in header) + " |" for r in rows]
    if notes:
        lines += ["", *(f"{note}\n" for note in notes)]
    return "\n".join(lines).rstrip("\n") + "\n"


def to_csv(records: list[dict[str, Any]]) -> str:
    """Numbers only (None → an empty cell), so a spreadsheet or pandas reads columns as such."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in records)
    return buffer.getvalue()


def _code_markup(note: str) -> str:
    """A note's `code` spans as <code> (the rest escaped)."""
    parts = html.escape(note).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(
    rows: list[dict[str, str]],
    caption: str,
    notes: list[str] = (),
    images: list[tuple[Path, str]] = (),
    footer: list[str] = (),
) -> str:
    """A whole page that needs nothing beside it: the plots are embedded as data: URIs."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r.values()) + "</tr>" for r in rows
    )
    figures = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'
        f' alt="{html.escape(alt)}"><figcaption>{html.escape(alt)}</figcaption></figure>'
        for path, alt in images
    )
    paragraphs = "".join(f"<p>{_code_markup(n)}</p>" for n in notes)
    lines = "".join(f"<p>{_code_markup(line)}</p>" for line in footer)
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:80em}"
        "table{border-collapse:collapse}caption{font-weight:bold;padding:.5em;text-align:left}"
        "th,td{border:1px solid #bbb;padding:.25em .6em;text-align:right}"
        "th:first-child,td:first-child{text-align:left}img{max-width:100%}"
        "footer{margin-top:2em;color:#555;font-size:.9em}"
    )
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(caption)}</title>\n<style>{style}</style>\n</head>\n<body>\n"
        f"<table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>\n{paragraphs}\n{figures}\n"
        f"<footer>{lines}</footer>\n</body>\n</html>\n"
    )


def _latex_escape(text: str) -> str:
    return (
        text.replace("\\", "\\textbackslash{}")
        .replace("_", "\\_")
        .replace("%", "\\%")
        .replace("&", "\\&")
        .replace("#", "\\#")
        .replace("±", "$\\pm$")
        .replace("Δ", "$\\Delta$")
        .replace("—", "---")
        .replace("·", "$\\cdot$")
    )


def to_latex(rows: list[dict[str, str]], caption: str) -> str:
    columns = "l" + "r" * (len(rows[0]) - 1)
    lines = [
        "% Needs \\usepackage{booktabs} (\\toprule, \\midrule, \\bottomrule).",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{_latex_escape(caption)}}}",
        f"\\begin{{tabular}}{{{columns}}}",
        "\\toprule",
        " & ".join(_latex_escape(h) for h in rows[0]) + " \\\\",
        "\\midrule",
    ]
    lines += [" & ".join(_latex_escape(v) for v in r.values()) + " \\\\" for r in rows]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


# --- plots ------------------------------------------------------------------------------------


@dataclass
class Curve:
    label: str
    runs: list[list[tuple[float, float]]]  # one (x, %) series per seed


COLOURS = [f"C{i}" for i in range(10)]
LINESTYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">"]


def line_style(index: int) -> dict[str, Any]:
    """Colour, dash and marker of the index-th curve: all three differ between neighbours, so
    curves stay apart in print, in greyscale and for colour-blind readers."""
    return {
        "color": COLOURS[index % len(COLOURS)],
        "linestyle": LINESTYLES[index % len(LINESTYLES)],
        "marker": MARKERS[index % len(MARKERS)],
    }


def _coinciding_shifts(series: list[tuple[list[float], Any]], step: float) -> list[float]:
    """A vertical shift per (steps, mean) series: series that lie on each other (within half a
    step at every shared training step) are spread symmetrically `step` apart; every other
    series stays where it is."""
    import numpy as np

    clusters: list[list[int]] = []
    by_step = [dict(zip(steps, mean, strict=True)) for steps, mean in series]
    for i, values in enumerate(by_step):
        for cluster in clusters:
            other = by_step[cluster[0]]
            gaps = [abs(v - other[s]) for s, v in values.items() if s in other]
            if gaps and all(g <= step / 2 for g in gaps if np.isfinite(g)):
                cluster.append(i)
                break
        else:
            clusters.append([i])
    shifts = [0.0] * len(series)
    for cluster in clusters:
        for k, i in enumerate(cluster):
            shifts[i] = (k - (len(cluster) - 1) / 2) * step
    return shifts


def plot_panels(panels: list[tuple[str, list[Curve]]], title: str, xlabel: str, path: Path) -> Any:
    """Side-by-side panels (y label, curves), saved to `path`; returns the figure. Each curve
    is its seeds' mean with a min–max band. Curves that lie on each other (several arms at 0 %
    exact accuracy) are shifted apart by a small fraction of the axis, later ones drawn
    thinner on top, so every one stays visible; the legend says by how much."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    labels = list(dict.fromkeys(c.label for _, curves in panels for c in curves))
    styles = {label: line_style(i) for i, label in enumerate(labels)}
    figure, axes = plt.subplots(
        1, len(panels), figsize=(4.8 * len(panels) + 2.6, 4.4), squeeze=False, layout="constrained"
    )
    banded, widest, shown = False, 0.0, set()
    for axis, (ylabel, curves) in zip(axes[0], panels, strict=True):
        drawn = []  # (curve, steps, seeds × steps values)
        for curve in curves:
            runs = [run for run in curve.runs if run]
            if runs:
                steps = sorted({x for run in runs for x, _ in run})
                grid = np.array([[dict(run).get(s, np.nan) for s in steps] for run in runs])
                drawn.append((curve, steps, grid))
        low = min((np.nanmin(g) for _, _, g in drawn), default=0.0)
        high = max((np.nanmax(g) for _, _, g in drawn), default=0.0)
        shifts = _coinciding_shifts(
            [(steps, np.nanmean(grid, axis=0)) for _, steps, grid in drawn],
            OFFSET_FRACTION * max(high - low, MIN_SPAN),
        )
        for i, ((curve, steps, grid), shift) in enumerate(zip(drawn, shifts, strict=True)):
            widest = max(widest, abs(shift))
            shown.add(curve.label)
            axis.plot(
                steps,
                np.nanmean(grid, axis=0) + shift,
                label=curve.label,
                linewidth=max(0.8, 2.4 - 0.2 * i),  # later lines thinner, drawn on top
                markersize=max(3.0, 7.0 - 0.5 * i),
                zorder=3 + i,
                **styles[curve.label],
            )
            if len(grid) > 1:
                banded = True
                axis.fill_between(
                    steps,
                    np.nanmin(grid, axis=0) + shift,
                    np.nanmax(grid, axis=0) + shift,
                    color=styles[curve.label]["color"],
                    alpha=0.12,
                    linewidth=0,
                    zorder=1,
                )
        if high - low < MIN_SPAN:
            bottom = min(low, max(0.0, (low + high - MIN_SPAN) / 2)) - 0.05 * MIN_SPAN
            axis.set_ylim(bottom, bottom + 1.1 * MIN_SPAN)
        axis.set_title(ylabel)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        axis.set_xlabel(xlabel)
        axis.set_ylabel(f"{ylabel} (%)")
        axis.grid(alpha=0.3)
    handles = [Line2D([], [], label=label, **styles[label]) for label in labels if label in shown]
    if banded:
        handles.append(Patch(color="0.5", alpha=0.3, label=BAND_NOTE))
    shifted = f"coinciding lines shifted ≤ ±{widest:.2g} pp to stay visible" if widest else None
    figure.legend(  # below the panels: beside them it would collide with a one-panel title
        handles=handles,
        loc="outside lower center",
        ncols=min(3, max(1, len(handles))),
        fontsize=7,
        title=shifted,
        title_fontsize=7,
    )
    figure.suptitle(title, fontsize=10)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return figure


def _figure_title(suite: Suite, tasks: list[str], execution: Execution) -> str:
    return f"{suite.title}\ntask {', '.join(tasks)}, {execution.scale_text()}"


def _metric_groups(rows: list[ArmRow]) -> dict[str, list[ArmRow]]:
    groups: dict[str, list[ArmRow]] = {}
    for row in rows:
        groups.setdefault(row.metric, []).append(row)
    return groups


def grid_figures(
    suite: Suite, execution: Execution, rows: list[ArmRow], series: dict, out: Path
) -> dict[str, tuple[Path, Any]]:
    """{name: (png, figure)}: against training step one panel per metric (pass@2 for ARC arms)
    and one of token accuracy; against supervision step (the last evaluation) one per metric."""
    title = _figure_title(suite, list(dict.fromkeys(r.task for r in rows)), execution)

    def curves(key: str, group: list[ArmRow]) -> list[Curve]:
        return [Curve(r.display, list(series[key].get(r.name, {}).values())) for r in group]

    groups = _metric_groups(rows)
    panels = [(metric_label(m), curves("metric", group)) for m, group in groups.items()]
    panels.append((metric_label(TOKEN_METRIC), curves("token", rows)))
    by_step = out / "accuracy_vs_step.png"
    figures = {"step": (by_step, plot_panels(panels, title, "training step", by_step))}

    def supervision(row: ArmRow) -> Curve:
        prefix = metric_name(f"eval/{row.metric}/step=")
        runs = [
            sorted(
                (int(k[len(prefix) :]), v * PERCENT)
                for k, v in metrics.items()
                if k.startswith(prefix) and k[len(prefix) :].isdigit()
            )
            for metrics in series["finals"].get(row.name, [])
        ]
        return Curve(row.display, runs)

    panels = [(metric_label(m), [supervision(r) for r in group]) for m, group in groups.items()]
    by_supervision = out / "accuracy_vs_supervision_step.png"
    last = f"{title}\nafter each supervision step, at the last evaluation"
    figures["supervision"] = (
        by_supervision,
        plot_panels(panels, last, "supervision step", by_supervision),
    )
    return figures


def search_figures(
    suite: Suite, execution: Execution, trials: list[SearchTrial], out: Path
) -> dict[str, tuple[Path, Any]]:
    """The suite's metric and token accuracy against training step, one curve per trial."""
    labels = [f"#{rank} {t.trial_id}" for rank, t in enumerate(trials, 1)]
    panels = [
        (
            metric_label(suite.metric),
            [Curve(lab, [t.history]) for lab, t in zip(labels, trials, strict=True)],
        ),
        (
            metric_label(TOKEN_METRIC),
            [Curve(lab, [t.token_history]) for lab, t in zip(labels, trials, strict=True)],
        ),
    ]
    title = _figure_title(suite, [suite.task], execution)
    path = out / "accuracy_vs_step.png"
    return {"step": (path, plot_panels(panels, title, "training step", path))}


# --- the report -------------------------------------------------------------------------------


def _public_uri(uri: str) -> str:
    """The tracking URI without a password (a postgres or http URI may carry one)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def where_to_look(out: Path, execution: Execution, tracking_uri: str) -> str:
    """Where the report and the runs are: the folder, the parent run and how to open the UI."""
    uri = _public_uri(tracking_uri)
    page = f"#/experiments/{execution.experiment_id}/runs/{execution.run_id}"
    if uri.startswith(("http://", "https://")):
        ui = f"MLflow UI: {uri.rstrip('/')}/{page}"
    else:
        ui = (
            f"MLflow UI: `mlflow ui --backend-store-uri {uri}`, then open "
            f"http://127.0.0.1:5000/{page}"
        )
    return f"Report folder: {out.resolve()}\nParent run: {execution.run_id}\n{ui}\n"


def _log_summary(tracker: Tracker, run_id: str, values: dict[str, float | None]) -> None:
    """Summary metrics on the parent run, so MLflow's compare view charts arms (or trials)
    without opening every child run."""
    from mlflow.entities import Metric

    clean = [(k, float(v)) for k, v in values.items() if v is not None]
    timestamp = int(1000 * time.time())
    metrics = [Metric(key, value, timestamp, 0) for key, value in clean]
    for start in range(0, len(metrics), 1000):  # MLflow takes 1000 metrics per batch
        tracker.client.log_batch(run_id, metrics=metrics[start : start + 1000])


def grid_summary(records: list[dict[str, Any]]) -> dict[str, float | None]:
    summary = {}
    for record in records:
        short = metric_label(record["metric"])
        summary.update(
            {
                _summary_key("summary", record["arm"], f"{short}_mean"): record["mean"],
                _summary_key("summary", record["arm"], f"{short}_ci_low"): record["ci_low"],
                _summary_key("summary", record["arm"], f"{short}_ci_high"): record["ci_high"],
                _summary_key("summary", record["arm"], "token_accuracy_mean"): record[
                    "token_accuracy"
                ],
                _summary_key("summary", record["arm"], "n"): record["n"],
            }
        )
    return summary


def search_summary(suite: Suite, trials: list[SearchTrial]) -> dict[str, float | None]:
    short = metric_label(suite.metric)
    summary: dict[str, float | None] = {}
    for trial in trials:
        summary[_summary_key("summary", trial.trial_id, short)] = trial.metric
        summary[_summary_key("summary", trial.trial_id, "token_accuracy")] = trial.token
        summary[_summary_key("summary", trial.trial_id, "steps")] = trial.steps
    best = best_trial(trials)
    summary[_summary_key("summary", "best", short)] = best.metric if best else None
    return summary


def _task_text(suite: Suite, tasks: list[str]) -> str:
    named = ", ".join(f"{task} ({metric_label(suite.metric_for(task))})" for task in tasks)
    return ("tasks " if len(tasks) > 1 else "task ") + named


FLOPS_NOTE = (
    "train FLOPs: one trial's model FLOPs, budget steps × batch × one training supervision "
    "step; test FLOPs/puzzle: halt_max_steps forward supervision steps of one sample (no early "
    "halting); both as trm_core.flops counts them (matmuls only, TRM_SPEC §7)."
)
SEQUENTIAL_NOTE = (
    "Seeds were added in rounds until the verdicts were decided (seeds=auto): every round "
    "looked at the intervals again, so the chance that some verdict is wrong is higher than "
    "one 95 % interval's 5 %; a verdict that became decided at the last round is the least "
    "sure."
)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def verdict_note(tolerance: float, comparable: bool) -> str:
    """The rule the verdict columns follow (orchestration.verdicts)."""
    tol = f"±{tolerance:g} points"
    text = (
        f"Verdicts (95 % intervals, tolerance {tol}, the suite's `tolerance`): verdict = the "
        "paper's number against our t-interval: reproduced if inside it and the interval's "
        f"half-width is at most {tolerance:g}, not reproduced if outside, else undecided; n/c "
        "below the paper's scale or with a declared override. Δ verdict = the direction of "
        "our Welch interval of Δ baseline against the sign of the paper's Δ (arm paper − "
        "baseline paper): same/opposite direction if it excludes 0 on the paper's/the other "
        f"side, no effect if it contains 0 and its half-width is at most {tolerance:g}, else "
        "undecided (lower/higher where the paper gives no Δ)"
    )
    if comparable:
        text += (
            "; before it, the paper's Δ against that interval by the first rule "
            "(reproduced / not reproduced / undecided)"
        )
    return text + "."


def seeds_auto_notes(
    rule: dict[str, int | None],
    rows: list[ArmRow],
    records: list[dict[str, Any]],
    baseline: str,
) -> list[str]:
    """How many seeds each arm got under seeds=auto and why it stopped (also written into
    `records` as seeds_run and seeds_stop), and the caveat of looking more than once."""
    states = arm_states(records, {row.name: row.runs for row in rows})
    maximum = rule.get("max")
    reasons = (
        stop_reasons(states, baseline, maximum)
        if maximum is not None
        else dict.fromkeys(states, UNDECIDED)
    )
    for record in records:
        record["seeds_run"] = states[record["arm"]].seeds
        record["seeds_stop"] = reasons[record["arm"]]
    per_arm = ", ".join(
        f"{row.label}: {_plural(states[row.name].seeds, 'seed')} ({reasons[row.name]})"
        for row in rows
    )
    first = rule.get("first")
    first = "the scale's or suite's count of seeds" if first is None else _plural(first, "seed")
    return [
        f"seeds=auto (first {first} per arm, then +{rule.get('add')} per round to the "
        f"arms still undecided, and to the baseline while a Δ baseline is, at most {maximum}): "
        f"seeds per arm and why they stopped: {per_arm}.",
        SEQUENTIAL_NOTE,
    ]


ARC_POOLED_NOTE = (
    "ARC pass@K: the votes pool over a run's evaluations up to the one reported, as the "
    "official evaluator (TRM_SPEC §4; runs tagged trm.eval_votes); a per-checkpoint vote is "
    "another statistic: `python -m orchestration.rescore protocol=arc_per_checkpoint`."
)


def _grid_report(suite: Suite, tracker: Tracker, run: str, out_base: Path) -> dict[str, Any]:
    parent, rows, series = collect(suite, tracker, run)
    execution = Execution.of(parent)
    tasks = list(dict.fromkeys(row.task for row in rows)) or [suite.task]
    caption = f"{suite.title} — {_task_text(suite, tasks)}, {execution.scale_text()}"
    overridden = [row.label for row in rows if row.declared_override]
    if overridden:
        caption += (
            f"; Δ paper n/c for {', '.join(overridden)}: run with a field the arm declares "
            "overridden (explicit opt-in)"
        )
    records = numbers(rows, execution.comparable, suite.baseline.name, suite.tolerance)
    if len(tasks) > 1:
        rendered = pivot(rows, tuple(tasks))
        notes = [
            "ours: mean ± 95 % Student-t half-width over seeds (n). The verdicts are in "
            "table.csv (verdict_paper, direction, verdict_delta_baseline)."
        ]
    else:
        rendered = table(rows, execution.comparable, suite.baseline.name, suite.tolerance)
        notes = [
            "ours: mean ± 95 % Student-t half-width over seeds (n). Δ baseline: arm − baseline "
            "with its 95 % Welch t-interval in brackets."
        ]
    notes.append(verdict_note(suite.tolerance, execution.comparable))
    notes.append(FLOPS_NOTE)
    if any(task in ARC_TASKS for task in tasks):
        notes.append(ARC_POOLED_NOTE)
    if execution.seeds_auto is not None:
        notes += seeds_auto_notes(execution.seeds_auto, rows, records, suite.baseline.name)
    out = out_base / execution.run_id
    out.mkdir(parents=True, exist_ok=True)
    figures = grid_figures(suite, execution, rows, series, out)
    images = [
        (figures["step"][0], f"Against training step: mean over seeds, {BAND_NOTE}."),
        (figures["supervision"][0], "Against supervision step, at the last evaluation."),
    ]
    return {
        "suite": suite,
        "execution": execution,
        "caption": caption,
        "rendered": rendered,
        "records": records,
        "notes": notes,
        "images": images,
        "out": out,
        "summary": grid_summary(records),
    }


def _search_report(suite: Suite, tracker: Tracker, run: str, out_base: Path) -> dict[str, Any]:
    parent, trials = collect_search(suite, tracker, run)
    execution = Execution.of(parent)
    if not trials:
        raise ValueError(f"the search execution {execution.run_id} has no trial runs yet")
    caption = (
        f"{suite.title} — {_task_text(suite, [suite.task])}, {execution.scale_text()}; "
        f"{len(trials)} trials ranked by {metric_label(suite.metric)}, one seed each"
    )
    out = out_base / execution.run_id
    out.mkdir(parents=True, exist_ok=True)
    figures = search_figures(suite, execution, trials, out)
    return {
        "suite": suite,
        "execution": execution,
        "caption": caption,
        "rendered": search_table(suite, trials),
        "records": search_numbers(suite, trials),
        "notes": search_notes(suite, execution, trials),
        "images": [(figures["step"][0], "Against training step, one curve per trial.")],
        "out": out,
        "summary": search_summary(suite, trials),
    }


def report(suite_name: str, tracking_uri: str, run: str = "latest", out: Path | None = None) -> str:
    """Write the report files, log them and summary metrics on the parent run; return the
    Markdown table followed by where to look next (report folder, parent run, MLflow UI)."""
    suite = load_suite(suite_name)
    tracker = Tracker(tracking_uri)
    parent, _ = _execution_runs(suite, tracker, run)
    # ablate tags the kind it ran: a search suite rerun at chosen values is a grid of seeds
    kind = parent.data.tags.get("trm.kind") or suite.kind
    build = _search_report if kind == "search" else _grid_report
    out = Path(out or Path(".trm") / "reports")
    # matplotlib's font cache goes beside the reports (.trm/cache), not into ~/.cache
    os.environ.setdefault("MPLCONFIGDIR", str(out.absolute().parent / "cache" / "matplotlib"))
    made = build(suite, tracker, parent.info.run_id, out)
    # the execution's trials re-scored under other protocols (orchestration.rescore), if any
    section = (
        None
        if kind == "search"
        else protocol_section(suite, tracker, parent.info.run_id, None, out)
    )
    if section:
        made["images"].append(
            (section["figure"], "Final score against total compute, per protocol (protocols.md).")
        )
    execution, caption, rendered = made["execution"], made["caption"], made["rendered"]
    footer = [
        f"Produced by: `{execution.command_text(suite)}`",
        f"Code: git commit {execution.commit or 'unknown (no trm.code tag on the run)'}",
        f"MLflow parent run {execution.run_id} at `{_public_uri(tracking_uri)}`",
    ]
    files = {
        "table.md": to_markdown(rendered, caption, made["notes"])
        + ("\n" + section["markdown"] if section else ""),
        "table.csv": to_csv(made["records"]),
        "table.html": to_html(rendered, caption, made["notes"], made["images"], footer),
        "table.tex": to_latex(rendered, caption),
    }
    for name, text in files.items():
        (made["out"] / name).write_text(text, encoding="utf-8")
    for path in sorted(made["out"].iterdir()):
        tracker.client.log_artifact(execution.run_id, str(path), "report")
    _log_summary(tracker, execution.run_id, made["summary"])
    return files["table.md"] + "\n" + where_to_look(made["out"], execution, tracking_uri)


def main(argv: list[str] | None = None) -> None:
    from orchestration.cli import fail, key_values, tracking_uri

    options = {"suite": None, "run": "latest", "tracking_uri": None, "out": None}
    options = key_values(argv, options, __doc__)
    try:
        uri = tracking_uri(options["tracking_uri"])
        print(report(options["suite"], uri, options["run"], options["out"]))
    except ValueError as err:
        fail(str(err))


if __name__ == "__main__":
    main()

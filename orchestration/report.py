"""Turn a suite's MLflow runs into the paper's table with our numbers beside the paper's.

    python -m orchestration.report suite=paper [run=latest|PARENT_RUN_ID] [tracking_uri=URI]
                                   [out=.trm/reports]

Per arm: paper | ours mean ± 95 % CI over seeds (n) | Δ vs paper (n/c below the paper's scale)
| Δ vs the baseline arm | token accuracy (mean) | params | depth | compute hours. Missing and
failed trials are shown as such, never dropped.
Writes Markdown, HTML, CSV and LaTeX plus plots (accuracy against training step per arm with
seed bands; accuracy against supervision step), logs them on the suite's parent run, and prints
the Markdown table. Intervals use Student's t with n − 1 degrees of freedom.
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestration.suite import Suite, load_suite
from orchestration.tracking import Tracker, default_tracking_uri, metric_name

PERCENT = 100.0


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
        if self.n < 2:
            return None
        from scipy.stats import t

        mean = self.mean
        std = math.sqrt(sum((v - mean) ** 2 for v in self.values) / (self.n - 1))
        return float(t.ppf(0.975, self.n - 1)) * std / math.sqrt(self.n)


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


def collect(suite: Suite, tracker: Tracker, run: str = "latest") -> tuple[Any, list[ArmRow], dict]:
    """(parent run, one row per arm, {"histories": {arm: {seed: [(step, %)]}}, "finals": {arm:
    [final metrics of each finished seed]}})."""
    import torch

    from trm_core import ModelConfig, RecursiveReasoningModel, count_parameters

    experiment = tracker.client.get_experiment_by_name(f"trm-lab/{suite.name}")
    if experiment is None:
        raise ValueError(f"no MLflow experiment trm-lab/{suite.name} at {tracker.uri}")
    parent = _parent_run(tracker, experiment.experiment_id, run)
    children = tracker.client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    seeds = int(parent.data.params.get("seeds", suite.seeds))
    rows, histories, finals = [], {}, {}
    for arm in suite.all_arms:
        task = suite.task_of(arm)
        metric = metric_name(f"eval/{suite.metric_for(task)}")
        row = ArmRow(
            arm.name,
            arm.label,
            arm.paper.get("accuracy"),
            seeds_expected=seeds,
            task=task,
            multi_task=len(suite.tasks) > 1,
        )
        for child in children:
            if child.data.tags.get("trm.arm") != arm.name:
                continue
            params = child.data.params
            row.label = child.data.tags.get("trm.label", row.label)
            if row.params is None and "model.hidden" in params:
                config = ModelConfig.from_dict(
                    {k[6:]: _parse(v) for k, v in params.items() if k.startswith("model.")}
                )
                with torch.device("meta"):
                    row.params = count_parameters(RecursiveReasoningModel(config))
                row.depth = config.depth
            row.device = child.data.tags.get("trm.device", row.device)
            row.compute_hours += child.data.metrics.get("wall_time_s", 0.0) / 3600
            if child.info.status == "FINISHED" and metric in child.data.metrics:
                row.values.append(child.data.metrics[metric] * PERCENT)
                if "eval/token_accuracy" in child.data.metrics:
                    row.token_values.append(child.data.metrics["eval/token_accuracy"] * PERCENT)
                finals.setdefault(arm.name, []).append(child.data.metrics)
                history = tracker.client.get_metric_history(child.info.run_id, metric)
                histories.setdefault(arm.name, {})[child.data.tags.get("trm.seed")] = [
                    (m.step, m.value * PERCENT) for m in sorted(history, key=lambda m: m.step)
                ]
            elif child.info.status == "FAILED":
                row.failed += 1
        rows.append(row)
    return parent, rows, {"histories": histories, "finals": finals}


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


def table(rows: list[ArmRow], comparable: bool = True) -> list[dict[str, str]]:
    """The rendered rows. `comparable=False` (a scale other than the paper's) prints Δ paper
    as n/c: a shrunk model on a shrunk task says nothing about the paper's number."""
    baseline = rows[0].mean
    out = []
    for row in rows:
        missing = row.seeds_expected - row.n - row.failed
        if row.mean is None:
            ours = "failed" if row.failed else "missing"
        else:
            ours = (
                f"{row.mean:.1f}"
                + (f" ± {row.half_width:.1f}" if row.half_width is not None else "")
                + f" (n={row.n})"
            )
        notes = []
        if row.failed:
            notes.append(f"{row.failed} failed")
        if missing > 0:
            notes.append(f"{missing} missing")
        unit = "GPU" if "cuda" in row.device else "CPU"
        out.append(
            {
                "arm": row.label,
                "paper": "—" if row.paper is None else f"{row.paper:.1f}",
                "ours": ours + (f" [{', '.join(notes)}]" if notes else ""),
                "Δ paper": (
                    "—"
                    if row.mean is None or row.paper is None
                    else f"{row.mean - row.paper:+.1f}"
                    if comparable
                    else "n/c"
                ),
                "Δ baseline": (
                    "—"
                    if row.mean is None or baseline is None or row is rows[0]
                    else f"{row.mean - baseline:+.1f}"
                ),
                # tells arms apart where exact accuracy is 0 for all (MINI_SCALE.md)
                "token acc": (
                    f"{sum(row.token_values) / len(row.token_values):.1f}"
                    if row.token_values
                    else "—"
                ),
                "params": "—" if row.params is None else f"{row.params / 1e6:.2f}M",
                "depth": "—" if row.depth is None else str(row.depth),
                "compute": f"{row.compute_hours:.2f} {unit}-h",
            }
        )
    return out


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


def to_markdown(rows: list[dict[str, str]], caption: str) -> str:
    header = list(rows[0])
    lines = [f"**{caption}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r[h] for h in header) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_html(rows: list[dict[str, str]], caption: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r.values()) + "</tr>" for r in rows
    )
    return (
        f"<table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>\n"
    )


def to_latex(rows: list[dict[str, str]], caption: str) -> str:
    def escape(text: str) -> str:
        return (
            text.replace("\\", "\\textbackslash{}")
            .replace("_", "\\_")
            .replace("%", "\\%")
            .replace("&", "\\&")
            .replace("#", "\\#")
            .replace("±", "$\\pm$")
            .replace("Δ", "$\\Delta$")
        )

    columns = "l" + "r" * (len(rows[0]) - 1)
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{escape(caption)}}}",
        f"\\begin{{tabular}}{{{columns}}}",
        "\\toprule",
        " & ".join(escape(h) for h in rows[0]) + " \\\\",
        "\\midrule",
    ]
    lines += [" & ".join(escape(v) for v in r.values()) + " \\\\" for r in rows]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _finish_figure(figure, axis, xlabel: str, metric: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    axis.set_xlabel(xlabel)
    axis.set_ylabel(f"{metric} (%)")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_histories(histories: dict, rows: list[ArmRow], path: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        seeds = histories.get(row.name, {})
        if not seeds:
            continue
        steps = sorted({s for series in seeds.values() for s, _ in series})
        grid = np.array([[dict(series).get(s, np.nan) for s in steps] for series in seeds.values()])
        mean = np.nanmean(grid, axis=0)
        axis.plot(steps, mean, label=row.display)
        if len(seeds) > 1:
            axis.fill_between(steps, np.nanmin(grid, axis=0), np.nanmax(grid, axis=0), alpha=0.2)
    _finish_figure(figure, axis, "training step", metric, path)


def plot_supervision_steps(
    children_metrics: dict[str, list[dict[str, float]]], rows: list[ArmRow], path: Path, metric: str
) -> None:
    """Final evaluation's accuracy after each supervision step (mean over seeds) per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        runs = children_metrics.get(row.name, [])
        if not runs:
            continue
        steps = sorted(
            int(k.rsplit("_", 1)[1]) for k in runs[0] if k.startswith(f"eval/{metric}/step_")
        )
        means = [
            sum(r.get(f"eval/{metric}/step_{s}", 0.0) for r in runs) / len(runs) * PERCENT
            for s in steps
        ]
        axis.plot(steps, means, marker="o", label=row.display)
    _finish_figure(figure, axis, "supervision step", metric, path)


def report(suite_name: str, tracking_uri: str, run: str = "latest", out: Path | None = None) -> str:
    """Write the report files, log them on the parent run, return the Markdown table."""
    suite = load_suite(suite_name)
    tracker = Tracker(tracking_uri)
    parent, rows, series = collect(suite, tracker, run)
    scale = parent.data.tags.get("trm.scale", "?")
    metrics = ", ".join(dict.fromkeys(suite.metric_for(task) for task in suite.tasks))
    caption = f"{suite.title} — {metrics}, scale {scale}" + (
        "" if scale == "paper" else " (not comparable to the paper)"
    )
    if len(suite.tasks) > 1:
        rendered = pivot(rows, suite.tasks)
    else:
        rendered = table(rows, comparable=scale == "paper")
    out = Path(out or Path(".trm") / "reports") / parent.info.run_id
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "table.md": to_markdown(rendered, caption),
        "table.csv": to_csv(rendered),
        "table.html": to_html(rendered, caption),
        "table.tex": to_latex(rendered, caption),
    }
    for name, text in files.items():
        (out / name).write_text(text)
    plot_histories(series["histories"], rows, out / "accuracy_vs_step.png", suite.metric)
    plot_supervision_steps(
        series["finals"], rows, out / "accuracy_vs_supervision_step.png", suite.metric
    )
    for path in sorted(out.iterdir()):
        tracker.client.log_artifact(parent.info.run_id, str(path), "report")
    return files["table.md"]


def main(argv: list[str] | None = None) -> None:
    options = {"suite": None, "run": "latest", "tracking_uri": None, "out": None}
    for item in sys.argv[1:] if argv is None else argv:
        key, sep, value = item.partition("=")
        if not sep or key not in options:
            print(
                f"error: expected key=value with key in {sorted(options)}, got {item!r}",
                file=sys.stderr,
            )
            raise SystemExit(2)
        options[key] = value
    if not options["suite"]:
        print("error: suite=NAME is required", file=sys.stderr)
        raise SystemExit(2)
    uri = (
        options["tracking_uri"]
        or os.environ.get("MLFLOW_TRACKING_URI")
        or default_tracking_uri(Path.cwd())
    )
    try:
        print(report(options["suite"], uri, options["run"], options["out"]))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

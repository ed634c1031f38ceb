"""The protocol section of a suite's report: each arm under each evaluation protocol and
checkpoint selection, with verdicts and compute (issue 12, parts 1, 3 and 4).

Reads the runs `orchestration.rescore` nested under the execution's trial runs (tag
`trm.rescored_execution` = the parent run). For every arm and protocol: the test score of the
final checkpoint, of the one best on the validation split and of the one best on test (the
last is chosen on the data it is scored on: shown only to expose the selection gap), as mean ±
95 % Student-t half-width over seeds; Δ baseline of the final score with its Welch interval;
the verdict against the paper's number (at the paper's scale only) and the direction of Δ
baseline against the paper's (orchestration/verdicts.py); the FLOPs of training and of
answering one test puzzle under the protocol. A plot puts every (arm, protocol) at its total
compute (training + answering the test set) against its final score, so "deeper at test
time" and "more training" sit on one axis.

    python -m orchestration.report suite=paper          # includes this section when rescored
    python -m orchestration.rescore suite=paper          # scores, then prints this section
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestration.protocols import SELECTION_LABELS, SELECTIONS
from orchestration.tracking import Tracker, metric_name
from orchestration.verdicts import (
    DEFAULT_TOLERANCE,
    difference_interval,
    direction,
    mean_interval,
    verdict,
)

PERCENT = 100.0


@dataclass
class ProtocolRow:
    arm: str
    label: str
    protocol: str
    protocol_label: str
    task: str
    metric: str
    paper: float | None
    values: dict[str, list[float]] = field(default_factory=dict)  # selection → % per seed
    steps: dict[str, list[float]] = field(default_factory=dict)  # selection → step per seed
    train_flops: list[float] = field(default_factory=list)
    test_flops_per_puzzle: float | None = None
    test_puzzles: float | None = None

    def mean(self, selection: str) -> float | None:
        values = self.values.get(selection) or []
        return sum(values) / len(values) if values else None

    @property
    def total_flops(self) -> float | None:
        if not self.train_flops or self.test_flops_per_puzzle is None:
            return None
        test = self.test_flops_per_puzzle * (self.test_puzzles or 0)
        return sum(self.train_flops) / len(self.train_flops) + test


def rescore_runs(tracker: Tracker, experiment_id: str, parent_run_id: str) -> list[Any]:
    from orchestration.rescore import EXECUTION_PARENT_TAG

    return tracker.client.search_runs(
        [experiment_id],
        f"tags.`{EXECUTION_PARENT_TAG}` = '{parent_run_id}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
    )


def collect(suite, tracker: Tracker, parent, protocols: list[str] | None) -> list[ProtocolRow]:
    """One row per (arm, protocol) that was scored, in suite then protocol order; where a
    (trial, protocol) was scored twice (force=true) the newer run counts."""
    runs = rescore_runs(tracker, parent.info.experiment_id, parent.info.run_id)
    from orchestration.rescore import RESCORED_RUN_TAG

    newest: dict[tuple[str, str, str], Any] = {}
    for run in runs:  # oldest first: later ones replace
        tags = run.data.tags
        newest[(tags["trm.arm"], tags[RESCORED_RUN_TAG], tags["trm.protocol"])] = run
    seen = list(dict.fromkeys(run.data.tags["trm.protocol"] for run in runs))
    order = [p for p in (protocols or seen) if p in seen]
    rows: dict[tuple[str, str], ProtocolRow] = {}
    for arm in suite.all_arms:
        for protocol in order:
            for (name, _, scored), run in newest.items():
                if name != arm.name or scored != protocol:
                    continue
                tags, metrics = run.data.tags, run.data.metrics
                task = tags.get("trm.task", suite.task_of(arm))
                metric = suite.metric_for(task)
                row = rows.setdefault(
                    (arm.name, protocol),
                    ProtocolRow(
                        arm.name,
                        tags.get("trm.label", arm.label),
                        protocol,
                        tags.get("trm.protocol_label", protocol),
                        task,
                        metric,
                        arm.paper.get("accuracy"),
                    ),
                )
                for selection in SELECTIONS:
                    value = metrics.get(metric_name(f"{selection}/{metric}"))
                    if value is not None:
                        row.values.setdefault(selection, []).append(value * PERCENT)
                        row.steps.setdefault(selection, []).append(metrics[f"{selection}/step"])
                if "train_flops" in metrics:
                    row.train_flops.append(metrics["train_flops"])
                row.test_flops_per_puzzle = metrics.get("test_flops_per_puzzle")
                row.test_puzzles = metrics.get("test_puzzles")
    return list(rows.values())


def _cell(values: list[float] | None) -> str:
    if not values:
        return "—"
    mean = sum(values) / len(values)
    interval = mean_interval(values)
    spread = f" ± {(interval[1] - interval[0]) / 2:.1f}" if interval else ""
    return f"{mean:.1f}{spread} (n={len(values)})"


def _flops(value: float | None) -> str:
    return "—" if value is None else f"{value:.2g}"


def records(
    rows: list[ProtocolRow], baseline: str, comparable: bool, tolerance: float
) -> list[dict[str, Any]]:
    """Numbers and verdicts per row (what the CSV holds and the table formats)."""
    bases = {(r.protocol, r.task): r for r in rows if r.arm == baseline}
    paper_base = {r.task: r.paper for r in rows if r.arm == baseline}
    out = []
    for row in rows:
        final = row.values.get("final") or []
        base = bases.get((row.protocol, row.task))
        is_base = row.arm == baseline
        delta = (
            None
            if is_base or base is None
            else difference_interval(final, base.values.get("final") or [])
        )
        paper_delta = (
            None
            if row.paper is None or paper_base.get(row.task) is None or is_base
            else row.paper - paper_base[row.task]
        )
        record = {
            "arm": row.arm,
            "label": row.label,
            "protocol": row.protocol,
            "task": row.task,
            "metric": row.metric,
            "paper": row.paper,
            "n": len(final),
            "verdict_paper": verdict(mean_interval(final), row.paper, tolerance)
            if comparable
            else "n/c",
            "delta_baseline_low": None if delta is None else delta[0],
            "delta_baseline_high": None if delta is None else delta[1],
            "verdict_delta": None
            if is_base or base is None
            else direction(delta, paper_delta, tolerance),
            "train_flops": sum(row.train_flops) / len(row.train_flops) if row.train_flops else None,
            "test_flops_per_puzzle": row.test_flops_per_puzzle,
            "total_flops": row.total_flops,
        }
        for selection in SELECTIONS:
            record[f"{selection}_mean"] = row.mean(selection)
            steps = row.steps.get(selection) or []
            record[f"{selection}_mean_step"] = sum(steps) / len(steps) if steps else None
        out.append(record)
    return out


def _rendered(rows: list[ProtocolRow], numbers: list[dict[str, Any]]) -> list[dict[str, str]]:
    out = []
    for row, record in zip(rows, numbers, strict=True):
        low, high = record["delta_baseline_low"], record["delta_baseline_high"]
        delta = "—"
        if record["verdict_delta"] is not None:
            mean_delta = None if low is None else (low + high) / 2
            delta = (
                f"{mean_delta:+.1f} [{low:+.1f}, {high:+.1f}]" if mean_delta is not None else "n<2"
            )
        out.append(
            {
                "arm": row.label,
                "protocol": row.protocol_label,
                **{
                    SELECTION_LABELS[s].split(" (")[0]: _cell(row.values.get(s)) for s in SELECTIONS
                },
                "Δ baseline (final)": delta,
                "verdict vs paper": record["verdict_paper"] or "—",
                "Δ direction vs paper": record["verdict_delta"] or "—",
                "train FLOPs": _flops(record["train_flops"]),
                "test FLOPs/puzzle": _flops(record["test_flops_per_puzzle"]),
            }
        )
    return out


def pivot(rows: list[ProtocolRow]) -> list[dict[str, str]]:
    """Arms × protocols, the final checkpoint's score: the overview."""
    protocols = list(dict.fromkeys((r.protocol, r.protocol_label) for r in rows))
    out = []
    for arm in dict.fromkeys((r.arm, r.label) for r in rows):
        line = {"arm": arm[1]}
        for protocol, _ in protocols:
            match = [r for r in rows if (r.arm, r.label) == arm and r.protocol == protocol]
            line[protocol] = _cell(match[0].values.get("final")) if match else "—"
        out.append(line)
    return out


def _markdown(rendered: list[dict[str, str]]) -> str:
    if not rendered:
        return ""
    keys = list(rendered[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(r[k] for k in keys) + " |" for r in rendered]
    return "\n".join(lines) + "\n"


def flops_figure(rows: list[ProtocolRow], title: str, path: Path) -> Path:
    """Final score against total compute, one line per arm through its protocols."""
    os.environ.setdefault("MPLCONFIGDIR", str(path.parent.parent.parent / "cache" / "matplotlib"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = "osD^vP*Xh"
    protocols = list(dict.fromkeys(r.protocol for r in rows))
    figure, axis = plt.subplots(figsize=(8.5, 5.2), layout="constrained")
    for i, arm in enumerate(dict.fromkeys(r.label for r in rows)):
        points = [
            (r.total_flops, r.mean("final"), r.protocol)
            for r in rows
            if r.label == arm and r.total_flops and r.mean("final") is not None
        ]
        if not points:
            continue
        points.sort()  # the line runs from the cheapest protocol to the dearest
        color = f"C{i % 10}"
        axis.plot([p[0] for p in points], [p[1] for p in points], color=color, alpha=0.5)
        for x, y, protocol in points:
            axis.plot(x, y, markers[protocols.index(protocol) % len(markers)], color=color)
        axis.plot([], [], color=color, label=arm)
    for j, protocol in enumerate(protocols):
        axis.plot([], [], markers[j % len(markers)], color="0.3", label=f"protocol: {protocol}")
    axis.set_xscale("log")
    axis.set_xlabel("total FLOPs: training + answering the test set (log)")
    axis.set_ylabel("test score of the final checkpoint (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    axis.set_title(title, fontsize=9)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def protocol_section(
    suite, tracker: Tracker, parent_run_id: str, protocols: list[str] | None, out_base: Path
) -> dict[str, Any] | None:
    """The section's Markdown, CSV and figure, written to out_base/<parent>/; None when the
    execution has not been rescored."""
    from orchestration.report import Execution

    parent = tracker.client.get_run(parent_run_id)
    rows = collect(suite, tracker, parent, protocols)
    if not rows:
        return None
    execution = Execution.of(parent)
    tolerance = getattr(suite, "tolerance", DEFAULT_TOLERANCE)
    numbers = records(rows, suite.baseline.name, execution.comparable, tolerance)
    out = out_base / parent_run_id
    out.mkdir(parents=True, exist_ok=True)
    caption = (
        f"**Protocols — {suite.title}, {execution.scale_text()}**: test score (%) per arm "
        "under each evaluation protocol and checkpoint selection, mean ± 95 % Student-t "
        "half-width over seeds (n), re-scored from the kept checkpoints by "
        "`orchestration.rescore` (no retraining)."
    )
    notes = [
        "Selections: *final* = the last evaluation's checkpoint (what the suite's table "
        "reports); *best on validation* = the checkpoint with the highest score on the "
        "validation split carved from train at build time (its test score is shown); *best "
        "on test* = chosen on the test split itself, optimistic, shown only to expose the "
        "selection gap.",
        f"Verdicts (95 % intervals, tolerance ±{tolerance:g} points): vs paper, *reproduced* "
        "when the paper's number lies inside our interval and its half-width is within the "
        "tolerance, *not reproduced* when outside, *undecided* otherwise (n/c below the "
        "paper's scale); Δ direction compares the sign of our Δ baseline interval with the "
        "paper's Δ (*no effect*: contains 0 within the tolerance).",
        "ARC rows: pass@K votes pooled over the run's checkpoints up to each one, as the "
        "official evaluator, unless the protocol says per_checkpoint.",
        "FLOPs (TRM_SPEC §7): train = steps × batch × one training supervision step; "
        "test/puzzle = test-time supervision steps × augmentations voted over × one forward "
        "supervision step.",
    ]
    markdown = "\n".join(
        [
            caption,
            "",
            "Final checkpoint, by protocol:",
            "",
            _markdown(pivot(rows)),
            "By protocol and selection:",
            "",
            _markdown(_rendered(rows, numbers)),
            *[f"- {n}" for n in notes],
            "",
        ]
    )
    figure = flops_figure(
        rows,
        f"{suite.title}: final score vs total compute, per protocol\n{execution.scale_text()}",
        out / "accuracy_vs_flops.png",
    )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(numbers[0]))
    writer.writeheader()
    writer.writerows(numbers)
    (out / "protocols.md").write_text(markdown, encoding="utf-8")
    (out / "protocols.csv").write_text(buffer.getvalue(), encoding="utf-8")
    return {"markdown": markdown, "records": numbers, "figure": figure, "out": out}


def protocol_report(
    suite, tracker: Tracker, parent_run_id: str, protocols: list[str] | None, out_base: Path
) -> str:
    """The section, logged on the parent run under report/, and where to look."""
    made = protocol_section(suite, tracker, parent_run_id, protocols, out_base)
    if made is None:
        return "no rescored trials in this execution\n"
    for name in ("protocols.md", "protocols.csv", "accuracy_vs_flops.png"):
        tracker.client.log_artifact(parent_run_id, str(made["out"] / name), "report")
    return made["markdown"] + f"\nProtocol report: {(made['out'] / 'protocols.md').resolve()}\n"

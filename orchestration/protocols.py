"""Evaluation protocols: how a trained checkpoint is scored (issue 12; TRM_SPEC §4).

The paper's protocol runs every test puzzle for all N_sup supervision steps with the EMA
weights, no early halting, no voting (Sudoku, Maze); ARC votes over the built augmented
versions and pools those votes over the evaluations of a run. Others move results by 10–40
points (§4, "Protocol effects"), so each is a named set of knobs, data in
`ablations/protocols/` (one file each), each knob defaulting to the paper's setting:

- `supervision_steps` / `supervision_factor`: N_sup at test (absolute, or × the trained N_sup);
- `halting`: `all` (run every step, the paper) or `q_head` (answer at the first step where the
  Q head says halt, the last step otherwise);
- `votes`: test-time augmentations voted over (Sudoku: digit relabelling and band/stack
  transforms; Maze: the dihedral group; ARC: the first K built versions, default all);
- `arc_votes`: `pooled` (votes accumulate over the checkpoints of a run, as the official
  evaluator) or `per_checkpoint`.

Which checkpoint is reported (final, best on the validation split, best on test) is not a knob:
`orchestration.rescore` reports all three for every protocol.

Scoring here is pure array code on `trm_core.trainer.Prediction`s, so a protocol is checked on a
tiny model without Ray or MLflow (tests/orchestration/test_protocols.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from orchestration.suite import SUITE_DIR

PROTOCOL_DIR = SUITE_DIR / "protocols"  # one file per protocol (not a suite)
HALTING = ("all", "q_head")
ARC_VOTES = ("pooled", "per_checkpoint")
SELECTIONS = ("final", "best_validation", "best_test")
SELECTION_LABELS = {
    "final": "final",
    "best_validation": "best on validation",
    "best_test": "best on test (selected on test: optimistic)",
}
IGNORE_LABEL = -100
ARC_TASKS = ("arc1", "arc2")


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol; every default is the paper's setting (module docstring)."""

    name: str
    label: str
    supervision_steps: int | None = None  # None: as trained (model.halt_max_steps)
    supervision_factor: int = 1  # × the trained N_sup, when supervision_steps is None
    halting: str = "all"
    votes: int | None = None  # None: the paper's (1; ARC: every built version)
    vote_seed: int = 0  # seeds the drawn test-time augmentations
    arc_votes: str = "pooled"

    def steps(self, trained: int) -> int:
        """N_sup at test for a model trained with `trained` supervision steps."""
        return self.supervision_steps or trained * self.supervision_factor

    def samples(self, task: str) -> int:
        """Augmented copies voted over per test puzzle (not ARC, which votes over versions)."""
        return 1 if task in ARC_TASKS else (self.votes or 1)

    def knobs(self) -> dict[str, Any]:
        """The fields that decide a score: params of the protocol's runs, and its digest."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("name", "label")}

    @property
    def digest(self) -> str:
        text = json.dumps(self.knobs(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


FIELDS = {f.name for f in dataclasses.fields(Protocol)}


def _protocol(where: str, name: str, raw: Any) -> Protocol:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: protocol {name!r} is a mapping of {sorted(FIELDS - {'name'})}")
    unknown = sorted(set(raw) - (FIELDS - {"name"}))
    if unknown:
        raise ValueError(
            f"{where}: protocol {name!r} has unknown field(s) {unknown}; "
            f"allowed: {sorted(FIELDS - {'name'})}"
        )
    protocol = Protocol(name=name, **{"label": name, **raw})

    def positive(field: str, value: Any, none_ok: bool) -> None:
        if value is None and none_ok:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"{where}: protocol {name!r} {field}={value!r}: give an integer >= 1"
                + (" or null (the paper's setting)" if none_ok else "")
            )

    positive("supervision_steps", protocol.supervision_steps, True)
    positive("supervision_factor", protocol.supervision_factor, False)
    positive("votes", protocol.votes, True)
    if protocol.supervision_steps is not None and protocol.supervision_factor != 1:
        raise ValueError(
            f"{where}: protocol {name!r} sets both supervision_steps and supervision_factor; "
            "give one (an absolute N_sup at test, or a multiple of the trained one)"
        )
    for field, allowed in (("halting", HALTING), ("arc_votes", ARC_VOTES)):
        if getattr(protocol, field) not in allowed:
            raise ValueError(
                f"{where}: protocol {name!r} {field}={getattr(protocol, field)!r}; "
                f"allowed: {list(allowed)}"
            )
    return protocol


def load_protocols(directory: Path = PROTOCOL_DIR) -> tuple[dict[str, Protocol], list[str]]:
    """(every protocol by name: the files of `directory`, the name being the file's stem; the
    names run when none is asked for: those whose file says `default: true`)."""
    protocols, default = {}, []
    for path in sorted(directory.glob("*.yaml")):
        where = str(path)
        try:
            with open(path) as stream:
                raw = yaml.safe_load(stream)
        except yaml.YAMLError as err:
            raise ValueError(f"{where} is not valid YAML: {err}") from None
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: a protocol file is a mapping of its fields")
        raw = dict(raw)
        is_default = raw.pop("default", False)
        if not isinstance(is_default, bool):
            raise ValueError(f"{where}: default={is_default!r}: give true or false")
        protocols[path.stem] = _protocol(where, path.stem, raw)
        if is_default:
            default.append(path.stem)
    if not protocols:
        raise ValueError(f"no protocol files (*.yaml) in {directory}")
    default.sort(key=lambda name: (name != "paper", name))  # the paper's protocol first
    return protocols, default or sorted(protocols)[:1]


def select(names: Sequence[str] | None, directory: Path = PROTOCOL_DIR) -> list[Protocol]:
    """The protocols `names` asks for (default: those marked `default: true`), validated."""
    protocols, default = load_protocols(directory)
    chosen = list(names or default)
    unknown = [n for n in chosen if n not in protocols]
    if unknown:
        raise ValueError(
            f"unknown protocol(s) {unknown}; the protocols are {sorted(protocols)} "
            f"(files in {directory})"
        )
    return [protocols[n] for n in dict.fromkeys(chosen)]


# --- scoring ----------------------------------------------------------------------------------


def answer_steps(halts: np.ndarray, steps: int, halting: str) -> np.ndarray:
    """Per row, the index of the supervision step whose prediction is the answer: the last of
    `steps` (halting=all), or the first where the Q head says halt (halting=q_head)."""
    last = np.full(halts.shape[1], steps - 1, dtype=np.int64)
    if halting == "all":
        return last
    window = np.asarray(halts[:steps], dtype=bool)
    return np.where(window.any(0), window.argmax(0), last)


def vote(candidates: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """The answer per row among K candidate grids [K, B, L]: the grid given most often, ties by
    mean confidence (σ(q_halt)) of its copies, then by the lower candidate index (the identity
    first), as the official ARC vote ranks (§4)."""
    k = candidates.shape[0]
    if k == 1:
        return candidates[0]
    same = (candidates[:, None] == candidates[None, :]).all(-1)  # [K, K, B]
    counts = same.sum(1)  # [K, B]
    mean_q = (same * confidence[None, :, :]).sum(1) / counts
    order = np.lexsort((np.arange(k)[:, None].repeat(counts.shape[1], 1), -mean_q, -counts), 0)
    best = order[0]  # [B]
    return np.take_along_axis(candidates, best[None, :, None], 0)[0]


class ExactScorer:
    """Exact and token accuracy of one protocol's answers (Sudoku, Maze): a puzzle counts only
    when every label token is right (§4)."""

    def __init__(self, protocol: Protocol, trained_steps: int):
        self.protocol, self.steps = protocol, protocol.steps(trained_steps)
        self.count = self.exact = 0
        self.token = 0.0

    def update(self, batch: Mapping[str, np.ndarray], answers: Sequence[np.ndarray]) -> None:
        """`answers`: per transform, the de-augmented answer grid [B, L] and its confidence [B]
        (see `rescore`); the protocol votes over its first `votes` of them."""
        voted = answers[: self.protocol.votes or 1]
        grids = np.stack([grid for grid, _ in voted])
        confidence = np.stack([q for _, q in voted])
        chosen = vote(grids, confidence)
        labels = np.asarray(batch["labels"])
        valid = labels != IGNORE_LABEL
        counts = valid.sum(-1)
        rows = counts > 0  # padding rows have no label
        right = (chosen == labels) & valid
        self.count += int(rows.sum())
        self.exact += int(((right.sum(-1) == counts) & rows).sum())
        self.token += float((right.sum(-1)[rows] / counts[rows]).sum())

    def compute(self) -> dict[str, float]:
        n = max(self.count, 1)
        return {
            "exact_accuracy": self.exact / n,
            "token_accuracy": self.token / n,
            "count": self.count,
        }


class ArcScorer:
    """ARC pass@K of one protocol: datasets.arc.ArcVoting over the first `votes` built versions
    (all by default), pooled over checkpoints unless `arc_votes=per_checkpoint`."""

    def __init__(self, protocol: Protocol, trained_steps: int, manifest: Mapping[str, Any]):
        from datasets.arc import ArcVoting

        self.protocol, self.steps = protocol, protocol.steps(trained_steps)
        self.voting = ArcVoting(test_pairs_per_task=manifest["arc"]["test_pairs_per_task"])

    def update(self, batch: Mapping[str, np.ndarray], answers: Sequence[np.ndarray]) -> None:
        grid, confidence = answers[0]
        valid = np.asarray(batch["labels"] != IGNORE_LABEL).any(-1)
        if self.protocol.votes is not None:
            valid &= np.asarray(batch["arc_version"]) < self.protocol.votes
        self.voting.update(batch, grid, confidence, valid)

    def compute(self) -> dict[str, float]:
        return self.voting.compute()


def scorer(protocol: Protocol, task: str, trained_steps: int, manifest: Mapping[str, Any]):
    if task in ARC_TASKS:
        return ArcScorer(protocol, trained_steps, manifest)
    return ExactScorer(protocol, trained_steps)


def selections(
    test: list[tuple[int, float]], validation: list[tuple[int, float]] | None
) -> dict[str, tuple[int, float] | None]:
    """{selection: (checkpoint step, test score)} from per-checkpoint (step, score) lists:
    the final checkpoint, the best on validation (its *test* score; ties → the later
    checkpoint), the best on test (optimistic: chosen on the data it is scored on)."""
    if not test:
        return dict.fromkeys(SELECTIONS)
    by_step = dict(test)
    final = max(by_step)
    best_test = max(test, key=lambda item: (item[1], item[0]))
    best_validation = None
    if validation:
        step = max(validation, key=lambda item: (item[1], item[0]))[0]
        best_validation = (step, by_step[step]) if step in by_step else None
    return {
        "final": (final, by_step[final]),
        "best_validation": best_validation,
        "best_test": best_test,
    }

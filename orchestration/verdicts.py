"""Intervals over seeds and the verdicts read from them: one place for the rule.

    from orchestration.verdicts import mean_interval, difference_interval, verdict, direction
    ours = mean_interval([90.0, 89.6, 90.8])               # 95 % Student-t interval of the mean
    delta = difference_interval(arm_values, base_values)   # 95 % Welch interval of arm − base
    verdict(ours, 87.4, tolerance=2.0)                     # against the paper's number
    direction(delta, paper_delta=-31.9, tolerance=2.0)     # the ablation's direction

The rule (the tolerance is a half-width in percentage points, the suite file's `tolerance`):
- `verdict(interval, reference)`: NOT_REPRODUCED when the reference lies outside the interval;
  REPRODUCED when inside and the interval's half-width is at most the tolerance (narrow enough
  to say the number is within ±tolerance of ours); otherwise UNDECIDED (also without an
  interval: below two values). None when there is no reference (nothing to compare with).
- `direction(interval, paper_delta)`: SAME when the interval excludes 0 on the paper's side,
  OPPOSITE when it excludes 0 on the other side, NO_EFFECT when it contains 0 and its
  half-width is at most the tolerance, otherwise UNDECIDED. Without a paper Δ (or a paper Δ of
  exactly 0, which has no side) an interval excluding 0 is LOWER or HIGHER.
- An arm is decided (`decided`) when none of the verdicts that apply to it is UNDECIDED;
  `seeds=auto` (orchestration.ablate) adds seeds in rounds to the arms that are not
  (`seeds_to_add`), and to the baseline while any Δ baseline is undecided.
Endpoints count as inside an interval. The intervals are 95 % two-sided.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

REPRODUCED, NOT_REPRODUCED, UNDECIDED = "reproduced", "not reproduced", "undecided"
SAME, OPPOSITE, NO_EFFECT = "same direction", "opposite direction", "no effect"
LOWER, HIGHER = "lower", "higher"  # a direction without a paper Δ to compare with
DEFAULT_TOLERANCE = 2.0  # points: the suite file's `tolerance` when it sets none
CONFIDENCE = 0.95
DECIDED, MAX_REACHED = "decided", "max reached"  # why seeds=auto stopped adding seeds to an arm


def t_quantile(dof: float) -> float:
    """The two-sided 95 % Student-t quantile (0.975) for `dof` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + CONFIDENCE / 2, dof))


def mean_var(values: list[float]) -> tuple[float, float]:
    """(mean, unbiased sample variance); needs two values."""
    mean = sum(values) / len(values)
    return mean, sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def mean_half_width(values: list[float]) -> float | None:
    """Half-width of the 95 % Student-t interval of the mean (n − 1 degrees of freedom);
    None below two values."""
    if len(values) < 2:
        return None
    return t_quantile(len(values) - 1) * math.sqrt(mean_var(values)[1] / len(values))


def mean_interval(values: list[float]) -> tuple[float, float] | None:
    """95 % Student-t interval of the mean of `values` (one per seed); None below 2 values."""
    half = mean_half_width(values)
    if half is None:
        return None
    mean = sum(values) / len(values)
    return mean - half, mean + half


def difference_interval(a: list[float], b: list[float]) -> tuple[float, float] | None:
    """95 % Welch t-interval of mean(a) − mean(b), Welch–Satterthwaite degrees of freedom;
    None below two values on either side (no variance to estimate)."""
    if len(a) < 2 or len(b) < 2:
        return None
    (mean_a, var_a), (mean_b, var_b) = mean_var(a), mean_var(b)
    se_a, se_b = var_a / len(a), var_b / len(b)
    delta = mean_a - mean_b
    if se_a + se_b == 0:  # every seed equal on both sides (e.g. all at 0 %): no spread
        return delta, delta
    dof = (se_a + se_b) ** 2 / (se_a**2 / (len(a) - 1) + se_b**2 / (len(b) - 1))
    half = t_quantile(dof) * math.sqrt(se_a + se_b)
    return delta - half, delta + half


def half_width(interval: tuple[float, float]) -> float:
    return (interval[1] - interval[0]) / 2


def check_tolerance(tolerance: object, where: str = "tolerance") -> float:
    """The tolerance as a float, or a ValueError saying what is allowed."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
        raise ValueError(
            f"{where}={tolerance!r} is not allowed; give a number of points > 0 (the largest "
            f"95 % half-width at which a verdict is decided; default {DEFAULT_TOLERANCE})"
        )
    if not math.isfinite(tolerance) or tolerance <= 0:
        raise ValueError(
            f"{where}={tolerance!r} is not allowed; give a finite number of points > 0 (the "
            f"largest 95 % half-width at which a verdict is decided; default {DEFAULT_TOLERANCE})"
        )
    return float(tolerance)


def verdict(
    interval: tuple[float, float] | None, reference: float | None, tolerance: float
) -> str | None:
    """Our interval against a reference number (the paper's accuracy, or the paper's Δ):
    None without a reference; NOT_REPRODUCED if the reference lies outside the interval;
    REPRODUCED if inside and the half-width is <= tolerance; else UNDECIDED (also without an
    interval)."""
    if reference is None:
        return None
    if interval is None:
        return UNDECIDED
    low, high = interval
    if reference < low or reference > high:
        return NOT_REPRODUCED
    return REPRODUCED if half_width(interval) <= tolerance else UNDECIDED


def direction(
    interval: tuple[float, float] | None, paper_delta: float | None, tolerance: float
) -> str:
    """The ablation's direction from our Δ interval (arm − baseline): SAME / OPPOSITE when the
    interval excludes 0 on the paper Δ's side / the other side; NO_EFFECT when it contains 0
    and its half-width is <= tolerance; else UNDECIDED (also without an interval). Without a
    paper Δ (or one of exactly 0): LOWER / HIGHER / NO_EFFECT / UNDECIDED."""
    if interval is None:
        return UNDECIDED
    low, high = interval
    if low <= 0 <= high:
        return NO_EFFECT if half_width(interval) <= tolerance else UNDECIDED
    ours = HIGHER if low > 0 else LOWER
    if paper_delta is None or paper_delta == 0:
        return ours
    return SAME if (ours == HIGHER) == (paper_delta > 0) else OPPOSITE


def decided(arm_verdicts: Iterable[str | None]) -> bool:
    """Whether an arm is decided: none of the verdicts that apply to it is UNDECIDED (None is
    a verdict that does not apply: no paper number, n/c, the baseline's own Δ)."""
    return all(v != UNDECIDED for v in arm_verdicts)


@dataclass(frozen=True)
class ArmState:
    """What the round rule needs to know of one arm after a round."""

    verdicts: dict[str, str | None]  # name → every verdict that applies (None: does not apply)
    seeds: int  # seeds run so far (finished, failed or lost: each took a seed)

    @property
    def decided(self) -> bool:
        return decided(self.verdicts.values())

    @property
    def undecided(self) -> list[str]:
        """The names of its verdicts that are UNDECIDED."""
        return [name for name, v in self.verdicts.items() if v == UNDECIDED]


DELTA_DIRECTION = "Δ direction"  # the name of an arm's Δ-baseline direction in `verdicts`


def wanting(states: Mapping[str, ArmState], baseline: str) -> dict[str, str]:
    """{arm: why it needs more seeds}, in the order of `states`: arms not decided (their
    undecided verdicts named), and the baseline while any arm's Δ-baseline direction is
    undecided (every Δ interval depends on the baseline's seeds too)."""
    delta_open = [
        name for name, s in states.items() if s.verdicts.get(DELTA_DIRECTION) == UNDECIDED
    ]
    out = {}
    for name, state in states.items():
        reasons = [f"{v} undecided" for v in state.undecided]
        if name == baseline and delta_open:
            reasons.append(f"baseline of the undecided Δ of {', '.join(delta_open)}")
        if reasons:
            out[name] = "; ".join(reasons)
    return out


def seeds_to_add(
    states: Mapping[str, ArmState], baseline: str, add: int, maximum: int
) -> dict[str, int]:
    """{arm: seeds to add next round}, in the order of `states`: `add` seeds (fewer where that
    would pass `maximum`) to every arm `wanting` more; empty when none is wanted below the
    maximum (the rounds are over)."""
    out = {}
    for name in wanting(states, baseline):
        more = min(add, maximum - states[name].seeds)
        if more > 0:
            out[name] = more
    return out


def stop_reasons(states: Mapping[str, ArmState], baseline: str, maximum: int) -> dict[str, str]:
    """{arm: why seeds=auto stopped adding seeds to it}: DECIDED when it wanted no more,
    MAX_REACHED when it still did but had `maximum` seeds; "undecided" when it still did below
    the maximum (the rounds were cut short: a crashed driver, or a report read mid-run)."""
    wanted = wanting(states, baseline)
    return {
        name: DECIDED
        if name not in wanted
        else (MAX_REACHED if state.seeds >= maximum else UNDECIDED)
        for name, state in states.items()
    }

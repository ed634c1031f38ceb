"""The interval math and the verdict rule of orchestration/verdicts.py on hand-computed cases:
the 95 % t-interval of a mean, the Welch interval of a difference (checked against scipy),
each verdict and direction at and around its boundaries, and what counts as decided."""

import math

import pytest

from orchestration.verdicts import (
    HIGHER,
    LOWER,
    NO_EFFECT,
    NOT_REPRODUCED,
    OPPOSITE,
    REPRODUCED,
    SAME,
    UNDECIDED,
    check_tolerance,
    decided,
    difference_interval,
    direction,
    mean_interval,
    verdict,
)

T_975 = {1: 12.7062047, 2: 4.3026527, 4: 2.7764451}  # Student-t quantiles from tables


def test_mean_interval_is_the_95_percent_t_interval_and_needs_two_values():
    # 50, 60, 70: mean 60, s = 10, n = 3 → 60 ± 4.3026527 · 10 / √3
    low, high = mean_interval([50.0, 60.0, 70.0])
    half = T_975[2] * 10 / math.sqrt(3)
    assert (low, high) == pytest.approx((60 - half, 60 + half))
    # 40, 45: s = √12.5, n = 2 → ± 12.7062 · √12.5 / √2 = ± 31.77
    assert mean_interval([40.0, 45.0]) == pytest.approx((42.5 - 31.7655, 42.5 + 31.7655), abs=1e-3)
    assert mean_interval([1.0]) is None and mean_interval([]) is None
    assert mean_interval([0.0, 0.0, 0.0]) == (0.0, 0.0)


def test_difference_interval_is_welch_and_matches_scipy():
    from scipy import stats

    a, b = [81.0, 84.5, 79.0, 88.0], [70.0, 90.0, 75.5]
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert difference_interval(a, b) == pytest.approx((expected.low, expected.high))
    # equal spreads, n = 3 each: se² = 2 · 0.16/3, dof = 4 → ± 2.7764451 · √0.10667
    low, high = difference_interval([86.0, 86.4, 86.8], [87.0, 87.4, 87.8])
    half = T_975[4] * math.sqrt(2 * 0.16 / 3)
    assert (low, high) == pytest.approx((-1.0 - half, -1.0 + half))
    assert difference_interval([1.0], [2.0, 3.0]) is None
    assert difference_interval([5.0, 5.0], [2.0, 2.0]) == (3.0, 3.0)  # no spread


@pytest.mark.parametrize(
    "interval, reference, expected",
    [
        ((86.4, 88.4), 87.4, REPRODUCED),  # inside, half-width 1.0 ≤ 2
        ((85.4, 89.4), 89.4, REPRODUCED),  # on the edge counts as inside; half-width 2.0 ≤ 2
        ((85.0, 89.5), 87.4, UNDECIDED),  # inside but half-width 2.25 > 2
        ((52.1, 117.9), 82.4, UNDECIDED),
        ((-1.5, 3.5), 55.0, NOT_REPRODUCED),  # outside, above
        ((88.4, 90.4), 79.9, NOT_REPRODUCED),  # outside, below, however narrow
        ((0.0, 100.0), 200.0, NOT_REPRODUCED),  # outside even when wide
        (None, 87.4, UNDECIDED),  # fewer than two seeds: no interval
        ((86.4, 88.4), None, None),  # nothing to compare with
        (None, None, None),
    ],
)
def test_verdict(interval, reference, expected):
    assert verdict(interval, reference, 2.0) == expected


@pytest.mark.parametrize(
    "interval, paper_delta, expected",
    [
        ((-1.9, -0.1), -1.3, SAME),  # excludes 0 below, the paper's Δ is below
        ((1.1, 2.9), 5.0, SAME),
        ((1.1, 2.9), -7.5, OPPOSITE),  # above 0, the paper's below
        ((-88.5, -84.3), 32.4, OPPOSITE),
        ((-40.0, -30.0), -1.0, SAME),  # however wide: the side decides
        ((-0.7, 1.1), -13.7, NO_EFFECT),  # holds 0, half-width 0.9 ≤ 2
        ((-2.0, 2.0), -13.7, NO_EFFECT),  # half-width exactly the tolerance
        ((-2.0, 2.1), -13.7, UNDECIDED),  # holds 0, half-width 2.05 > 2
        ((0.0, 3.0), 1.0, NO_EFFECT),  # 0 on the edge is not excluded; half-width 1.5 ≤ 2
        ((0.0, 5.0), 1.0, UNDECIDED),  # 0 on the edge, half-width 2.5 > 2
        (None, -1.3, UNDECIDED),
        ((-1.9, -0.1), None, LOWER),  # no paper Δ: the side only
        ((1.1, 2.9), None, HIGHER),
        ((1.1, 2.9), 0.0, HIGHER),  # a paper Δ of 0 has no side
        ((-0.5, 0.5), None, NO_EFFECT),
        ((-39.2, 4.2), None, UNDECIDED),
        (None, None, UNDECIDED),
    ],
)
def test_direction(interval, paper_delta, expected):
    assert direction(interval, paper_delta, 2.0) == expected


def test_the_tolerance_sets_how_narrow_an_interval_must_be():
    assert verdict((85.0, 89.5), 87.4, 2.0) == UNDECIDED
    assert verdict((85.0, 89.5), 87.4, 2.5) == REPRODUCED
    assert direction((-2.0, 2.1), -1.0, 2.5) == NO_EFFECT


def test_decided_ignores_verdicts_that_do_not_apply():
    assert decided([REPRODUCED, SAME])
    assert decided([None, NO_EFFECT])  # n/c against the paper; the direction is decided
    assert decided([NOT_REPRODUCED, OPPOSITE])  # decided, whatever it says
    assert decided([None, None]) and decided([])  # nothing to decide: the baseline below scale
    assert decided([None, LOWER]) and decided([HIGHER])
    assert not decided([REPRODUCED, UNDECIDED])
    assert not decided([UNDECIDED, None])


@pytest.mark.parametrize("bad", [0, -1.5, "2", True, None, float("nan"), float("inf")])
def test_a_tolerance_that_is_not_a_positive_number_is_refused(bad):
    with pytest.raises(ValueError, match=r"give a (finite )?number of points > 0"):
        check_tolerance(bad, "ablations/x.yaml: tolerance")
    assert check_tolerance(2) == 2.0 and check_tolerance(0.5) == 0.5


def test_a_suite_files_tolerance_is_read_and_checked(tmp_path):
    from orchestration.suite import SUITE_DIR, load_suite

    for name in ("paper", "paper_latents", "paper_depth", "main"):
        assert load_suite(name).tolerance == 2.0  # set explicitly in the file
    assert load_suite("smoke").tolerance == 2.0  # the default
    text = (SUITE_DIR / "smoke.yaml").read_text()
    (tmp_path / "smoke.yaml").write_text(text.replace("metric:", "tolerance: 0.5\nmetric:", 1))
    assert load_suite("smoke", tmp_path).tolerance == 0.5
    for bad in ("0", "-1", "two", "true", "null"):
        (tmp_path / "smoke.yaml").write_text(
            text.replace("metric:", f"tolerance: {bad}\nmetric:", 1)
        )
        with pytest.raises(ValueError, match=r"smoke.yaml: tolerance=.* is not allowed; give a"):
            load_suite("smoke", tmp_path)

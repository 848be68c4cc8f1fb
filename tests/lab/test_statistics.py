"""Welch's t-interval against a hand computation and Student-t quantiles against a table."""

from __future__ import annotations

import math

import pytest

from imbalance.lab.statistics import (
    mean_interval,
    point_interval,
    student_t_cdf,
    student_t_quantile,
    welch_interval,
)

# t_{0.975, df} from a printed table
TABLE = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 10: 2.2281, 30: 2.0423}


@pytest.mark.parametrize(("df", "t"), TABLE.items())
def test_quantiles_match_the_table(df, t):
    assert student_t_quantile(0.975, df) == pytest.approx(t, abs=1e-4)
    assert student_t_cdf(t, df) == pytest.approx(0.975, abs=1e-5)
    assert student_t_quantile(0.025, df) == pytest.approx(-t, abs=1e-4)


def test_the_quantile_tends_to_the_normal_one():
    assert student_t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-4)
    assert student_t_cdf(0.0, 3.7) == pytest.approx(0.5)


def test_welch_interval_by_hand():
    a, b = [0.30, 0.32, 0.34, 0.33, 0.31], [0.28, 0.29, 0.27]
    ma, mb = sum(a) / 5, sum(b) / 3
    va = sum((x - ma) ** 2 for x in a) / 4
    vb = sum((x - mb) ** 2 for x in b) / 2
    se = math.sqrt(va / 5 + vb / 3)
    df = (va / 5 + vb / 3) ** 2 / ((va / 5) ** 2 / 4 + (vb / 3) ** 2 / 2)
    w = welch_interval(a, b)
    assert (w.difference, w.stderr, w.df) == pytest.approx((ma - mb, se, df))
    # df = 5.98...: between the table's 5 and 10; the half width is t * se
    assert TABLE[10] < (w.high - w.difference) / se < TABLE[5]
    assert w.low == pytest.approx(2 * w.difference - w.high)
    assert w.verdict == "higher"
    assert welch_interval(b, a).verdict == "lower"
    assert welch_interval([0.3, 0.31, 0.29], [0.3, 0.32, 0.28]).verdict == "inconclusive"


def test_bad_input_raises():
    with pytest.raises(ValueError, match="two values"):
        welch_interval([0.3], [0.2, 0.3])
    with pytest.raises(ValueError, match="finite"):
        welch_interval([0.3, float("nan")], [0.2, 0.3])
    with pytest.raises(ValueError, match="level"):
        welch_interval([0.3, 0.4], [0.2, 0.3], level=1.0)
    with pytest.raises(ValueError, match="p must"):
        student_t_quantile(1.0, 3)
    same = welch_interval([0.3, 0.3], [0.2, 0.2])
    assert (same.low, same.high, same.verdict) == (pytest.approx(0.1), pytest.approx(0.1),
                                                   "higher")


def test_mean_interval_by_hand():

    values = [0.50, 0.52, 0.55]
    mean = sum(values) / 3
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    m, low, high = mean_interval(values)
    assert m == pytest.approx(mean)
    assert high - m == pytest.approx(TABLE[2] * s / math.sqrt(3), rel=1e-4)
    assert m - low == pytest.approx(high - m)
    with pytest.raises(ValueError, match="two finite"):
        mean_interval([0.5])


def test_point_interval_is_the_mean_interval_or_a_lone_point() -> None:
    values = [0.30, 0.34, 0.35]
    assert point_interval(values) == mean_interval(values)
    assert point_interval([0.4]) == (0.4, 0.4, 0.4)
    with pytest.raises(ValueError, match="finite"):
        point_interval([float("nan")])
    with pytest.raises(ValueError):
        point_interval([])

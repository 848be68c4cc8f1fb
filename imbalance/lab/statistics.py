"""Welch's t-interval on the difference of two means over seeds, the book's verdicts.

Two configurations trained with n_a and n_b seeds give AP samples a and b. The difference of the
means d = ā - b̄ has the standard error s = sqrt(s_a²/n_a + s_b²/n_b) (the sample variances), and
Welch-Satterthwaite's degrees of freedom

    ν = s⁴ / ((s_a²/n_a)² / (n_a - 1) + (s_b²/n_b)² / (n_b - 1)).

The 95 % interval is d ± t_{0.975, ν} · s, with t the Student-t quantile (ν need not be an
integer). A verdict is read off the interval: ``"higher"`` if it lies above 0, ``"lower"`` if
below, ``"inconclusive"`` if it holds 0. With 3 seeds each, ν is about 4 and t_{0.975} about
2.8: a difference must pass 2.8 standard errors, not the 2 a normal approximation would ask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["WelchInterval", "mean_interval", "point_interval", "student_t_cdf",
           "student_t_quantile", "verdict", "welch_interval"]


def verdict(low: float, high: float) -> str:
    """The verdict of an interval on a difference: ``"higher"`` (above 0), ``"lower"`` (below)
    or ``"inconclusive"`` (it holds 0)."""
    if low > 0:
        return "higher"
    if high < 0:
        return "lower"
    return "inconclusive"


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, for x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df > 0`` degrees of freedom."""
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = ``p``, ``0 < p < 1``, by bisection on :func:`student_t_cdf`."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class WelchInterval:
    """The difference of two means with its Welch t-interval.

    Attributes:
        difference: mean of ``a`` minus mean of ``b``.
        stderr: sqrt(s_a²/n_a + s_b²/n_b).
        df: Welch-Satterthwaite's degrees of freedom (inf when both variances are 0).
        level: the interval's coverage (0.95).
        low, high: the interval.
    """

    difference: float
    stderr: float
    df: float
    level: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """``"higher"`` (the interval above 0), ``"lower"`` (below) or ``"inconclusive"``."""
        return verdict(self.low, self.high)


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the t-interval ``mean ± t_{(1+level)/2, n-1} · s / sqrt(n)`` of the
    mean of two or more finite values."""
    values = [float(v) for v in values]
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"a t-interval of a mean needs two finite values or more, got {values}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    mean, var = _mean_var(values)
    half = student_t_quantile(0.5 + level / 2.0, len(values) - 1) * math.sqrt(var / len(values))
    return mean, mean - half, mean + half


def point_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """:func:`mean_interval` of two or more values; ``(v, v, v)`` for a single value ``v`` (a
    point without an interval, as tables and plots of seeds show one seed)."""
    values = [float(v) for v in values]
    if len(values) == 1:
        if not math.isfinite(values[0]):
            raise ValueError(f"the value must be finite, got {values[0]}")
        return values[0], values[0], values[0]
    return mean_interval(values, level)


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> WelchInterval:
    """Welch's ``level`` t-interval on mean(a) - mean(b); each sample needs two values or more
    (finite)."""
    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a Welch interval needs two values or more in each sample; got "
                         f"{len(a)} and {len(b)}")
    if not all(math.isfinite(v) for v in (*a, *b)):
        raise ValueError("the samples must be finite")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    (ma, va), (mb, vb) = _mean_var(a), _mean_var(b)
    qa, qb = va / len(a), vb / len(b)
    stderr = math.sqrt(qa + qb)
    d = ma - mb
    if stderr == 0.0:
        return WelchInterval(d, 0.0, math.inf, level, d, d)
    df = (qa + qb) ** 2 / (qa * qa / (len(a) - 1) + qb * qb / (len(b) - 1))
    half = student_t_quantile(0.5 + level / 2.0, df) * stderr
    return WelchInterval(d, stderr, df, level, d - half, d + half)

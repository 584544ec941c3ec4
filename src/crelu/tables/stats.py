"""Small statistics for the tables, written out so the suite needs no SciPy: Student-t intervals and tests.

* :func:`t_cdf` / :func:`t_ppf`: Student's t distribution via the regularised incomplete beta function
  (continued fraction, Numerical-Recipes style; accurate to ~1e-10) and bisection for the quantile.
* :func:`t_interval`: mean ± t(0.975, n-1)·s/√n (``s`` with ddof = 1): the 95% interval of a cell.
* :func:`paired_t`: the paired t-test on matched differences ``a_i - b_i`` (two-sided p-value, 95% interval
  of the mean difference).  The tables pair fold ``k`` of seed ``s`` of one row with fold ``k`` of seed ``s`` of
  another: the folds of every row are the same splits (``protocol.split_seed`` is shared), so the pairs share
  their training and held-out images and the differences remove the split-to-split variation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Interval", "PairedTest", "betainc", "interval_from_se", "paired_t", "t_cdf", "t_interval", "t_ppf"]


def _betacf(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        de = d * c
        h *= de
        if abs(de - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (bisection on :func:`t_cdf`)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    mean: float
    se: float  # s / sqrt(n), ddof = 1 (NaN for n < 2)
    low: float
    high: float
    n: int


def _mean_sd(xs: Sequence[float]) -> tuple[float, float]:
    n = len(xs)
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else math.nan
    return m, sd


def t_interval(xs: Sequence[float], level: float = 0.95) -> Interval:
    """mean ± t((1+level)/2, n-1)·s/√n; the bounds are NaN with fewer than two values."""
    xs = [float(x) for x in xs]
    if not xs:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0)
    m, sd = _mean_sd(xs)
    n = len(xs)
    if n < 2:
        return Interval(m, math.nan, math.nan, math.nan, n)
    se = sd / math.sqrt(n)
    h = t_ppf(0.5 + level / 2.0, n - 1) * se
    return Interval(m, se, m - h, m + h, n)


def interval_from_se(mean: float, se: float, n: int, level: float = 0.95) -> Interval:
    """mean ± t((1+level)/2, n-1)·se for a mean of ``n`` values whose standard error is known."""
    if n < 2 or math.isnan(se):
        return Interval(mean, se, math.nan, math.nan, n)
    h = t_ppf(0.5 + level / 2.0, n - 1) * se
    return Interval(mean, se, mean - h, mean + h, n)


@dataclass(frozen=True)
class PairedTest:
    """Paired t-test of ``a - b``: mean difference, its 95% interval, t, df and the two-sided p-value."""

    n: int
    mean_diff: float
    low: float
    high: float
    t: float
    df: int
    p: float


def paired_t(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> PairedTest:
    """Two-sided paired t-test of H0: E[a - b] = 0 (needs ≥ 2 pairs; NaN otherwise)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    d = [float(x) - float(y) for x, y in zip(a, b)]
    n = len(d)
    if n < 2:
        m = d[0] if d else math.nan
        return PairedTest(n, m, math.nan, math.nan, math.nan, max(n - 1, 0), math.nan)
    m, sd = _mean_sd(d)
    se = sd / math.sqrt(n)
    if se == 0.0:
        t = math.copysign(math.inf, m) if m != 0 else math.nan
        p = 0.0 if m != 0 else 1.0
        return PairedTest(n, m, m, m, t, n - 1, p)
    t = m / se
    p = 2.0 * (1.0 - t_cdf(abs(t), n - 1))
    h = t_ppf(0.5 + level / 2.0, n - 1) * se
    return PairedTest(n, m, m - h, m + h, t, n - 1, p)

"""Summary statistics of the study: mean and two-sided Student-t confidence interval over seeds.

The t quantile is computed here (regularized incomplete beta by Lentz's continued fraction, then
bisection), so the harness needs only NumPy; the tests check it against `scipy.stats.t`.
"""

import math

import numpy as np


def _betacf(a, b, x, max_iter=300, eps=1e-15):
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a, b, x):
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t, df):
    """Cumulative distribution function of Student's t with `df` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"`df` must be positive. Received: df={df!r}")
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p, df):
    """Quantile (inverse CDF) of Student's t with `df` degrees of freedom, for 0 < p < 1."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"`p` must be in (0, 1). Received: p={p!r}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_interval(values, confidence=0.95):
    """Mean and half-width of the two-sided Student-t confidence interval of the mean.

    Args:
        values: The per-seed results (a sequence of finite numbers).
        confidence: Coverage of the interval, in (0, 1). Defaults to `0.95`.

    Returns:
        `(mean, half_width, n)`; `half_width` is `nan` when n < 2 (no interval from one seed).

    Raises:
        ValueError: if `values` is empty or `confidence` is outside (0, 1).
    """
    values = np.asarray(values, dtype="float64").reshape(-1)
    if values.size == 0:
        raise ValueError("`values` must hold at least one number. Received: values=[]")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be in (0, 1). Received: confidence={confidence!r}")
    n = int(values.size)
    mean = float(values.mean())
    if n < 2:
        return mean, float("nan"), n
    sem = float(values.std(ddof=1)) / math.sqrt(n)
    return mean, t_quantile(0.5 + confidence / 2.0, n - 1) * sem, n

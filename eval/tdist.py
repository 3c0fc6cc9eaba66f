"""Student's t distribution for any positive degrees of freedom: CDF and quantile, in plain Python.

Satterthwaite's degrees of freedom (eval/crossed.py) are not whole numbers, so the CDF goes through
the regularised incomplete beta function: for x >= 0,
    P(T <= x) = 1 - I_z(df/2, 1/2) / 2,   z = df / (df + x^2),
and I_z(a, b) by its continued fraction (modified Lentz; Press et al., Numerical Recipes, 3rd ed.,
sec. 6.4), evaluated where it converges fast (z < (a+1)/(a+b+2), else via I_z(a,b) = 1 - I_{1-z}(b,a)).
The quantile is found by Newton's method inside a bisection bracket. Both are checked against scipy.stats.t
(scripts/fixtures/stats_reference.py) to about 1e-12.
"""
from __future__ import annotations

import math

_TINY = 1e-300


def _beta_fraction(a: float, b: float, z: float) -> float:
    # The continued fraction of I_z(a, b) / (z^a (1-z)^b / (a B(a, b))), modified Lentz.
    c, d = 1.0, 1.0 - (a + b) * z / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 100_000):
        for num in (m * (b - m) * z / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * z / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + num / c
            c = c if abs(c) > _TINY else _TINY
            h *= c * d
        if abs(c * d - 1.0) < 1e-16:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, z={z}")


def incomplete_beta(a: float, b: float, z: float) -> float:
    """The regularised incomplete beta function I_z(a, b), a, b > 0, 0 <= z <= 1."""
    if z <= 0.0:
        return 0.0
    if z >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(z) + b * math.log1p(-z)
    if z < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, z) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - z) / b


def t_cdf(x: float, df: float) -> float:
    """P(T <= x) for Student's t with df > 0 degrees of freedom (df = inf: the standard normal)."""
    if not df > 0:
        raise ValueError(f"df must be positive, got {df}")
    if math.isinf(x):
        return 1.0 if x > 0 else 0.0
    if math.isinf(df):
        return 0.5 * math.erfc(-x / math.sqrt(2.0))
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + x * x))  # P(T > |x|)
    return 1.0 - tail if x >= 0 else tail


def t_sf(x: float, df: float) -> float:
    """P(T > x), without the cancellation of 1 - t_cdf(x) far in the upper tail."""
    return t_cdf(-x, df)


def t_pdf(x: float, df: float) -> float:
    if math.isinf(df):
        return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))


def t_quantile(p: float, df: float) -> float:
    """The x with P(T <= x) = p: Newton's steps on the CDF, kept inside a bracket that bisection
    narrows whenever a step would leave it (to 1e-12 relative)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p <= 0.5:
        return 0.0 if p == 0.5 else -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2
    x = (lo + hi) / 2
    for _ in range(200):
        f = t_cdf(x, df) - p
        if f == 0:
            return x
        lo, hi = (x, hi) if f < 0 else (lo, x)
        new = x - f / t_pdf(x, df)
        new = new if lo < new < hi else (lo + hi) / 2
        if abs(new - x) <= 1e-13 * max(1.0, abs(x)):
            return new
        x = new
    return x

"""A comparison's effect tested over seeds alone: Student's t on the per-seed effects.

The hierarchical bootstrap (eval.hierarchical) redraws seeds from the two or three a study has, so
it cannot see more seed-to-seed variance than those seeds showed, and it pays nothing for having
few: at 3 seeds its interval is a lower bound (results/study-suite-sizing.md). Student's t pays
for few seeds (the 97.5% quantile is 12.71 at 2 seeds, 4.30 at 3) but counts none of the item
sampling that every seed shares, which the bootstrap does. eval.verdict asks both.

Per-seed effect d_s = the family average of A minus that of B at seed s (S seeds, S >= 2):
    mean d, se = sd(d, ddof=1) / sqrt(S), df = S - 1;
    CI = mean +/- t_q(df) * se; two-sided p = 2 * (1 - F(|mean| / se));
    TOST against +/-m: p_low = 1 - F((mean + m) / se), p_high = F((mean - m) / se), p = max.
F is Student's t CDF for integer df in closed form (Abramowitz & Stegun 26.7.3-4), its quantile by
bisection; both checked against scipy.stats.t (scripts/fixtures/stats_reference.py).
"""
from __future__ import annotations

import math
import statistics


def t_cdf(x: float, df: int) -> float:
    """P(T <= x) for Student's t with a positive integer df."""
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be a positive integer, got {df}")
    if math.isinf(x):
        return 1.0 if x > 0 else 0.0
    theta = math.atan(abs(x) / math.sqrt(df))
    c, s = math.cos(theta), math.sin(theta)
    if df % 2:  # A = (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2.4/(3.5) cos^4 + ...)), df - 2 powers of cos
        term = total = c if df > 1 else 0.0
        for k in range(1, (df - 3) // 2 + 1):
            term *= c * c * (2 * k) / (2 * k + 1)
            total += term
        a = 2 / math.pi * (theta + s * total)
    else:  # A = sin (1 + 1/2 cos^2 + 1.3/(2.4) cos^4 + ...)
        term = total = 1.0
        for k in range(1, (df - 2) // 2 + 1):
            term *= c * c * (2 * k - 1) / (2 * k)
            total += term
        a = s * total
    return 0.5 + math.copysign(0.5 * a, x)  # A = P(|T| <= |x|)


def t_quantile(p: float, df: int) -> float:
    """The x with P(T <= x) = p, by bisection (to 1e-12)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def seed_t(per_seed: list[float], margin: float) -> dict | None:
    """The seed-level t interval and tests of the per-seed effects; None below 2 seeds."""
    S = len(per_seed)
    if S < 2:
        return None
    mean, df = statistics.fmean(per_seed), S - 1
    se = statistics.stdev(per_seed) / math.sqrt(S)
    if se == 0:  # identical per-seed effects: nothing to spread, the interval is the point
        return {"ci95": [mean, mean], "ci90": [mean, mean], "p_value": 1.0 if mean == 0 else 0.0,
                "p_tost": 0.0 if abs(mean) < margin else 1.0, "df": df, "se": 0.0}
    q95, q90 = t_quantile(0.975, df), t_quantile(0.95, df)
    p_low = 1 - t_cdf((mean + margin) / se, df)
    p_high = t_cdf((mean - margin) / se, df)
    return {"ci95": [mean - q95 * se, mean + q95 * se], "ci90": [mean - q90 * se, mean + q90 * se],
            "p_value": 2 * (1 - t_cdf(abs(mean) / se, df)), "p_tost": max(p_low, p_high), "df": df, "se": se}

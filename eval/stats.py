"""Significance: Wilcoxon signed-rank over datasets, paired bootstrap / permutation within a task.

`wilcoxon_signed_rank` follows `scipy.stats.wilcoxon(x, y)` with its defaults as of scipy 1.17
(scipy/stats/_wilcoxon.py): d = x - y; zero_method="wilcox" drops zero differences; the rest are
ranked by |d| with AVERAGE ranks for ties; statistic = min(R+, R-); two-sided. method="auto":
- len(d) > 50 (zeros included) -> normal approximation;
- otherwise, no ties and no zeros -> exact null distribution of R+;
- otherwise, len(d) <= 13 -> exact permutation test over all 2^n sign flips (scipy's
  `permutation_test` enumerates them; that is the same null as the exact one, but on the real
  tied ranks);
- otherwise -> normal approximation.
Exact / permutation: p = 2 * min(P(R+ <= obs), P(R+ >= obs)), clipped at 1 (we enumerate the
2^n sign patterns by a subset-sum count on 2 x ranks, which are integers). Normal approximation:
z = (R+ - n(n+1)/4) / sqrt((n(n+1)(2n+1) - sum(t^3 - t)/2) / 24) over the n non-zero
differences (t = sizes of tied groups of |d|), no continuity correction (scipy's default
correction=False), p = 2 * (1 - Phi(|z|)). All differences zero (n = 0 after dropping zeros): scipy
returns statistic 0, p = 1, and so do we.

`paired_test` compares two results of ONE task item by item (their `per_item`):
- kind "mean": statistic = mean(a) - mean(b);
- kind "spearman": statistic = spearman(a.pred, gold) - spearman(b.pred, gold).
95% CI: percentile paired bootstrap (resample items with replacement, same items for a and b).
p-value: paired permutation test (randomly swap a_i and b_i per item; for "mean" that is a sign
flip of a_i - b_i), two-sided, p = (1 + #{|T*| >= |T|}) / (1 + n_resamples).
"""
import math

import numpy as np

from .sts import average_ranks, pearson


def _null_counts(doubled_ranks: np.ndarray) -> np.ndarray:
    # counts[s] = number of the 2^n sign patterns whose doubled R+ equals s (subset-sum count)
    counts = np.zeros(int(doubled_ranks.sum()) + 1, dtype=np.float64)
    counts[0] = 1.0
    for r in doubled_ranks.astype(np.int64):  # r >= 2: ranks are >= 1
        with_r = np.zeros_like(counts)
        with_r[r:] = counts[:-r]  # patterns where this item is positive
        counts = counts + with_r
    return counts


def wilcoxon_signed_rank(x, y) -> dict:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape or len(x) == 0:
        raise ValueError(f"wilcoxon needs two non-empty samples of equal length, got {len(x)} and {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("wilcoxon inputs contain NaN or inf")
    d_all = x - y
    d = d_all[d_all != 0]  # zero_method="wilcox"
    n = len(d)
    if n == 0:
        return {"statistic": 0.0, "p_value": 1.0, "n": 0}
    ranks = average_ranks(np.abs(d))  # (n,)
    r_plus = float(ranks[d > 0].sum())
    r_minus = float(ranks[d < 0].sum())
    _, tie_sizes = np.unique(np.abs(d), return_counts=True)
    has_ties = bool((tie_sizes > 1).any())
    has_zeros = n < len(d_all)

    if len(d_all) <= 50 and (not (has_ties or has_zeros) or len(d_all) <= 13):
        counts = _null_counts(2 * ranks)  # (2 * n(n+1)/2 + 1,) over doubled R+
        obs = int(round(2 * r_plus))
        total = counts.sum()
        p = 2 * min(counts[:obs + 1].sum(), counts[obs:].sum()) / total
    else:
        mean = n * (n + 1) / 4.0
        se = math.sqrt((n * (n + 1) * (2 * n + 1) - (tie_sizes ** 3 - tie_sizes).sum() / 2.0) / 24.0)
        z = (r_plus - mean) / se
        # no continuity correction: scipy's default is correction=False
        p = math.erfc(abs(z) / math.sqrt(2.0))  # = 2 * (1 - Phi(|z|))
    return {"statistic": min(r_plus, r_minus), "p_value": float(min(p, 1.0)), "n": n}


def _check_pair(a: dict, b: dict) -> tuple[str, dict, dict]:
    pa, pb = a.get("per_item"), b.get("per_item")
    if pa is None or pb is None:
        raise ValueError("both results need a 'per_item' entry")
    if pa["kind"] != pb["kind"]:
        raise ValueError(f"per_item kinds differ: {pa['kind']!r} vs {pb['kind']!r}")
    kind = pa["kind"]
    if kind == "mean":
        if len(pa["values"]) != len(pb["values"]):
            raise ValueError(f"item counts differ: {len(pa['values'])} vs {len(pb['values'])}")
        if pa.get("ids") != pb.get("ids"):
            raise ValueError("per_item ids differ: the two results are not over the same items in the same order")
    elif kind == "spearman":
        if len(pa["pred"]) != len(pb["pred"]) or not np.array_equal(pa["gold"], pb["gold"]):
            raise ValueError("per_item gold scores differ: the two results are not over the same items")
    else:
        raise ValueError(f"unknown per_item kind {kind!r}")
    return kind, pa, pb


RESAMPLE_BLOCK = 250_000  # items x resamples computed at once (paired_test)


def rank_rows(x: np.ndarray) -> np.ndarray:
    """`average_ranks` of every row of x (R, n) at once: 1-based, a run of ties gets its mean rank."""
    R, n = x.shape
    order = np.argsort(x, axis=1, kind="stable")  # (R, n)
    s = np.take_along_axis(x, order, axis=1)  # (R, n) each row sorted
    first = np.ones((R, n), bool)  # (R, n) a sorted position that starts a run of equal values
    first[:, 1:] = s[:, 1:] != s[:, :-1]
    last = np.ones((R, n), bool)  # (R, n) ... that ends one
    last[:, :-1] = first[:, 1:]
    pos = np.arange(n)
    start = np.maximum.accumulate(np.where(first, pos, 0), axis=1)  # (R, n) its run's first position
    end = np.minimum.accumulate(np.where(last, pos, n - 1)[:, ::-1], axis=1)[:, ::-1]  # (R, n) its run's last
    ranks = np.empty((R, n))
    np.put_along_axis(ranks, order, (start + end) / 2.0 + 1.0, axis=1)  # mean of ranks start+1 .. end+1
    return ranks


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`pearson` of every row pair of x, y (R, n) -> (R,); NaN where a row is constant."""
    xc, yc = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    denom = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))  # (R,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (xc * yc).sum(axis=1) / denom, np.nan)


def _mean_diff(a: np.ndarray, b: np.ndarray, gold_ranks: np.ndarray) -> np.ndarray:
    return a.mean(axis=1) - b.mean(axis=1)  # (R, n) resamples -> (R,)


def _spearman_diff(a: np.ndarray, b: np.ndarray, gold_ranks: np.ndarray) -> np.ndarray:
    return pearson_rows(rank_rows(a), gold_ranks) - pearson_rows(rank_rows(b), gold_ranks)  # (R,)


def paired_test(result_a: dict, result_b: dict, *, n_resamples: int = 2000, seed: int = 0) -> dict:
    kind, pa, pb = _check_pair(result_a, result_b)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if kind == "mean":
        a, b = np.asarray(pa["values"], np.float64), np.asarray(pb["values"], np.float64)  # (n,)
        gold = np.zeros(len(a))  # unused by the mean statistic
        stat = _mean_diff
    else:
        a, b = np.asarray(pa["pred"], np.float64), np.asarray(pb["pred"], np.float64)  # (n,)
        gold = np.asarray(pa["gold"], np.float64)  # (n,)
        stat = _spearman_diff
    n = len(a)
    if n < 2:
        raise ValueError(f"paired_test needs at least 2 items, got {n}")
    rng = np.random.default_rng(seed)
    diff = float(stat(a[None], b[None], average_ranks(gold)[None])[0])

    # The resamples as matrices, a block of rows at a time (a few MB whatever the item count). All
    # bootstrap draws come before the permutation ones, and numpy draws a (k, n) block as k draws of
    # n in a row, so the random stream, and every p-value, is that of the resample-by-resample loop
    # this replaced (tests/test_eval_stats.py keeps that loop as the reference).
    rows = max(1, RESAMPLE_BLOCK // n)
    sizes = [min(rows, n_resamples - start) for start in range(0, n_resamples, rows)]
    boot = np.concatenate([  # items drawn with replacement, the same draw for a, b and gold
        stat(a[i], b[i], rank_rows(gold[i]) if kind == "spearman" else None)
        for i in (rng.integers(0, n, size=(k, n)) for k in sizes)])  # (R,)
    gold_ranks = average_ranks(gold)[None]  # (1, n)
    perm = np.concatenate([  # a_i and b_i exchanged where w: the null says they are exchangeable
        stat(np.where(w, b, a), np.where(w, a, b), gold_ranks)
        for w in (rng.random((k, n)) < 0.5 for k in sizes)])  # (R,)
    # a small tolerance so resamples equal to the observed value in exact arithmetic count as ">="
    exceed = np.abs(perm) >= abs(diff) - 1e-12 * max(1.0, abs(diff))
    boot = boot[np.isfinite(boot)]  # a resample with constant predictions has no correlation
    # None finite (a handful of items, all resamples constant): no interval, not a crash.
    ci_low, ci_high = np.percentile(boot, [2.5, 97.5]) if len(boot) else (math.nan, math.nan)
    return {
        "diff": diff,
        "ci_low": float(ci_low),
        "ci_high": float(ci_high),
        "p_value": float((1 + exceed.sum()) / (1 + n_resamples)),
        "n_items": n,
    }

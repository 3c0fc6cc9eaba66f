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
flip of a_i - b_i), two-sided, p = (1 + #{|T*| >= |T|}) / (1 + n_resamples). For "spearman" the
swap exchanges each model's RANK of the pair, not its cosine: two models' cosines live on
different scales (one may span 0.2..0.9, the other 0.95..0.99), so a swapped raw cosine lands at
an arbitrary place in the other model's ranking and the null comes out too wide. Spearman only
sees ranks, so the observed value and the bootstrap are unchanged by this.

Floors: a test over n paired units that exchanges each unit's sign (the exact Wilcoxon, the sign
flip / swap permutation) cannot give a two-sided p below 2 / 2^n, whatever the data: the two
all-same-sign patterns are as extreme as the observed one. `sign_flip_floor` says it; n <= 5
cannot reach 0.05. A Monte Carlo p of 1 / (1 + n_resamples) on 2 items is not evidence.

`holm`: Holm's step-down adjustment (Holm 1979), as statsmodels' multipletests(method="holm"):
sort ascending, p_(j) * (m - j + 1) for j = 1..m, running maximum, clipped at 1.
`benjamini_hochberg`: the false-discovery-rate step-up adjustment (Benjamini & Hochberg 1995), as
multipletests(method="fdr_bh"): sort ascending, p_(j) * m / j, running minimum from the largest
down, clipped at 1.
"""
import math

import numpy as np

from .sts import average_ranks


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


def rank_codes(codes: np.ndarray) -> np.ndarray:
    """`average_ranks` of every row of codes (R, n), small non-negative integers, by a counting sort:
    linear in n, since it runs on every Spearman resample."""
    R, n = codes.shape
    m = int(codes.max()) + 1
    flat = codes + m * np.arange(R)[:, None]  # (R, n) one bin range per row
    counts = np.bincount(flat.ravel(), minlength=R * m).reshape(R, m)  # (R, m) draws of each code
    below = np.cumsum(counts, axis=1) - counts  # (R, m) draws with a smaller code
    return np.take_along_axis(below + (counts + 1) / 2.0, codes, axis=1)  # (R, n) mean rank of its run


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`pearson` of every row pair of x, y (R, n) -> (R,), rows broadcast; NaN where a row is constant."""
    xc, yc = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    denom = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))  # (R,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (xc * yc).sum(axis=1) / denom, np.nan)


def _mean_diff(a: np.ndarray, b: np.ndarray, gold: np.ndarray) -> np.ndarray:
    return a.mean(axis=1) - b.mean(axis=1)  # (R, n) resamples -> (R,)


def _spearman_diff(a: np.ndarray, b: np.ndarray, gold: np.ndarray) -> np.ndarray:
    gold_ranks = rank_codes(gold)  # (R or 1, n)
    return pearson_rows(rank_codes(a), gold_ranks) - pearson_rows(rank_codes(b), gold_ranks)  # (R,)


def _codes(x) -> np.ndarray:
    # Twice the average ranks: integers (a tied run's mean rank is a whole or half number) that
    # keep every order and tie, so Spearman is unchanged and rank_codes can count them.
    return np.rint(2.0 * average_ranks(np.asarray(x, np.float64))).astype(np.int64)  # (n,)


def paired_arrays(result_a: dict, result_b: dict):
    """(kind, a, b, gold, statistic) of two results of one task, ready to resample item by item:
    statistic(a_rows, b_rows, gold_rows) -> (R,). For "spearman", a, b and gold are rank codes
    (`_codes`): Spearman sees nothing but ranks, and the permutation swaps ranks (module note)."""
    kind, pa, pb = _check_pair(result_a, result_b)
    if kind == "mean":
        a, b = np.asarray(pa["values"], np.float64), np.asarray(pb["values"], np.float64)  # (n,)
        return kind, a, b, np.zeros(len(a), np.int64), _mean_diff  # gold unused by the mean statistic
    return kind, _codes(pa["pred"]), _codes(pb["pred"]), _codes(pa["gold"]), _spearman_diff


def resampled_diffs(a: np.ndarray, b: np.ndarray, gold: np.ndarray, stat, k: int,
                    rng: np.random.Generator) -> np.ndarray:
    """The statistic on k bootstrap resamples of the items (the same draw for a, b and gold) -> (k,),
    computed a block of rows at a time (a few MB whatever the item count)."""
    n = len(a)
    rows = max(1, RESAMPLE_BLOCK // n)
    return np.concatenate([np.zeros(0)] + [
        stat(a[i], b[i], gold[i])
        for i in (rng.integers(0, n, size=(min(rows, k - start), n)) for start in range(0, k, rows))])


def paired_test(result_a: dict, result_b: dict, *, n_resamples: int = 2000, seed: int = 0) -> dict:
    _, a, b, gold, stat = paired_arrays(result_a, result_b)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    n = len(a)
    if n < 2:
        raise ValueError(f"paired_test needs at least 2 items, got {n}")
    rng = np.random.default_rng(seed)
    diff = float(stat(a[None], b[None], gold[None])[0])

    # All bootstrap draws come before the permutation ones, and numpy draws a (k, n) block as k
    # draws of n in a row, so the random stream, and every p-value, is that of a resample-by-resample
    # loop (tests/test_eval_stats.py keeps that loop as the reference).
    boot = resampled_diffs(a, b, gold, stat, n_resamples, rng)  # (R,)
    p_value = _permutation_p(a, b, gold, stat, diff, n_resamples, rng)
    boot = boot[np.isfinite(boot)]  # a resample with constant predictions has no correlation
    # None finite (a handful of items, all resamples constant): no interval, not a crash.
    ci_low, ci_high = np.percentile(boot, [2.5, 97.5]) if len(boot) else (math.nan, math.nan)
    return {
        "diff": diff,
        "ci_low": float(ci_low),
        "ci_high": float(ci_high),
        "p_value": p_value,
        "p_floor": sign_flip_floor(n),
        "n_permutations": n_resamples,
        "n_items": n,
    }


def _permutation_p(a, b, gold, stat, diff: float, n_resamples: int, rng: np.random.Generator) -> float:
    n = len(a)
    rows = max(1, RESAMPLE_BLOCK // n)
    sizes = [min(rows, n_resamples - start) for start in range(0, n_resamples, rows)]
    perm = np.concatenate([  # a_i and b_i exchanged where w: the null says they are exchangeable
        stat(np.where(w, b, a), np.where(w, a, b), gold[None])
        for w in (rng.random((k, n)) < 0.5 for k in sizes)])  # (R,)
    # a small tolerance so resamples equal to the observed value in exact arithmetic count as ">="
    exceed = np.abs(perm) >= abs(diff) - 1e-12 * max(1.0, abs(diff))
    return float((1 + exceed.sum()) / (1 + n_resamples))


def permutation_p(result_a: dict, result_b: dict, *, n_resamples: int, seed: int = 0) -> float:
    """paired_test's permutation p-value alone: to resolve a p that sits at its Monte Carlo floor
    1 / (1 + n_resamples) with more resamples, without redoing the bootstrap."""
    _, a, b, gold, stat = paired_arrays(result_a, result_b)
    diff = float(stat(a[None], b[None], gold[None])[0])
    return _permutation_p(a, b, gold, stat, diff, n_resamples, np.random.default_rng(seed))


def sign_flip_floor(n: int) -> float:
    """The smallest two-sided p a test exchanging the signs of n paired units can give (see above)."""
    return 1.0 if n < 1 else min(1.0, 2.0 ** (1 - n))


def holm(p_values) -> list[float]:
    """Holm-adjusted p-values, in the input order; NaN entries stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    out = np.full(len(p), np.nan)
    idx = np.flatnonzero(~np.isnan(p))  # the tests that were made
    m = len(idx)
    if m:
        order = idx[np.argsort(p[idx], kind="stable")]  # (m,) ascending p
        stepped = p[order] * (m - np.arange(m))  # p_(j) * (m - j + 1), j 1-based
        out[order] = np.minimum(np.maximum.accumulate(stepped), 1.0)
    return out.tolist()


def benjamini_hochberg(p_values) -> list[float]:
    """Benjamini-Hochberg-adjusted p-values, in the input order; NaN entries stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    out = np.full(len(p), np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    if m:
        order = idx[np.argsort(p[idx], kind="stable")]  # (m,) ascending p
        stepped = p[order] * m / np.arange(1, m + 1)  # p_(j) * m / j
        out[order] = np.minimum(np.minimum.accumulate(stepped[::-1])[::-1], 1.0)
    return out.tolist()

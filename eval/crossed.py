"""A comparison's effect on one family, with an interval that counts seeds and items, crossed.

Effect = family average of A minus family average of B (the mean over the family's D datasets of
each dataset's main score), averaged over the S seeds both configurations share. Every seed is
scored on the SAME items, and A and B on the same items at each seed: seeds and items are crossed,
not nested. For a dataset whose score is a mean over items, the per-item difference at seed s is
    y_si = mu + a_s + b_i + c_si,
a_s the seed's effect (data order, LoRA init, dropout; var sa2), b_i the item's (which items the
suite happened to sample; var sb2), c_si their interaction (var sc2). The seed-averaged effect
then has variance
    V = sa2 / S + sb2 / n + sc2 / (S n):
seed noise shrinks with seeds, the shared items' noise b does not (one item draw, shared by every
seed), and the interaction shrinks with both.

Estimate (method of moments on the two-way table, Cornfield & Tukey 1956; Clark 1973, "the
language-as-fixed-effect fallacy", for items shared across subjects):
    V_seed = var_s(e_s) / S              e_s = the per-seed family effect; expects sa2/S + sc2/(S n)
    V_item = var_i(mean_s y_si) / n      the shared items' variance of the seed-averaged effect;
                                         expects sb2/n + sc2/(S n)
    V_res  = MS_residual / (S n)         the double-centred table; expects sc2/(S n)
    V = V_seed + max(0, V_item - V_res)
The seed term is the observed spread of the per-seed effects, interaction included, with its own
S - 1 degrees of freedom; the item term adds only what the items share across seeds. Adding V_seed
and V_item as they stand would count sc2/(S n) twice, and for W on vs off the interaction is most
of the item term (results/crossed-coverage.md). Truncating the item term at 0 (a negative estimate
of sb2) errs wide where sb2 is near 0 and the items are few.
For a family, each dataset's item and residual terms are divided by D^2 and summed (datasets are
independent draws of items); the seed term is computed on the family effect, so a seed that helps
every dataset counts once, with its correlation across datasets.

Metrics that are not item means (Spearman for STS): each seed's score is replaced, for the
variance only, by its jackknife pseudo-values p_i = n theta - (n-1) theta_(-i) (Tukey 1958),
which are the items themselves for a mean. V_item is then the delete-one jackknife variance of the
seed-averaged effect. Clustering's score is the mean V-measure over its sets, so a set is an item.

Interval and tests: Student's t with Satterthwaite's degrees of freedom (Satterthwaite 1946) in a
bounded form. For V = sum_k c_k V_k, each V_k a mean square with df_k (S - 1 for the seed term;
the items' n - 1, pooled over datasets; (S-1)(n-1) for the residual), the classical plug-in
    df = V^2 / sum_k (c_k V_k)^2 / df_k
estimates each term's variance 2 (c_k V_k)^2 / df_k from the term itself. At 3 seeds the seed term
has 2 degrees of freedom and is often far below its expectation; the plug-in then hands the items
the weight, a large df and a narrow interval at once, and covers too little where the seed term
carries most of the variance. The bounded form replaces one factor c_k V_k of each term by the
total V >= c_k V_k:
    df = V / sum_k |c_k| V_k / df_k,
the harmonic mean of the terms' df weighted by their shares of V. It is never above the plug-in
df, equals it when one term carries all of V (S - 1 where seeds dominate, the items' df where they
do), and keeps the 95% coverage within 93-97% at 3 and at 8 seeds in a brute-force simulation with
known variances around those measured in the study (tests/test_eval_crossed.py); a family with few
items (clustering's 6 sets a dataset) errs wide, near 98% at 3 seeds. The numbers, the plug-in's
beside them, and the tail: scripts/crossed_coverage.py -> results/crossed-coverage.md. Far in the
tail the t reference stays approximate at 3 seeds: where the seed term dominates, p-values below
0.001 come out several times too small (eval.verdict.provisional marks what rests on them); at 8
seeds they do not.

What it leaves out: datasets are fixed, not a sample of tasks (the verdict is about these
datasets); the evaluation's own randomness inside a score (classification's subsampled training
sets, k-means starts) is part of c or a as it falls; configurations at one seed share their data
order (common random numbers), which is what makes a_s small for close configurations; with one
seed there is no seed term at all, and the interval is undefined.
"""
from __future__ import annotations

import math

import numpy as np

from .stats import _check_pair, pearson_rows
from .sts import average_ranks, spearman
from .tdist import t_quantile, t_sf

JACKKNIFE_BLOCK = 2_000_000  # items x items held at once by the Spearman jackknife


def jackknife_spearman(pred, gold) -> np.ndarray:
    """The Spearman correlation with item i left out, for every i -> (n,).

    Without recomputing n rankings: leaving out item i lowers the average rank of item j by 1 where
    x_i < x_j and by 1/2 where x_i == x_j (it leaves j's run of ties), and by nothing otherwise."""
    x, g = np.asarray(pred, np.float64), np.asarray(gold, np.float64)
    n = len(x)
    rx, rg = average_ranks(x), average_ranks(g)  # (n,)
    out = np.empty(n)
    rows = max(1, JACKKNIFE_BLOCK // n)
    for start in range(0, n, rows):
        i = np.arange(start, min(n, start + rows))  # (b,) the items left out
        keep = np.ones((len(i), n), bool)
        keep[np.arange(len(i)), i] = False  # (b, n)

        def loo_ranks(v, r):
            lower = (v[i, None] < v[None, :]) + 0.5 * (v[i, None] == v[None, :])  # (b, n)
            return (r[None, :] - lower)[keep].reshape(len(i), n - 1)  # (b, n-1)

        out[i] = pearson_rows(loo_ranks(x, rx), loo_ranks(g, rg))
    return out


def pseudo_values(result: dict) -> tuple[float, np.ndarray]:
    """(main score from the items, its jackknife pseudo-values (n,)) of one task's result."""
    per = result["per_item"]
    if per["kind"] == "mean":
        values = np.asarray(per["values"], np.float64)
        return float(values.mean()), values
    theta = spearman(per["pred"], per["gold"])
    n = len(per["pred"])
    return theta, n * theta - (n - 1) * jackknife_spearman(per["pred"], per["gold"])


def _item_key(per: dict):
    # What identifies the items: ids where stored, the gold scores for STS, else just their count.
    return per.get("ids") or per.get("gold") or len(per.get("values") or [])


def dataset_table(runs_a: list[dict], runs_b: list[dict], name: str) -> tuple[np.ndarray, np.ndarray]:
    """(theta (S,), pseudo (S, n)): dataset `name`'s effect A - B at each seed and its pseudo-values.
    Raises ValueError when the items are not the same for A and B and at every seed, or when the
    per-item scores do not give back the stored main score."""
    thetas, rows, key = [], [], None
    for ra, rb in zip(runs_a, runs_b):
        ta, tb = ra["tasks"][name], rb["tasks"][name]
        _check_pair(ta, tb)
        if key is None:
            key = _item_key(ta["per_item"])
        elif _item_key(ta["per_item"]) != key:
            raise ValueError(f"{name}: the seeds were scored on different items (seeds and items must be crossed)")
        (sa, pa), (sb, pb) = pseudo_values(ta), pseudo_values(tb)
        for own, res in ((sa, ta), (sb, tb)):
            if abs(own - float(res["main_score"])) > 1e-6:
                raise ValueError(f"{name}: per-item scores give {own:.6f}, the stored main score is "
                                 f"{float(res['main_score']):.6f}")
        thetas.append(sa - sb)
        rows.append(pa - pb)
    return np.array(thetas), np.stack(rows)


def satterthwaite(terms: list[tuple[float, np.ndarray, float]], bounded: bool = True) -> np.ndarray:
    """Degrees of freedom of sum_k c_k V_k from (c_k, V_k, df_k): the bounded form, or with
    bounded=False the classical plug-in (module note; used to pool datasets' item terms, whose
    df are large); V_k may be arrays."""
    total = sum(c * v for c, v, _ in terms)
    if bounded:
        num, denom = total, sum(abs(c) * v / df for c, v, df in terms)
    else:
        num, denom = total * total, sum((c * v) ** 2 / df for c, v, df in terms)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, num / np.where(denom > 0, denom, 1.0), np.inf)


def components(thetas: np.ndarray, tables: list[np.ndarray]) -> dict:
    """The variance terms of the family effect from thetas (..., S, D), the effect per seed and
    dataset, and one table (..., S, n_d) of pseudo-values per dataset; leading axes are batches (a
    simulation's replicates). The seed and residual terms are None at one seed."""
    S, D = thetas.shape[-2:]
    item, res = [], []
    for P in tables:
        n = P.shape[-1]
        item.append((P.mean(axis=-2).var(axis=-1, ddof=1) / n / D ** 2, n - 1.0))  # seed-averaged items
        if S > 1:
            r = (P - P.mean(axis=-1, keepdims=True) - P.mean(axis=-2, keepdims=True)
                 + P.mean(axis=(-2, -1), keepdims=True))  # (..., S, n) double-centred: the interaction
            res.append(((r * r).sum(axis=(-2, -1)) / ((S - 1) * (n - 1)) / (S * n) / D ** 2, (S - 1) * (n - 1.0)))
    out = {"item": sum(v for v, _ in item), "df_item": satterthwaite([(1.0, v, df) for v, df in item], bounded=False),
           "seed": None, "df_seed": S - 1, "residual": None, "df_residual": None}
    if S > 1:
        out["seed"] = thetas.mean(axis=-1).var(axis=-1, ddof=1) / S
        out["residual"] = sum(v for v, _ in res)
        out["df_residual"] = satterthwaite([(1.0, v, df) for v, df in res], bounded=False)
    return out


def crossed_variance(c: dict) -> tuple[np.ndarray, np.ndarray]:
    """(V, df) of the seed-averaged family effect from `components` (module note); nan at one seed."""
    if c["seed"] is None:
        return np.full(np.shape(c["item"]), np.nan), np.full(np.shape(c["item"]), np.nan)
    shared = c["item"] - c["residual"]  # the items' own variance; <= 0: nothing beyond the interaction
    terms = [(1.0, c["seed"], c["df_seed"]), (1.0, c["item"], c["df_item"]), (-1.0, c["residual"], c["df_residual"])]
    return (np.where(shared > 0, c["seed"] + shared, c["seed"]),
            np.where(shared > 0, satterthwaite(terms), float(c["df_seed"])))


def t_tests(effect: float, se: float, df: float, margin: float) -> dict:
    """95% and 90% t intervals, the two-sided p for 0, and the two one-sided tests against +/-margin
    (TOST, Schuirmann 1987: p_tost = the larger one-sided p)."""
    if not se > 0:  # nothing spreads: the interval is the point
        return {"ci95": [effect, effect], "ci90": [effect, effect], "p_value": 1.0 if effect == 0 else 0.0,
                "p_low": 0.0 if effect > -margin else 1.0, "p_high": 0.0 if effect < margin else 1.0,
                "p_tost": 0.0 if abs(effect) < margin else 1.0}
    q95, q90 = t_quantile(0.975, df), t_quantile(0.95, df)
    p_low, p_high = t_sf((effect + margin) / se, df), t_sf((margin - effect) / se, df)
    return {"ci95": [effect - q95 * se, effect + q95 * se], "ci90": [effect - q90 * se, effect + q90 * se],
            "p_value": min(1.0, 2 * t_sf(abs(effect) / se, df)), "p_low": p_low, "p_high": p_high,
            "p_tost": max(p_low, p_high)}


def crossed_effect(runs_a: list[dict], runs_b: list[dict], datasets: list[str], margin: float) -> dict:
    """runs_a[s] and runs_b[s]: the results.json of A and B at the same seed (eval.report.matched_seeds).
    The effect, its variance terms, and, from 2 seeds on, the crossed t interval and tests; at one
    seed, `items_only` holds the interval the items alone would give (a pilot's, not a verdict's)."""
    S, D = len(runs_a), len(datasets)
    if S == 0 or S != len(runs_b) or D == 0:
        raise ValueError(f"need seed-matched runs and datasets, got {len(runs_a)} and {len(runs_b)} runs, {D} datasets")
    cells = [dataset_table(runs_a, runs_b, name) for name in datasets]
    thetas = np.stack([t for t, _ in cells], axis=1)  # (S, D) per seed and dataset, A minus B
    comp = {k: None if v is None else float(v) for k, v in components(thetas, [P for _, P in cells]).items()}
    effect = float(thetas.mean())
    v, df = (float(x) for x in crossed_variance(comp))
    out = {"effect": effect, "per_seed": thetas.mean(axis=1).tolist(), "components": comp,
           "n_items": {name: P.shape[1] for name, (_, P) in zip(datasets, cells)}, "se": math.sqrt(v), "df": df}
    if S > 1:
        out |= t_tests(effect, math.sqrt(v), df, margin)
    else:
        out["items_only"] = t_tests(effect, math.sqrt(comp["item"]), comp["df_item"], margin)
    return out

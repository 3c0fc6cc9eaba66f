"""The verdict on one comparison and family: equivalent, different, or undecided at this precision.

EQUIVALENCE_MARGIN is fixed here, before the study's rerun, and is not to be tuned to its results:
one point (0.01) on every family's average score (Spearman for STS, nDCG@10 for retrieval,
accuracy for classification, V-measure for clustering, all on a 0..1 scale). It is the smallest
gap the study treats as worth a design choice.

Two intervals: the hierarchical bootstrap over seeds and items (eval.hierarchical) and, from 2
seeds on, Student's t over the per-seed effects (eval.seedlevel). The bootstrap cannot see more
seed variance than its few seeds showed; the t interval pays for few seeds but not for the items
every seed shares. A verdict must hold under both (an intersection-union test: each p below is
the larger of the two). The t interval came after the margin, while the study's later seeds were
running (results/README.md, `cpu-study2/`), so it can only turn a verdict into "undecided".
Rules, applied in this order:
1. "undecided at this precision" when a dataset of the family has too few items to resample: a
   bootstrap over n items sees (n-1)/n of their variance and has a handful of distinct draws, so
   with fewer items than a sign-flip test needs to reject at all (eval.stats.sign_flip_floor:
   n <= 5) its interval is not trusted either way (the quick suite's 2 clustering sets a dataset);
2. "equivalent" when every 90% interval lies inside (-margin, +margin): the two one-sided tests
   (TOST, Schuirmann 1987) each reject at 0.05. This holds even if the 95% intervals also exclude
   0: the difference is then real but smaller than the margin ("excludes_zero" says so);
3. "different" when every 95% interval excludes 0, on the same side;
4. otherwise "undecided at this precision": the data allow both a gap beyond the margin and none.
The TOST p-value is the largest one-sided p of the two tests; the difference p the larger of their
two-sided ones.
"""
from __future__ import annotations

from .hierarchical import one_sided_p
from .seedlevel import seed_t
from .stats import sign_flip_floor

EQUIVALENCE_MARGIN = 0.01
ALPHA = 0.05
VERDICTS = ("equivalent", "different", "undecided at this precision")


def too_few_items(n_items: dict[str, int]) -> dict[str, int]:
    """The datasets with too few items to resample (rule 1), and their counts."""
    return {name: n for name, n in n_items.items() if sign_flip_floor(n) > ALPHA}


def decide(fx: dict, margin: float = EQUIVALENCE_MARGIN) -> dict:
    """fx: eval.hierarchical.family_effect's output -> the verdict and the numbers it rests on."""
    p_low, p_high = one_sided_p(fx["boot"], margin)
    seed = seed_t(fx.get("per_seed") or [], margin)
    ci95s, ci90s = [fx["ci95"]] + ([seed["ci95"]] if seed else []), [fx["ci90"]] + ([seed["ci90"]] if seed else [])
    above, below = all(lo > 0 for lo, _ in ci95s), all(hi < 0 for _, hi in ci95s)
    small = too_few_items(fx["n_items"])
    if small:
        verdict = VERDICTS[2]
        why = "too few items to resample (" + ", ".join(f"{n}: {k}" for n, k in small.items()) + ")"
    elif all(-margin < lo and hi < margin for lo, hi in ci90s):
        verdict, why = VERDICTS[0], f"{'both 90% CIs lie' if seed else 'the 90% CI lies'} inside +/-{margin:g}"
    elif above or below:
        verdict, why = VERDICTS[1], "both 95% CIs exclude 0" if seed else "the 95% CI excludes 0"
    elif any(lo > 0 or hi < 0 for lo, hi in ci95s) or any(-margin < lo and hi < margin for lo, hi in ci90s):
        verdict, why = VERDICTS[2], "the bootstrap and the seed-level t interval disagree"
    else:
        verdict, why = VERDICTS[2], f"the 95% CI includes 0 and the 90% CI reaches beyond +/-{margin:g}"
    return {
        "verdict": verdict,
        "why": why,
        "margin": margin,
        "excludes_zero": bool(above or below),
        "p_tost": max([p_low, p_high] + ([seed["p_tost"]] if seed else [])),
        "p_value": max(fx["p_value"], seed["p_value"]) if seed else fx.get("p_value"),
        "p_boot": fx.get("p_value"),
        "seed_t": seed,
    }

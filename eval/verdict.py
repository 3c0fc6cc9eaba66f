"""The verdict on one comparison and family: equivalent, different, or undecided at this precision.

EQUIVALENCE_MARGIN is fixed here, before the study's rerun, and is not to be tuned to its results:
one point (0.01) on every family's average score (Spearman for STS, nDCG@10 for retrieval,
accuracy for classification, V-measure for clustering, all on a 0..1 scale). It is the smallest
gap the study treats as worth a design choice.

Rules, applied in this order to the hierarchical bootstrap of eval.hierarchical:
1. "undecided at this precision" when a dataset of the family has too few items to resample: a
   bootstrap over n items sees (n-1)/n of their variance and has a handful of distinct draws, so
   with fewer items than a sign-flip test needs to reject at all (eval.stats.sign_flip_floor:
   n <= 5) its interval is not trusted either way (the quick suite's 2 clustering sets a dataset);
2. "equivalent" when the 90% interval lies inside (-margin, +margin): the two one-sided tests
   (TOST, Schuirmann 1987) each reject at 0.05. This holds even if the 95% interval also excludes
   0: the difference is then real but smaller than the margin ("excludes_zero" says so);
3. "different" when the 95% interval excludes 0;
4. otherwise "undecided at this precision": the data allow both a gap beyond the margin and none.
The TOST p-value is max(p_low, p_high), the larger of the two one-sided bootstrap p-values.
"""
from __future__ import annotations

from .hierarchical import one_sided_p
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
    lo95, hi95 = fx["ci95"]
    lo90, hi90 = fx["ci90"]
    small = too_few_items(fx["n_items"])
    if small:
        verdict = VERDICTS[2]
        why = "too few items to resample (" + ", ".join(f"{n}: {k}" for n, k in small.items()) + ")"
    elif -margin < lo90 and hi90 < margin:
        verdict, why = VERDICTS[0], f"the 90% CI lies inside +/-{margin:g}"
    elif lo95 > 0 or hi95 < 0:
        verdict, why = VERDICTS[1], "the 95% CI excludes 0"
    else:
        verdict, why = VERDICTS[2], f"the 95% CI includes 0 and the 90% CI reaches beyond +/-{margin:g}"
    return {
        "verdict": verdict,
        "why": why,
        "margin": margin,
        "excludes_zero": bool(lo95 > 0 or hi95 < 0),
        "p_tost": max(p_low, p_high),
    }

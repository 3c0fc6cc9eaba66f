"""The verdict on one comparison and family: equivalent, different, or undecided at this precision;
then whether it survives the correction for the tests it was made with.

EQUIVALENCE_MARGIN is fixed here, before the study's rerun, and is not to be tuned to its results:
one point (0.01) on every family's average score (Spearman for STS, nDCG@10 for retrieval,
accuracy for classification, V-measure for clustering, all on a 0..1 scale). It is the smallest
gap the study treats as worth a design choice.

One interval decides: the crossed t interval over seeds and items (eval/crossed.py). Rules, in
this order (`decide`, the nominal verdict):
1. "undecided (one seed)": one shared seed gives no seed variance, so no crossed interval; a
   pilot's items-only interval is shown beside it, never read as a verdict;
2. "undecided (too few items)" when a dataset of the family has too few items to resample: with
   n items a test that exchanges their signs cannot go below p = 2/2^n (eval.stats.sign_flip_floor),
   and for n <= 5 that is above 0.05, so neither a difference nor an equivalence is trusted (the
   quick suite's 2 clustering sets a dataset);
3. "equivalent" when the 90% interval lies inside (-margin, +margin): the two one-sided tests
   (TOST, Schuirmann 1987) each reject at 0.05; this holds even if the 95% interval also excludes 0
   (the difference is then real but smaller than the margin: "excludes_zero" says so);
4. "different" when the 95% interval excludes 0;
5. otherwise "undecided at this precision": the data allow both a gap beyond the margin and none.
`corrected` then words the verdict after the multiple-comparison adjustment (eval/families.py):
"equivalent" or "different" only where the adjusted p is below ALPHA; a verdict that holds only
before adjustment is "nominal" and says which way; the rest stays undecided. `provisional` marks a
surviving verdict made at fewer than 8 seeds whose adjusted p, 20 times larger, would reach ALPHA:
at 3 seeds the t reference makes p-values below 0.001 too small, by up to about 13 times where the
seed term carries the variance (results/crossed-coverage.md); at 8 seeds it does not.
"""
from __future__ import annotations

from .stats import sign_flip_floor

EQUIVALENCE_MARGIN = 0.01
ALPHA = 0.05
ONE_SEED, TOO_FEW, UNDECIDED = "undecided (one seed)", "undecided (too few items)", "undecided at this precision"
NOMINAL_INSIDE, NOMINAL_APART = "nominal: inside the margin", "nominal: excludes 0"


def too_few_items(n_items: dict[str, int]) -> dict[str, int]:
    """The datasets with too few items to resample (rule 2), and their counts."""
    return {name: n for name, n in n_items.items() if sign_flip_floor(n) > ALPHA}


def decide(fx: dict, margin: float = EQUIVALENCE_MARGIN) -> dict:
    """fx: eval.crossed.crossed_effect's output -> the nominal verdict and why."""
    small = too_few_items(fx["n_items"])
    if "ci95" not in fx:
        return {"verdict": ONE_SEED, "why": "one seed: a pilot; no seed variance, so no crossed interval",
                "excludes_zero": None}
    lo95, hi95 = fx["ci95"]
    lo90, hi90 = fx["ci90"]
    apart = lo95 > 0 or hi95 < 0
    if small:
        verdict, why = TOO_FEW, "too few items to resample (" + ", ".join(f"{n}: {k}" for n, k in small.items()) + ")"
    elif -margin < lo90 and hi90 < margin:
        verdict, why = "equivalent", f"the 90% CI lies inside +/-{margin:g}"
    elif apart:
        verdict, why = "different", "the 95% CI excludes 0"
    else:
        verdict, why = UNDECIDED, f"the 95% CI includes 0 and the 90% CI reaches beyond +/-{margin:g}"
    return {"verdict": verdict, "why": why, "excludes_zero": bool(apart)}


def testable(verdict: str) -> bool:
    """Whether a verdict's p-values enter a multiple-comparison family (rules 1-2 decide before any p)."""
    return verdict is not None and verdict not in (ONE_SEED, TOO_FEW)


TAIL_SEEDS, TAIL_FACTOR = 8, 20


def provisional(v: dict) -> bool:
    """Whether a verdict that survives its correction rests on a tail p the t reference overstates (module note)."""
    key = {"equivalent": "p_tost_adj", "different": "p_value_adj"}.get(v.get("verdict_corrected"))
    return bool(key) and v["n_seeds"] < TAIL_SEEDS and TAIL_FACTOR * v[key] >= ALPHA


def corrected(v: dict, tests: tuple[str, ...] = ("equivalence", "difference")) -> str:
    """The verdict as the report and its headline word it, from the record's adjusted p-values
    (p_tost_adj, p_value_adj) for the tests it was made with (a registered test names one)."""
    if not testable(v["verdict"]):
        return v["verdict"]
    if "equivalence" in tests and v["p_tost_adj"] < ALPHA:
        return "equivalent"
    if "difference" in tests and v["p_value_adj"] < ALPHA:
        return "different"
    if "equivalence" in tests and v["verdict"] == "equivalent":
        return NOMINAL_INSIDE
    if "difference" in tests and v["excludes_zero"]:
        return NOMINAL_APART
    return "undecided"

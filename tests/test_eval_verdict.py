"""eval/hierarchical.py and eval/verdict.py: the seed-and-item bootstrap against a plain loop and
against statsmodels' t-based paired TOST (scripts/fixtures/stats_reference.py), and the verdict rules."""
import json

import numpy as np
import pytest

from eval.hierarchical import family_effect, one_sided_p
from eval.sts import average_ranks, pearson
from eval.verdict import EQUIVALENCE_MARGIN, decide


def _run(seed, **tasks):
    # A results.json reduced to what the bootstrap reads.
    out = {}
    for name, per_item in tasks.items():
        if per_item["kind"] == "mean":
            main = float(np.mean(per_item["values"]))
        else:
            main = pearson(average_ranks(per_item["pred"]), average_ranks(per_item["gold"]))
        out[name] = {"family": "x", "main_score": main, "per_item": per_item}
    return {"config": {"seed": seed}, "tasks": out}


def _mean(values):
    return {"kind": "mean", "values": list(map(float, values))}


def _sts(pred, gold):
    return {"kind": "spearman", "pred": list(map(float, pred)), "gold": list(map(float, gold))}


def test_tost_pieces_match_statsmodels(fixtures_dir):
    # One seed, one dataset of 400 items: the bootstrap's percentile intervals and one-sided p-values
    # are the large-sample twins of the paired t interval and statsmodels' ttost_paired.
    ref = json.loads((fixtures_dir / "eval" / "stats_reference.json").read_text())["tost"]
    for case in ref:
        fx = family_effect([_run(0, T=_mean(case["a"]))], [_run(0, T=_mean(case["b"]))], ["T"],
                           n_resamples=20000, seed=1)
        d = np.subtract(case["a"], case["b"])
        assert fx["effect"] == pytest.approx(d.mean(), abs=1e-12)
        for level in ("ci90", "ci95"):
            half = (case[level][1] - case[level][0]) / 2
            np.testing.assert_allclose(fx[level], case[level], atol=0.06 * half)  # t vs percentile, n = 400
        p_low, p_high = one_sided_p(fx["boot"], case["margin"])
        assert p_low == pytest.approx(case["p_low"], abs=0.01 + 0.1 * case["p_low"])
        assert p_high == pytest.approx(case["p_high"], abs=0.01 + 0.1 * case["p_high"])
        verdict = decide(fx, margin=case["margin"])
        assert verdict["p_tost"] == pytest.approx(case["p_tost"], abs=0.01 + 0.1 * case["p_tost"])
        assert verdict["verdict"] == {"equivalent": "equivalent", "different": "different",
                                      "undecided": "undecided at this precision"}[case["name"]]
        assert verdict["excludes_zero"] == (case["ci95"][0] > 0 or case["ci95"][1] < 0)


def _loop_family_effect(runs_a, runs_b, names, n_resamples, seed):
    # The same scheme as a plain loop, one item draw at a time, in the order family_effect draws.
    rng = np.random.default_rng(seed)
    S = len(runs_a)
    drawn = rng.integers(0, S, size=(n_resamples, S))
    total = np.zeros(n_resamples)
    for s in range(S):
        owners = np.nonzero(drawn == s)[0]
        for name in names:
            pa, pb = runs_a[s]["tasks"][name]["per_item"], runs_b[s]["tasks"][name]["per_item"]
            if pa["kind"] == "mean":
                a, b = np.array(pa["values"]), np.array(pb["values"])
            else:
                a, b, gold = np.array(pa["pred"]), np.array(pb["pred"]), np.array(pa["gold"])
            for r in owners:
                i = rng.integers(0, len(a), size=len(a))
                if pa["kind"] == "mean":
                    total[r] += a[i].mean() - b[i].mean()
                else:
                    g = average_ranks(gold[i])
                    total[r] += pearson(average_ranks(a[i]), g) - pearson(average_ranks(b[i]), g)
    return total / (S * len(names))


def test_family_effect_equals_the_plain_loop():
    rng = np.random.default_rng(5)
    gold = np.round(rng.random(30) * 5)
    runs_a, runs_b = [], []
    for seed in range(3):
        runs_a.append(_run(seed, S=_sts(np.round(gold + rng.normal(size=30), 1), gold), R=_mean(rng.random(20))))
        runs_b.append(_run(seed, S=_sts(np.round(gold + 2 * rng.normal(size=30), 1), gold), R=_mean(rng.random(20))))
    fx = family_effect(runs_a, runs_b, ["S", "R"], n_resamples=300, seed=9)
    boot = _loop_family_effect(runs_a, runs_b, ["S", "R"], 300, 9)
    np.testing.assert_allclose(np.sort(fx["boot"]), np.sort(boot), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fx["boot"], boot, rtol=0, atol=1e-12)
    # The observed effect: the difference of the family averages of the main scores.
    mains = lambda runs: np.mean([[r["tasks"][n]["main_score"] for n in ("S", "R")] for r in runs])  # noqa: E731
    assert fx["effect"] == pytest.approx(mains(runs_a) - mains(runs_b), abs=1e-12)


def test_seed_level_spread_reaches_the_interval():
    # Items carry no noise (every item of a seed has the same difference), seeds differ: the
    # resampled effect is the mean of 3 seeds drawn with replacement from {0, 0.03, 0.06}.
    runs_a = [_run(s, T=_mean(np.full(50, 0.5 + e))) for s, e in enumerate((0.0, 0.03, 0.06))]
    runs_b = [_run(s, T=_mean(np.full(50, 0.5))) for s in range(3)]
    fx = family_effect(runs_a, runs_b, ["T"], n_resamples=8000, seed=2)
    assert fx["effect"] == pytest.approx(0.03)
    assert fx["per_seed"] == pytest.approx([0.0, 0.03, 0.06])
    assert fx["boot"].min() == pytest.approx(0.0) and fx["boot"].max() == pytest.approx(0.06)
    assert np.mean(np.isclose(fx["boot"], 0.0)) == pytest.approx(1 / 27, abs=0.01)  # all three draws seed 0
    assert fx["ci95"][0] < 0.01 and fx["ci95"][1] > 0.05


def test_mismatched_or_inconsistent_items_are_refused():
    a = _run(0, T=_mean([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="item counts"):
        family_effect([a], [_run(0, T=_mean([0.1, 0.2]))], ["T"])
    wrong = _run(0, T=_mean([0.1, 0.2, 0.3]))
    wrong["tasks"]["T"]["main_score"] = 0.9  # a main score the items do not give
    with pytest.raises(ValueError, match="stored main score"):
        family_effect([a], [wrong], ["T"])
    with pytest.raises(ValueError, match="seed-matched"):
        family_effect([a], [], ["T"])


def _fx(boot, n_items=None):
    boot = np.asarray(boot, dtype=np.float64)
    return {"boot": boot, "ci95": list(np.percentile(boot, [2.5, 97.5])), "ci90": list(np.percentile(boot, [5, 95])),
            "n_items": n_items or {"T": 100}}


def test_verdict_rules():
    rng = np.random.default_rng(0)
    assert EQUIVALENCE_MARGIN == 0.01
    assert decide(_fx(0.002 * rng.normal(size=4000)))["verdict"] == "equivalent"
    assert decide(_fx(0.05 + 0.01 * rng.normal(size=4000)))["verdict"] == "different"
    assert decide(_fx(0.01 + 0.01 * rng.normal(size=4000)))["verdict"] == "undecided at this precision"
    small = decide(_fx(0.004 + 0.001 * rng.normal(size=4000)))  # real, and smaller than the margin
    assert small["verdict"] == "equivalent" and small["excludes_zero"]
    assert small["p_tost"] == pytest.approx(1 / 4001)
    few = decide(_fx(0.05 + 0.001 * rng.normal(size=4000), n_items={"A": 2, "B": 100}))
    assert few["verdict"] == "undecided at this precision" and "A: 2" in few["why"] and "B" not in few["why"]
    assert decide(_fx(0.002 * rng.normal(size=4000), n_items={"A": 6}))["verdict"] == "equivalent"  # 6 sets can reject

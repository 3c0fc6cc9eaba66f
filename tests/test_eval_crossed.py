"""eval/crossed.py: the crossed seed-and-item interval. Its coverage in a brute-force simulation
with known variances; its pieces against statsmodels and scipy (scripts/fixtures/stats_reference.py);
the Spearman jackknife against recomputation; and what it refuses."""
import json
import math

import numpy as np
import pytest

from eval.crossed import (components, crossed_effect, crossed_variance, dataset_table, jackknife_spearman,
                          pseudo_values, satterthwaite, t_tests)
from eval.sts import spearman
from eval.tdist import t_sf

# (seed SD, item SD, interaction SD) per item, 2 datasets of 100 items: around the components
# measured in cpu-study2 (results/crossed-coverage.md), the per-item SDs halved for 2 datasets
# instead of 8, which keeps every term of the family's variance as measured.
REGIMES = {
    "W on vs off (interaction most of it)": (0.0, 0.0063, 0.0243),
    "middle 4 vs last 4 (seeds and items alike)": (0.0301, 0.21, 0.18),
    "seeds most of it": (0.006, 0.015, 0.01),
}


def simulate(S: int, sa: float, sb: float, sc: float, R: int, rng, bounded: bool = True, mu: float = 0.003):
    """Coverage of the 95% interval over R replicate studies; the effect, V and df of the first 5."""
    a = rng.normal(0, sa, size=(R, S, 1))
    tables = [mu + a + rng.normal(0, sb, size=(R, 1, 100)) + rng.normal(0, sc, size=(R, S, 100)) for _ in range(2)]
    thetas = np.stack([P.mean(axis=-1) for P in tables], axis=-1)  # (R, S, 2)
    c = components(thetas, tables)
    v, df = crossed_variance(c)
    if not bounded:  # the classical plug-in df, for comparison
        shared = c["item"] - c["residual"]
        plug = satterthwaite([(1.0, c["seed"], S - 1), (1.0, c["item"], c["df_item"]),
                              (-1.0, c["residual"], c["df_residual"])], bounded=False)
        df = np.where(shared > 0, plug, S - 1.0)
    effect = thetas.mean(axis=(-2, -1))
    covered = [2 * t_sf(abs(e - mu) / math.sqrt(x), d) >= 0.05 for e, x, d in zip(effect, v, df)]
    return float(np.mean(covered)), list(zip(effect[:5], v[:5], df[:5]))


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("seeds", [3, 8])
def test_the_95_interval_covers_93_to_97_percent(regime, seeds):
    coverage, first = simulate(seeds, *REGIMES[regime], R=4000, rng=np.random.default_rng(seeds))
    assert 0.93 <= coverage <= 0.97, f"{regime}, {seeds} seeds: {coverage:.3f}"
    for e, v, df in first:  # the coverage count is the interval t_tests reports
        ci = t_tests(e, math.sqrt(v), df, 0.01)["ci95"]
        assert (ci[0] <= 0.003 <= ci[1]) == (2 * t_sf(abs(e - 0.003) / math.sqrt(v), df) >= 0.05)


def test_the_plug_in_df_covers_too_little_where_seeds_dominate_at_3_seeds():
    # Why the bounded form: the same replicates with the classical df (module note). The bounded df
    # is never larger, so its interval holds the plug-in's: the gap is the replicates only it covers.
    plug, _ = simulate(3, *REGIMES["seeds most of it"], R=3000, rng=np.random.default_rng(3), bounded=False)
    bounded, _ = simulate(3, *REGIMES["seeds most of it"], R=3000, rng=np.random.default_rng(3))
    assert plug < 0.93 and bounded - plug > 0.01


def _run(seed, **tasks):
    out = {}
    for name, per in tasks.items():
        main = float(np.mean(per["values"])) if per["kind"] == "mean" else spearman(per["pred"], per["gold"])
        out[name] = {"family": "x", "main_score": main, "per_item": per}
    return {"config": {"seed": seed}, "tasks": out}


def _mean(values, ids=None):
    return {"kind": "mean", "values": [float(x) for x in values], **({"ids": ids} if ids else {})}


def _sts(pred, gold):
    return {"kind": "spearman", "pred": [float(x) for x in pred], "gold": [float(x) for x in gold]}


def test_spearman_jackknife_equals_recomputation_with_ties():
    rng = np.random.default_rng(0)
    for n in (5, 40, 301):
        x, g = np.round(rng.normal(size=n), 1), np.round(rng.normal(size=n) * 2, 0)  # many ties
        want = [spearman(np.delete(x, i), np.delete(g, i)) for i in range(n)]
        np.testing.assert_allclose(jackknife_spearman(x, g), want, rtol=0, atol=1e-12)  # float64 sums of n ranks
    theta, pseudo = pseudo_values({"per_item": _sts(x, g)})
    assert theta == pytest.approx(spearman(x, g)) and pseudo.shape == (301,)
    assert pseudo_values({"per_item": _mean([0.1, 0.4])})[1].tolist() == [0.1, 0.4]  # a mean's items


def test_components_are_the_two_way_anova_of_statsmodels(fixtures_dir):
    # One dataset, a seeds x items table: statsmodels' two-way ANOVA without replication gives the
    # mean squares for seeds, items and the residual; the terms are those divided as in the module note.
    ref = json.loads((fixtures_dir / "eval" / "stats_reference.json").read_text())["crossed"]
    for case in ref["anova"]:
        table = np.array(case["table"])  # (S, n)
        S, n = table.shape
        c = components(table.mean(axis=1, keepdims=True), [table])
        assert c["seed"] == pytest.approx(case["ms_seed"] / (n * S), rel=1e-10)
        assert c["item"] == pytest.approx(case["ms_item"] / (S * n), rel=1e-10)
        assert c["residual"] == pytest.approx(case["ms_residual"] / (S * n), rel=1e-10)
        assert c["df_residual"] == pytest.approx(case["df_residual"]) and c["df_item"] == pytest.approx(n - 1)


def test_satterthwaite_plug_in_is_welch_and_the_bounded_form_is_never_larger(fixtures_dir):
    for case in json.loads((fixtures_dir / "eval" / "stats_reference.json").read_text())["crossed"]["welch"]:
        terms = [(1.0, np.var(x, ddof=1) / len(x), len(x) - 1.0) for x in (case["x"], case["y"])]
        assert float(satterthwaite(terms, bounded=False)) == pytest.approx(case["df"], rel=1e-10)
        bounded = float(satterthwaite(terms))
        assert min(t[2] for t in terms) <= bounded <= case["df"] * (1 + 1e-12)
    assert float(satterthwaite([(1.0, 2.0, 7.0)])) == pytest.approx(7.0)  # one term: its own df


def test_t_tests_match_scipy(fixtures_dir):
    for case in json.loads((fixtures_dir / "eval" / "stats_reference.json").read_text())["crossed"]["t_tests"]:
        got = t_tests(case["effect"], case["se"], case["df"], case["margin"])
        for key in ("ci95", "ci90"):
            np.testing.assert_allclose(got[key], case[key], rtol=1e-9, atol=1e-12)
        for key in ("p_value", "p_low", "p_high", "p_tost"):
            assert got[key] == pytest.approx(case[key], rel=1e-8, abs=1e-15), key


def test_crossed_effect_on_runs():
    rng = np.random.default_rng(4)
    gold = np.round(rng.random(30) * 5)
    ids = [f"q{i}" for i in range(20)]
    runs_a = [_run(s, S=_sts(gold + rng.normal(size=30), gold), R=_mean(rng.random(20), ids)) for s in range(3)]
    runs_b = [_run(s, S=_sts(gold + 2 * rng.normal(size=30), gold), R=_mean(rng.random(20), ids)) for s in range(3)]
    fx = crossed_effect(runs_a, runs_b, ["S", "R"], 0.01)
    mains = lambda runs: np.mean([[r["tasks"][n]["main_score"] for n in ("S", "R")] for r in runs])  # noqa: E731
    assert fx["effect"] == pytest.approx(mains(runs_a) - mains(runs_b), abs=1e-12)
    assert fx["n_items"] == {"S": 30, "R": 20} and len(fx["per_seed"]) == 3
    assert fx["ci95"][0] < fx["ci90"][0] < fx["effect"] < fx["ci90"][1] < fx["ci95"][1]
    one = crossed_effect(runs_a[:1], runs_b[:1], ["S", "R"], 0.01)  # one seed: no crossed interval
    assert "ci95" not in one and math.isnan(one["se"]) and one["items_only"]["ci95"][0] < one["effect"]


def test_mismatched_or_inconsistent_items_are_refused():
    a = [_run(0, T=_mean([0.1, 0.2, 0.3], ["x", "y", "z"])), _run(1, T=_mean([0.1, 0.2, 0.3], ["x", "y", "w"]))]
    b = [_run(0, T=_mean([0.2, 0.2, 0.3], ["x", "y", "z"])), _run(1, T=_mean([0.2, 0.2, 0.3], ["x", "y", "w"]))]
    with pytest.raises(ValueError, match="different items"):
        dataset_table(a, b, "T")  # seed 1 scored other items: not crossed
    with pytest.raises(ValueError, match="item counts"):
        dataset_table(a[:1], [_run(0, T=_mean([0.1, 0.2], ["x", "y"]))], "T")
    wrong = _run(0, T=_mean([0.1, 0.2, 0.3], ["x", "y", "z"]))
    wrong["tasks"]["T"]["main_score"] = 0.9  # a main score the items do not give
    with pytest.raises(ValueError, match="stored main score"):
        dataset_table(a[:1], [wrong], "T")
    with pytest.raises(ValueError, match="seed-matched"):
        crossed_effect(a, [], ["T"], 0.01)

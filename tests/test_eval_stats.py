"""eval/stats.py: Wilcoxon vs scipy.stats.wilcoxon (stored by scripts/fixtures/make_eval_fixtures.py),
paired bootstrap / permutation test by its defining properties."""
import json

import numpy as np
import pytest

from eval.stats import paired_test, wilcoxon_signed_rank


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return json.loads((fixtures_dir / "eval" / "stats.json").read_text())


def test_wilcoxon_matches_scipy(ref):
    # n = 4..12 with ties and zeros (scipy: exact permutation), n = 14..80 (normal approx. or exact)
    assert len(ref["wilcoxon"]) > 25
    for case in ref["wilcoxon"]:
        out = wilcoxon_signed_rank(case["x"], case["y"])
        assert out["statistic"] == pytest.approx(case["statistic"], abs=1e-12), case
        assert out["p_value"] == pytest.approx(case["p_value"], rel=1e-9, abs=1e-12), case
        assert out["n"] == int(np.count_nonzero(np.subtract(case["x"], case["y"])))


def test_wilcoxon_edge_cases():
    out = wilcoxon_signed_rank([1.0, 2.0], [1.0, 2.0])
    assert out == {"statistic": 0.0, "p_value": 1.0, "n": 0}
    with pytest.raises(ValueError, match="equal length"):
        wilcoxon_signed_rank([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        wilcoxon_signed_rank([1.0, np.nan], [1.0, 2.0])


def _mean_result(values, ids=None):
    per_item = {"kind": "mean", "values": list(values)}
    if ids is not None:
        per_item["ids"] = ids
    return {"per_item": per_item}


def test_paired_identical_gives_zero_and_p_one():
    rng = np.random.default_rng(1)
    a = _mean_result(rng.random(100))
    out = paired_test(a, a, n_resamples=500)
    assert out["diff"] == 0.0 and out["ci_low"] == 0.0 and out["ci_high"] == 0.0
    assert out["p_value"] == 1.0 and out["n_items"] == 100


def test_paired_clear_difference():
    rng = np.random.default_rng(2)
    base = rng.random(200)
    a, b = _mean_result(base + 0.05 + 0.02 * rng.normal(size=200)), _mean_result(base)
    out = paired_test(a, b, n_resamples=1000)
    assert out["diff"] == pytest.approx(np.mean(a["per_item"]["values"]) - np.mean(base))
    assert 0 < out["ci_low"] < out["diff"] < out["ci_high"]
    assert out["p_value"] == pytest.approx(1 / 1001)  # no sign flip reaches the observed gap
    # swapping the arguments flips the sign and keeps the p-value
    back = paired_test(b, a, n_resamples=1000)
    assert back["diff"] == pytest.approx(-out["diff"]) and back["ci_high"] < 0


def test_paired_p_value_matches_exact_sign_flip_enumeration():
    # n = 10 items: all 2^10 sign flips of the differences, enumerated by a plain loop, give the
    # exact permutation p-value; the Monte Carlo estimate must land within its sampling error.
    rng = np.random.default_rng(3)
    a, b = rng.random(10), rng.random(10) + 0.15
    d = a - b
    observed = abs(d.mean())
    hits = 0
    for pattern in range(2 ** 10):
        signs = np.array([1.0 if (pattern >> i) & 1 else -1.0 for i in range(10)])
        hits += abs((signs * d).mean()) >= observed - 1e-12
    exact = hits / 2 ** 10
    out = paired_test(_mean_result(a), _mean_result(b), n_resamples=20000, seed=7)
    assert 0.01 < exact < 0.5  # a case where the p-value is neither 0 nor 1
    assert out["p_value"] == pytest.approx(exact, abs=4 * np.sqrt(exact * (1 - exact) / 20000) + 1e-4)


def test_paired_spearman_kind(ref):
    case = ref["spearman_pair"]
    a = {"per_item": {"kind": "spearman", "pred": case["pred_a"], "gold": case["gold"]}}
    b = {"per_item": {"kind": "spearman", "pred": case["pred_b"], "gold": case["gold"]}}
    out = paired_test(a, b, n_resamples=500)
    assert out["diff"] == pytest.approx(case["diff"], abs=1e-12)  # scipy spearmanr difference
    assert out["ci_low"] > 0 and out["p_value"] < 0.01
    same = paired_test(a, a, n_resamples=200)
    assert same["diff"] == 0.0 and same["p_value"] == 1.0


def test_paired_rejects_mismatched_items():
    with pytest.raises(ValueError, match="item counts"):
        paired_test(_mean_result([1.0, 2.0]), _mean_result([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="ids"):
        paired_test(_mean_result([1.0, 2.0], ["a", "b"]), _mean_result([1.0, 2.0], ["b", "a"]))
    with pytest.raises(ValueError, match="kinds"):
        paired_test(_mean_result([1.0, 2.0]), {"per_item": {"kind": "spearman", "pred": [1, 2], "gold": [1, 2]}})
    with pytest.raises(ValueError, match="gold"):
        paired_test({"per_item": {"kind": "spearman", "pred": [1, 2, 3], "gold": [1, 2, 3]}},
                    {"per_item": {"kind": "spearman", "pred": [1, 2, 3], "gold": [3, 2, 1]}})


def _loop_paired_test(a, b, gold, kind, n_resamples, seed):
    # The resample-by-resample loop paired_test once had (one resample at a time, on eval.sts's
    # scalar average_ranks / pearson): the reference for the vectorised one.
    from eval.sts import average_ranks, pearson

    def stat(x, y, gold_ranks):
        if kind == "mean":
            return float(x.mean() - y.mean())
        return pearson(average_ranks(x), gold_ranks) - pearson(average_ranks(y), gold_ranks)

    rng = np.random.default_rng(seed)
    n = len(a)
    gold_ranks = average_ranks(gold)
    diff = stat(a, b, gold_ranks)
    boot = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        boot.append(stat(a[idx], b[idx], average_ranks(gold[idx])))
    perm = []
    for _ in range(n_resamples):
        swap = rng.random(n) < 0.5
        perm.append(stat(np.where(swap, b, a), np.where(swap, a, b), gold_ranks))
    boot, perm = np.array(boot), np.array(perm)
    exceed = np.abs(perm) >= abs(diff) - 1e-12 * max(1.0, abs(diff))
    boot = boot[np.isfinite(boot)]
    lo, hi = (np.percentile(boot, 2.5), np.percentile(boot, 97.5)) if len(boot) else (np.nan, np.nan)
    return diff, lo, hi, (1 + exceed.sum()) / (1 + n_resamples)


@pytest.mark.parametrize("kind", ["mean", "spearman"])
@pytest.mark.parametrize("n", [2, 7, 301])
def test_paired_test_equals_the_resample_by_resample_loop(kind, n, monkeypatch):
    # Same random stream, same statistics: equal p-values, and CIs to rounding. Ties in gold and
    # in the predictions (rounded values) exercise the tied ranks; a block size of 3 resamples
    # makes the blocks end mid-way.
    import eval.stats as stats

    rng = np.random.default_rng(n)
    a, b = np.round(rng.random(n), 1), np.round(rng.random(n) + 0.05, 1)
    gold = np.round(rng.random(n) * 5)
    if kind == "mean":
        ra, rb = _mean_result(a), _mean_result(b)
    else:
        ra = {"per_item": {"kind": "spearman", "pred": list(a), "gold": list(gold)}}
        rb = {"per_item": {"kind": "spearman", "pred": list(b), "gold": list(gold)}}
    for block in (None, 3 * n):
        if block:
            monkeypatch.setattr(stats, "RESAMPLE_BLOCK", block)
        out = paired_test(ra, rb, n_resamples=401, seed=5)
        diff, lo, hi, p = _loop_paired_test(a, b, gold, kind, 401, 5)
        assert out["p_value"] == p
        np.testing.assert_allclose([out["diff"], out["ci_low"], out["ci_high"]], [diff, lo, hi], rtol=0, atol=1e-12)

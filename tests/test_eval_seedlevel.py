"""eval/seedlevel.py against scipy.stats.t and statsmodels (scripts/fixtures/stats_reference.py), and
how eval/verdict.py combines it with the bootstrap."""
import json

import numpy as np
import pytest

from eval.seedlevel import seed_t, t_cdf, t_quantile
from eval.verdict import decide


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return json.loads((fixtures_dir / "eval" / "stats_reference.json").read_text())["seed_t"]


def test_t_cdf_and_quantile_match_scipy(ref):
    t = ref["t"]
    for df, cdfs, quantiles in zip(t["df"], t["cdf"], t["quantile"]):
        for x, want in zip(t["x"], cdfs):
            assert t_cdf(x, df) == pytest.approx(want, abs=1e-12)
        for p, want in zip(t["p"], quantiles):
            assert t_quantile(p, df) == pytest.approx(want, rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError, match="positive integer"):
        t_cdf(1.0, 0)


def test_seed_interval_and_tests_match_statsmodels(ref):
    for case in ref["cases"]:
        got = seed_t(case["per_seed"], case["margin"])
        np.testing.assert_allclose(got["ci95"], case["ci95"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got["ci90"], case["ci90"], rtol=1e-9, atol=1e-12)
        assert got["p_value"] == pytest.approx(case["p_value"], rel=1e-9, abs=1e-12)
        assert got["p_tost"] == pytest.approx(case["p_tost"], rel=1e-9, abs=1e-12)
    assert seed_t([0.01], 0.01) is None  # one seed: a pilot, nothing to test over seeds


def _fx(ci95, ci90, per_seed, p=0.5):
    # A bootstrap result whose resamples sit inside the given 95% interval.
    boot = np.linspace(ci95[0], ci95[1], 4001)
    return {"ci95": ci95, "ci90": ci90, "per_seed": per_seed, "p_value": p, "boot": boot, "n_items": {"T": 100}}


def test_a_verdict_must_hold_under_both_intervals():
    # The bootstrap alone calls both of these: three seeds that disagree this much do not.
    tight = dict(ci95=[-0.004, 0.004], ci90=[-0.003, 0.003])
    assert decide(_fx(**tight, per_seed=[0.001]))["verdict"] == "equivalent"  # one seed: the bootstrap's say
    spread = decide(_fx(**tight, per_seed=[0.012, -0.009, 0.006]))
    assert spread["verdict"] == "undecided at this precision" and "disagree" in spread["why"]
    assert spread["seed_t"]["ci90"][1] > 0.01 and spread["p_tost"] == pytest.approx(spread["seed_t"]["p_tost"])
    far = dict(ci95=[0.02, 0.06], ci90=[0.025, 0.055])
    assert decide(_fx(**far, per_seed=[0.04, 0.041, 0.039]))["verdict"] == "different"
    noisy = decide(_fx(**far, per_seed=[0.09, -0.01, 0.04], p=0.001))
    assert noisy["verdict"] == "undecided at this precision"
    assert noisy["p_value"] == pytest.approx(noisy["seed_t"]["p_value"]) and noisy["p_boot"] == 0.001

"""eval/verdict.py, eval/families.py, eval/tdist.py and the Benjamini-Hochberg adjustment: the rules,
the corrections, and the arithmetic against scipy and statsmodels (scripts/fixtures/stats_reference.py)."""
import json
import shutil
import subprocess

import numpy as np
import pytest

from eval.crossed import crossed_effect
from eval.families import RegistrationError, adjust, load_registration, registration_commit
from eval.stats import benjamini_hochberg
from eval.tdist import t_cdf, t_quantile, t_sf
from eval.verdict import EQUIVALENCE_MARGIN, NOMINAL_APART, NOMINAL_INSIDE, ONE_SEED, TOO_FEW, corrected, decide


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return json.loads((fixtures_dir / "eval" / "stats_reference.json").read_text())


def test_t_distribution_matches_scipy_at_fractional_df(ref):
    t = ref["crossed"]["t"]
    for df, cdfs, sfs, quantiles in zip(t["df"], t["cdf"], t["sf"], t["quantile"]):
        for x, want, tail in zip(t["x"], cdfs, sfs):
            # continued fraction and lgamma in float64: ~1e-14 relative, far below any p a report prints
            assert t_cdf(x, df) == pytest.approx(want, rel=1e-12, abs=1e-300)
            assert t_sf(x, df) == pytest.approx(tail, rel=1e-12, abs=1e-300)
        for p, want in zip(t["p"], quantiles):
            assert t_quantile(p, df) == pytest.approx(want, rel=1e-10)
    with pytest.raises(ValueError, match="positive"):
        t_cdf(1.0, 0)


def test_benjamini_hochberg_matches_statsmodels(ref):
    for case in ref["crossed"]["bh"]:
        np.testing.assert_allclose(benjamini_hochberg(case["p"]), case["bh"], rtol=1e-12)
    out = benjamini_hochberg([0.01, float("nan"), 0.04])
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.04)  # m = 2


def _run(seed, values):
    return {"config": {"seed": seed}, "tasks": {"T": {"family": "x", "main_score": float(np.mean(values)),
                                                      "per_item": {"kind": "mean", "values": list(map(float, values))}}}}


def test_a_pilot_s_items_only_interval_is_the_paired_t_of_statsmodels(ref):
    # One seed, one dataset of 400 items: the items-only interval and TOST are the paired t ones.
    for case in ref["tost"]:
        fx = crossed_effect([_run(0, case["a"])], [_run(0, case["b"])], ["T"], case["margin"])
        items = fx["items_only"]
        np.testing.assert_allclose(items["ci95"], case["ci95"], rtol=1e-9)
        np.testing.assert_allclose(items["ci90"], case["ci90"], rtol=1e-9)
        assert items["p_tost"] == pytest.approx(case["p_tost"], rel=1e-8)
        assert items["p_value"] == pytest.approx(case["p_two_sided"], rel=1e-8)
        assert decide(fx)["verdict"] == ONE_SEED  # ...and still no verdict from one seed


def _fx(ci95, ci90, n_items=None):
    return {"ci95": ci95, "ci90": ci90, "n_items": n_items or {"T": 100}}


def test_verdict_rules():
    assert EQUIVALENCE_MARGIN == 0.01
    assert decide(_fx([-0.004, 0.004], [-0.003, 0.003]))["verdict"] == "equivalent"
    assert decide(_fx([0.02, 0.06], [0.025, 0.055]))["verdict"] == "different"
    assert decide(_fx([-0.01, 0.03], [-0.005, 0.025]))["verdict"] == "undecided at this precision"
    small = decide(_fx([0.002, 0.006], [0.0025, 0.0055]))  # real, and smaller than the margin
    assert small["verdict"] == "equivalent" and small["excludes_zero"]
    few = decide(_fx([0.02, 0.06], [0.025, 0.055], n_items={"A": 2, "B": 100}))
    assert few["verdict"] == TOO_FEW and "A: 2" in few["why"] and "B" not in few["why"]
    assert decide(_fx([-0.004, 0.004], [-0.003, 0.003], n_items={"A": 6}))["verdict"] == "equivalent"  # 6 sets can
    assert decide({"n_items": {"T": 100}, "items_only": {}})["verdict"] == ONE_SEED


def _record(a, b, family, verdict, p_value, p_tost, excludes_zero=False):
    return {"comparison": f"{a} vs {b}", "a": a, "b": b, "family": family, "verdict": verdict, "n_seeds": 3,
            "p_value": p_value, "p_tost": p_tost, "excludes_zero": excludes_zero}


def test_corrected_words_only_what_survives():
    v = _record("A", "B", "sts", "equivalent", 0.6, 0.01) | {"p_value_adj": 1.0, "p_tost_adj": 0.2}
    assert corrected(v) == NOMINAL_INSIDE
    assert corrected(v | {"p_tost_adj": 0.04}) == "equivalent"
    d = _record("A", "B", "sts", "different", 0.001, 0.9, True) | {"p_value_adj": 0.2, "p_tost_adj": 1.0}
    assert corrected(d) == NOMINAL_APART and corrected(d | {"p_value_adj": 0.01}) == "different"
    assert corrected(d | {"p_value_adj": 0.01}, ("equivalence",)) == "undecided"  # not the registered test
    assert corrected(_record("A", "B", "sts", ONE_SEED, None, None)) == ONE_SEED


REGISTRATION = {"what": "x", "families": ["sts", "retrieval"], "margin": 0.01, "alpha": 0.05,
                "primary": {"correction": "holm", "tests": [
                    {"question": "q1", "a": "A", "b": "B", "test": "equivalence"},
                    {"question": "q2", "a": "C", "b": "D", "test": "difference"}]},
                "secondary": {"correction": "benjamini-hochberg"}}


def test_families_with_and_without_a_registration():
    def records():
        return [_record("A", "B", "sts", "equivalent", 0.5, 0.004), _record("A", "B", "retrieval", "equivalent", 0.5, 0.02),
                _record("C", "D", "sts", "different", 0.01, 0.9, True), _record("C", "D", "clustering", "different", 0.001, 0.9, True),
                _record("E", "F", "sts", "different", 0.02, 0.9, True), _record("E", "F", "retrieval", ONE_SEED, None, None)]
    registered = records()
    made = {f["name"]: f["tests"] for f in adjust(registered, REGISTRATION)}
    assert made["primary (Holm)"] == 3  # A-B sts, A-B retrieval, C-D sts; C-D clustering is not a registered family
    by = {(v["a"], v["family"]): v for v in registered}
    assert by[("A", "sts")]["p_tost_adj"] == pytest.approx(0.012) and by[("A", "sts")]["verdict_corrected"] == "equivalent"
    assert by[("A", "sts")]["provisional"]  # 3 seeds, and 20 x 0.012 would not survive
    assert by[("A", "retrieval")]["p_tost_adj"] == pytest.approx(0.02)  # Holm: max(0.01 x 2, 0.02 x 1)
    assert by[("C", "sts")]["p_value_adj"] == pytest.approx(0.02) and by[("C", "sts")]["role"] == "primary"
    # C-D clustering is secondary: its difference p with E-F sts' and A-B's (their other test), BH over 4
    assert by[("C", "clustering")]["role"] == "secondary" and by[("C", "clustering")]["p_value_adj"] == pytest.approx(0.004)
    assert made["secondary difference tests (Benjamini-Hochberg)"] == 4 and made["secondary equivalence tests (Benjamini-Hochberg)"] == 3
    assert by[("E", "retrieval")]["p_value_adj"] is None and by[("E", "retrieval")]["verdict_corrected"] == ONE_SEED
    unregistered = records()
    made = {f["name"]: f["tests"] for f in adjust(unregistered, None)}
    assert list(made.values()) == [5, 5] and {v["role"] for v in unregistered} == {"one family"}
    assert unregistered[3]["p_value_adj"] == pytest.approx(0.005)  # Holm over 5: 0.001 x 5
    assert unregistered[3]["provisional"] is True  # 20 x 0.005 = 0.1: not below alpha


def test_provisional_only_below_8_seeds_and_only_what_a_twentyfold_p_would_undo():
    from eval.verdict import provisional
    v = {"verdict_corrected": "different", "p_value_adj": 0.002, "n_seeds": 3}
    assert not provisional(v) and provisional(v | {"p_value_adj": 0.02}) and not provisional(v | {"p_value_adj": 0.02, "n_seeds": 8})
    assert not provisional({"verdict_corrected": "nominal: excludes 0", "n_seeds": 3})


def test_registration_is_read_checked_and_its_commit_named(tmp_path):
    assert load_registration(tmp_path) is None
    (tmp_path / "registration.json").write_text(json.dumps(REGISTRATION))
    reg = load_registration(tmp_path)
    assert reg["commit"] == "uncommitted" and reg["families"] == ["sts", "retrieval"]  # not in a git repository
    if shutil.which("git") is None:
        pytest.skip("git not found: the commit lookup needs it")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "registration.json"], check=True)
    subprocess.run(git + ["commit", "-qm", "registration"], check=True)
    commit, date = registration_commit(tmp_path / "registration.json")
    assert date and subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.startswith(commit)
    (tmp_path / "registration.json").write_text(json.dumps(REGISTRATION | {"what": "changed"}))
    assert registration_commit(tmp_path / "registration.json") == ("uncommitted", None)  # changed since
    (tmp_path / "registration.json").write_text(json.dumps(REGISTRATION | {"margin": 0.02}))
    with pytest.raises(RegistrationError, match="margin 0.02"):
        load_registration(tmp_path)

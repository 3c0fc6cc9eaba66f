"""eval/report.py: comparisons use the seeds both configurations share."""
import pytest

from eval.report import compare, matched_seeds, summarise


def run(seed, *scores):
    # A results.json reduced to what the report reads: the seed and each task's family and score.
    return {"config": {"seed": seed},
            "tasks": {f"T{i}": {"family": "sts", "main_score": v} for i, v in enumerate(scores)}}


def test_a_comparison_uses_only_the_shared_seeds():
    a = [run(0, 0.5, 0.7), run(1, 0.1, 0.3)]  # seed 1 is a bad draw for a
    b = [run(0, 0.4, 0.6)]
    c = compare(a, b, "sts")
    assert c["seeds"] == [0]
    assert c["diff"] == pytest.approx(0.1)  # seed 0 against seed 0, not a's two-seed mean (0.4) against 0.5
    assert summarise(a)["families"]["sts"]["mean"] == pytest.approx(0.4)  # the per-family table keeps every seed


def test_seeds_are_matched_by_number_not_by_position():
    a = [run(1, 0.2), run(2, 0.9)]
    b = [run(0, 0.0), run(2, 0.5)]
    ma, mb, seeds = matched_seeds(a, b)
    assert seeds == [2]
    assert [r["config"]["seed"] for r in ma] == [2] and [r["config"]["seed"] for r in mb] == [2]
    assert compare(a, b, "sts")["diff"] == pytest.approx(0.4)


def test_without_a_shared_seed_every_run_is_used_and_the_table_says_so():
    a, b = [run(1, 0.6)], [run(0, 0.4), run(2, 0.2)]
    c = compare(a, b, "sts")
    assert c["seeds"] == []
    assert c["diff"] == pytest.approx(0.6 - 0.3)


# ---------------------------------------------------------------- the whole report on small synthetic runs
import json  # noqa: E402

import numpy as np  # noqa: E402

from eval.report import _fmt_p, chance_levels, write_report  # noqa: E402
from eval.sts import spearman  # noqa: E402

REQUIRED = {"comparison", "a", "b", "family", "effect", "ci95", "ci90", "margin", "verdict", "seeds", "n_seeds", "scale",
            "p_value", "p_holm", "p_tost", "p_tost_holm"}


def synthetic_run(seed, noise, shift=0.0, n=30):
    # 8 STS datasets (Spearman of noisy predictions), one retrieval dataset and one clustering
    # dataset of 2 sets, as evaluate() stores them.
    rng = np.random.default_rng(1000 * seed + int(noise * 100))
    tasks = {}
    for d in range(8):
        gold = np.random.default_rng(d).integers(0, 6, size=n).astype(float)
        pred = gold + noise * rng.normal(size=n)
        tasks[f"STS{d}"] = {"family": "sts", "main_score": spearman(pred, gold), "n_items": n,
                            "per_item": {"kind": "spearman", "pred": pred.tolist(), "gold": gold.tolist()}}
    values = np.clip(0.5 + shift + 0.2 * np.random.default_rng(7).normal(size=40) + 0.01 * rng.normal(size=40), 0, 1)
    tasks["Ret"] = {"family": "retrieval", "main_score": float(values.mean()), "n_items": 40,
                    "per_item": {"kind": "mean", "values": values.tolist(), "ids": [f"q{i}" for i in range(40)]}}
    sets = [0.4 + shift + 0.01 * rng.normal(), 0.5 + shift + 0.01 * rng.normal()]
    tasks["Clu"] = {"family": "clustering", "main_score": float(np.mean(sets)), "n_items": 2, "v_measures": sets,
                    "chance_level": 0.3739, "chance_v_measures": [0.3739, 0.3739],
                    "per_item": {"kind": "mean", "values": sets}}
    return {"config": {"seed": seed, "model": "m", "steps": 3, "batch_size": 4, "lr": 1e-3, "max_length": 32},
            "suite": "quick", "tasks": tasks, "seconds": {"total": 60.0},
            "environment": {"device": "CPU", "torch": "2", "git_revision": "abcdef123456", "date": "2026-01-01"}}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    good = [synthetic_run(s, 0.5, shift=0.05) for s in range(3)]
    for s, run_ in enumerate(good):  # W's movement, as training records it (seeds listed out of order)
        run_["train"] = {"layer_table": {"relative_change": [0.0016, 0.0575, 0.0012][s]}}
    runs = {"good": good[::-1],
            "noisy": [synthetic_run(s, 3.0) for s in range(3)],
            "twin": [synthetic_run(s, 0.5, shift=0.05) for s in range(3)],  # the same scores as good
            "pilot": [synthetic_run(0, 1.0)]}
    for run_ in runs["twin"]:  # a table that starts at zero (the scalar mix) has no relative change
        run_["train"] = {"layer_table": {"norm_start": 0.0, "norm_end": 5.8013, "relative_change": None}}
    out = tmp_path_factory.mktemp("report")
    comparisons = [("good vs noisy", "good", "noisy"), ("good vs twin", "good", "twin"), ("good vs pilot", "good", "pilot")]
    write_report(runs, out, comparisons=comparisons, title="t", commands=["python run.py ablation"])
    return (out / "report.md").read_text(), json.loads((out / "report.json").read_text())


def by(verdicts, comparison, family):
    return next(v for v in verdicts if v["comparison"] == comparison and v["family"] == family)


def test_report_json_carries_a_verdict_per_comparison_and_family(report):
    md, rep = report
    verdicts = rep["verdicts"]
    assert len(verdicts) == 3 * 3 and all(REQUIRED <= set(v) for v in verdicts)
    assert by(verdicts, "good vs noisy", "sts")["verdict"] == "different"
    twin = by(verdicts, "good vs twin", "sts")
    assert twin["verdict"] == "equivalent" and twin["effect"] == 0.0 and twin["ci90"] == [0.0, 0.0]
    assert twin["margin"] == rep["equivalence_margin"] == 0.01
    clu = by(verdicts, "good vs noisy", "clustering")
    assert clu["verdict"] == "undecided at this precision" and "too few items" in clu["why"]
    for v in verdicts:
        assert v["p_holm"] >= v["p_value"] and v["p_tost_holm"] >= v["p_tost"]
    assert set(rep["holm_families"]) == {"p_holm", "p_tost_holm", "wilcoxon.p_holm", "per_item.p_holm"}


def test_per_item_tests_at_every_shared_seed_with_floors(report):
    md, rep = report
    c = next(c for c in rep["comparisons"] if c["label"] == "good vs noisy" and c["family"] == "sts")
    assert all([t["seed"] for t in ts] == [0, 1, 2] for ts in c["per_item"].values())
    assert "| STS3 | 2 | 30 |" in md  # seed 2 is in report.md too
    # A strong effect's Monte Carlo p sits at 1/2001: it is recomputed with more permutations.
    assert any(t["n_permutations"] > 2000 and t["p_value"] < 1 / 2001 for ts in c["per_item"].values() for t in ts)
    assert "| Clu | 0 | 2 |" in md and "cannot reject with 2 sets" in md
    # 8 STS datasets all in one direction: the Wilcoxon p is its floor and says so.
    w = c["wilcoxon"]
    assert w["p_value"] == pytest.approx(2 / 2 ** 8) and "0.0078 (at its floor)" in md
    assert "cannot reject with 1 datasets" in md  # retrieval: one dataset


def test_reading_rules(report):
    md, rep = report
    reading = md[md.index("## Reading"):md.index("## The paper's test")]
    assert "consistent" not in md
    assert "- good vs pilot (good vs pilot), sts: **" in reading and "one seed (0): a pilot" in reading
    assert "- good vs noisy (good vs noisy), sts: **different**" in reading and "3 seeds (0, 1, 2), good ahead at 3 of 3" in reading
    assert "chance level 0.374" in reading  # clustering sentences name their chance level
    assert "not about MLTP at the paper's scale" in reading
    assert len([line for line in reading.splitlines() if line.startswith("- ")]) == 9


def test_clustering_chance_levels(report, data_dir):
    md, rep = report
    assert "| Clu | clustering | 2 | 0.3739 |" in md
    # Older runs store no chance level: it is recomputed from the task's sets, gold sizes on both sides.
    old = {"config": {"seed": 0, "data_dir": str(data_dir)}, "suite": "quick",
           "tasks": {"TwentyNewsgroups": {"family": "clustering", "suite": "quick", "v_measures": [0.4, 0.5]}}}
    level = chance_levels({"x": [old]})["TwentyNewsgroups"]
    assert level["level"] == pytest.approx(0.3739, abs=1e-4) and "gold sizes" in level["source"]  # 20 groups x 8


def test_p_formatting_never_passes_a_floor_off_as_evidence():
    assert _fmt_p(0.5, 0.5, 2, "sets") == "cannot reject with 2 sets"
    assert _fmt_p(2 / 256, 2 / 256, 8, "datasets") == "0.0078 (at its floor)"
    assert _fmt_p(0.0312, 2 / 256, 8, "datasets") == "0.031"


def test_seeds_whose_runs_trained_on_different_mixtures_are_named():
    # Decontamination that changed between two code revisions changes a seed's mixture: runs
    # compared at that seed no longer share their data order, and the comparison says so.
    from eval.report import reading, unshared_mixtures

    mix = {"rows": 100, "dropped": {"wordnet": 5}}
    a = [dict(run(0, 0.5), mixture=mix), dict(run(1, 0.5), mixture=mix)]
    b = [dict(run(0, 0.4), mixture={**mix, "dropped": {"wordnet": 7}}), dict(run(1, 0.4), mixture=dict(mix))]
    assert unshared_mixtures(a, b, [0, 1]) == [0]
    assert compare(a, b, "sts")["unshared_mixtures"] == [0]
    assert unshared_mixtures(a, [run(0, 0.4), run(1, 0.4)], [0, 1]) == []  # untrained (eval-only) runs: nothing to share
    v = {"comparison": "x", "a": "A", "b": "B", "family": "sts", "verdict": "different", "why": "w", "effect": 0.1,
         "ci95": (0.05, 0.15), "ci90": (0.06, 0.14), "margin": 0.01, "seeds": [0, 1], "per_seed": [0.1, 0.1],
         "p_holm": 0.01, "p_tost_holm": 1.0, "excludes_zero": True, "unshared_mixtures": [0]}
    assert "at seed 0 the two trained on different mixtures" in reading(v)


def test_each_run_s_layer_table_movement_is_in_the_family_table(report):
    md, _ = report
    assert "| good | 3 | " in md and md.split("| good | 3 | ")[1].split("\n")[0].endswith("| 0.16%, 5.75%, 0.12% |")
    assert md.split("| twin | 3 | ")[1].split("\n")[0].endswith("| 0 -> 5.80, 0 -> 5.80, 0 -> 5.80 |")
    assert md.split("| pilot | 1 | ")[1].split("\n")[0].endswith("|  |")  # no table, no movement

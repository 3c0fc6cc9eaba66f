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
import xml.etree.ElementTree as ET  # noqa: E402

import numpy as np  # noqa: E402

from eval.report import _fmt_p, chance_levels, write_report  # noqa: E402
from eval.sts import spearman  # noqa: E402
from eval.verdict import NOMINAL_APART, NOMINAL_INSIDE, ONE_SEED, TOO_FEW  # noqa: E402

REQUIRED = {"comparison", "a", "b", "family", "effect", "ci95", "ci90", "df", "se", "margin", "verdict",
            "verdict_corrected", "role", "seeds", "n_seeds", "scale", "p_value", "p_value_adj", "p_tost", "p_tost_adj"}


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
    return {"name": "x", "config": {"seed": seed, "model": "m", "steps": 3, "batch_size": 4, "lr": 1e-3, "max_length": 32},
            "suite": "quick", "tasks": tasks, "seconds": {"total": 60.0},
            "environment": {"device": "CPU", "torch": "2", "git_revision": "abcdef123456", "date": "2026-01-01T00:00:00+00:00"}}


def synthetic_runs():
    good = [synthetic_run(s, 0.5, shift=0.05) for s in range(3)]
    for s, run_ in enumerate(good):  # W's movement, as training records it (seeds listed out of order)
        run_["train"] = {"layer_table": {"relative_change": [0.0016, 0.0575, 0.0012][s]}}
    runs = {"good": good[::-1],
            "noisy": [synthetic_run(s, 3.0) for s in range(3)],
            "twin": [synthetic_run(s, 0.5, shift=0.05) for s in range(3)],  # the same scores as good
            "pilot": [synthetic_run(0, 1.0)]}
    for run_ in runs["twin"]:  # a table that starts at zero (the scalar mix) has no relative change
        run_["train"] = {"layer_table": {"norm_start": 0.0, "norm_end": 5.8013, "relative_change": None}}
    return runs


COMPARISONS = [("good vs noisy", "good", "noisy"), ("good vs twin", "good", "twin"), ("good vs pilot", "good", "pilot")]


def _histories(out, runs):
    for name, records in runs.items():  # each run's loss curve, where the sweep keeps it
        for r in records:
            folder = out / name / f"seed-{r['config']['seed']}"
            folder.mkdir(parents=True, exist_ok=True)
            lines = [json.dumps({"step": k, "loss": 3.0 - 0.01 * k + 0.05 * r["config"]["seed"]}) for k in range(1, 41)]
            (folder / "train_history.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    runs = synthetic_runs()
    _histories(out, runs)
    write_report(runs, out, comparisons=COMPARISONS, title="t", commands=["python run.py ablation"])
    return (out / "report.md").read_text(), json.loads((out / "report.json").read_text()), out


def by(verdicts, comparison, family):
    return next(v for v in verdicts if v["comparison"] == comparison and v["family"] == family)


def test_report_json_carries_a_verdict_per_comparison_and_family(report):
    md, rep, _ = report
    verdicts = rep["verdicts"]
    assert len(verdicts) == 3 * 3 and all(REQUIRED <= set(v) for v in verdicts)
    noisy = by(verdicts, "good vs noisy", "sts")
    assert noisy["verdict"] == "different" and noisy["verdict_corrected"] == "different" and noisy["p_value_adj"] < 0.05
    twin = by(verdicts, "good vs twin", "sts")
    assert twin["verdict_corrected"] == "equivalent" and twin["effect"] == 0.0 and twin["ci90"] == [0.0, 0.0]
    assert twin["margin"] == rep["equivalence_margin"] == 0.01
    assert by(verdicts, "good vs noisy", "clustering")["verdict"] == TOO_FEW
    assert by(verdicts, "good vs pilot", "sts")["verdict_corrected"] == ONE_SEED
    for v in verdicts:
        if v["p_value_adj"] is not None:
            assert v["p_value_adj"] >= v["p_value"] and v["p_tost_adj"] >= v["p_tost"]
    assert [f["name"] for f in rep["families"]][:2] == ["every verdict's equivalence test (Holm)",
                                                         "every verdict's difference test (Holm)"]
    assert rep["registration"] is None and "Not pre-registered" in md and "## Verdicts" in md


def test_report_order_and_the_scores_as_mteb_reads_them(report):
    md, _, _ = report
    heads = [line for line in md.splitlines() if line.startswith("## ")]
    assert heads[:3] == ["## Verdicts", "## Headline", "## The comparisons"]
    table = md[md.index("## Scores per dataset"):]
    assert "| configuration | STS0 (sts) |" in table and "| n | 30 |" in table
    assert "| chance |" in table and "0.3739 |" in table.split("| chance |")[1].split("\n")[0]
    assert any(line.startswith("| good | 0.") for line in table.splitlines())  # configurations are rows


def test_per_item_tests_at_every_shared_seed_with_floors(report):
    md, rep, _ = report
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
    md, rep, _ = report
    reading = md[md.index("## Reading"):md.index("## Supplementary: the paper's test")]
    assert "- good vs pilot (good vs pilot), sts: **undecided (one seed)**" in reading and "one seed (0): a pilot" in reading
    assert "- good vs noisy (good vs noisy), sts: **different**" in reading and "3 seeds (0, 1, 2), good ahead at 3 of 3" in reading
    assert "chance level 0.374" in reading  # clustering sentences name their chance level
    assert "not about MLTP at the paper's scale" in reading
    assert len([line for line in reading.splitlines() if line.startswith("- ")]) == 9


def test_headline_words_only_what_survives_its_correction(report):
    md, rep, _ = report
    head = md[md.index("## Headline"):md.index("## The comparisons")]
    surviving = {(v["comparison"], v["family"]) for v in rep["verdicts"] if v["verdict_corrected"] in ("equivalent", "different")}
    for line in (x for x in head.splitlines() if x.startswith("- **")):  # the intro names the words, no verdict
        for cell in line.split("; "):
            if "*different*" in cell or "*equivalent*" in cell:
                comparison = line.split("**")[1]
                family = cell.split(": ")[-1].split(" ")[0] if ": " in cell else cell.split(" ")[0]
                assert (comparison, family) in surviving, cell
    assert "**good vs noisy** (good vs noisy): sts *different*" in head
    assert "Undecided: " in head
    flagged = [v for v in rep["verdicts"] if v["provisional"]]
    assert all(v["n_seeds"] < 8 for v in flagged) and ("(provisional)" in head) == any(
        v["role"] != "primary" for v in flagged)


def test_clustering_chance_levels(report, data_dir):
    md, rep, _ = report
    assert "| chance |" in md
    # Older runs store no chance level: it is recomputed from the task's sets, gold sizes on both sides.
    old = {"config": {"seed": 0, "data_dir": str(data_dir)}, "suite": "quick",
           "tasks": {"TwentyNewsgroups": {"family": "clustering", "suite": "quick", "v_measures": [0.4, 0.5]}}}
    level = chance_levels({"x": [old]})["TwentyNewsgroups"]
    assert level["level"] == pytest.approx(0.3739, abs=1e-4) and "gold sizes" in level["source"]  # 20 groups x 8


def test_the_chart_has_one_readable_row_per_comparison(report):
    _, rep, out = report
    svg = ET.parse(out / "chart.svg").getroot()  # well-formed
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    for label in ("good vs noisy", "good vs twin", "good vs pilot"):
        assert texts.count(label) == 1, label
    for word in ("equivalent", "different", NOMINAL_INSIDE, NOMINAL_APART, "undecided", TOO_FEW, ONE_SEED):
        assert word in texts  # the legend
    shaded = [r for r in svg.iter("{http://www.w3.org/2000/svg}rect") if r.get("fill") == "#9fd3bb"]
    assert len(shaded) == len(rep["summaries"]["good"]["families"])  # the margin band, one per family column


def test_training_curves_figure_and_table(report):
    md, _, out = report
    assert (out / "training.svg").exists() and "![loss curves](training.svg)" in md
    ET.parse(out / "training.svg")
    assert "| good | 3 | 3.025 ± 0.050 | 2.665 ± 0.050 |" in md  # first and last tenth: steps 1-4 and 37-40


def test_a_registration_leads_the_report_with_its_primary_family(tmp_path):
    runs = synthetic_runs()
    registration = {"what": "Registered before the runs.", "families": ["sts", "retrieval", "clustering"],
                    "margin": 0.01, "alpha": 0.05,
                    "primary": {"correction": "holm", "tests": [
                        {"question": "good vs twin", "a": "good", "b": "twin", "test": "equivalence"},
                        {"question": "not run", "a": "good", "b": "absent", "test": "difference"}]},
                    "secondary": {"correction": "benjamini-hochberg"}}
    (tmp_path / "registration.json").write_text(json.dumps(registration))
    write_report(runs, tmp_path, comparisons=COMPARISONS, title="t", commands=["c"], histories={})
    md, rep = (tmp_path / "report.md").read_text(), json.loads((tmp_path / "report.json").read_text())
    heads = [line for line in md.splitlines() if line.startswith("## ")]
    assert heads[:3] == ["## Primary verdicts", "## Secondary verdicts", "## Headline"]
    assert "Pre-registered: `registration.json`, uncommitted." in md  # a folder outside git
    assert "Registered but not measured in this folder: not run (good vs absent)." in md
    primary = [v for v in rep["verdicts"] if v["role"] == "primary"]
    assert {(v["a"], v["b"]) for v in primary} == {("good", "twin")} and len(primary) == 3
    assert by(rep["verdicts"], "good vs twin", "sts")["p_tost_family"] == "primary (Holm)"
    assert by(rep["verdicts"], "good vs noisy", "sts")["role"] == "secondary"
    assert by(rep["verdicts"], "good vs noisy", "sts")["p_value_family"] == "secondary difference tests (Benjamini-Hochberg)"
    assert not (tmp_path / "training.svg").exists()  # histories={}: no figure


def test_one_seed_is_a_pilot_and_decides_nothing(tmp_path):
    runs = {"good": [synthetic_run(0, 0.5, shift=0.05)], "noisy": [synthetic_run(0, 3.0)]}
    write_report(runs, tmp_path, comparisons=COMPARISONS[:1], title="t", commands=["c"], histories={})
    md, rep = (tmp_path / "report.md").read_text(), json.loads((tmp_path / "report.json").read_text())
    assert "one seed per configuration: a pilot" in md
    assert {v["verdict_corrected"] for v in rep["verdicts"]} == {ONE_SEED}
    head = md[md.index("## Headline"):md.index("## The comparisons")]
    assert "*different*" not in head and "*equivalent*" not in head and "items only [" in head


def test_a_folder_with_one_configuration_still_gets_its_report(tmp_path):
    runs = {"good": [synthetic_run(s, 0.5) for s in range(2)]}
    write_report(runs, tmp_path, comparisons=[], title="t", commands=["c"], histories={})
    assert "no comparison to draw" in (tmp_path / "chart.svg").read_text()
    assert "| good | 2 |" in (tmp_path / "report.md").read_text()


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
         "verdict_corrected": "different", "ci95": (0.05, 0.15), "ci90": (0.06, 0.14), "df": 2.0, "margin": 0.01,
         "seeds": [0, 1], "per_seed": [0.1, 0.1], "excludes_zero": True, "unshared_mixtures": [0]}
    assert "at seed 0 the two trained on different mixtures" in reading(v)


def test_each_run_s_layer_table_movement_is_in_the_family_table(report):
    md, _, _ = report
    assert "| good | 3 | " in md and md.split("| good | 3 | ")[1].split("\n")[0].endswith("| 0.16%, 5.75%, 0.12% |")
    assert md.split("| twin | 3 | ")[1].split("\n")[0].endswith("| 0 -> 5.80, 0 -> 5.80, 0 -> 5.80 |")
    assert md.split("| pilot | 1 | ")[1].split("\n")[0].endswith("|  |")  # no table, no movement

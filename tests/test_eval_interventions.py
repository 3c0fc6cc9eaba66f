"""eval/interventions.py: the variants come from interventions.json, and the other-seed donor rotates."""
import json

from eval.interventions import donor, intervention_runs


def _record(name, seed):
    return {"name": f"{name}-seed{seed}", "config": {"seed": seed}, "tasks": {"T": {"family": "sts", "main_score": 0.5}}}


def test_every_variant_found_is_compared_and_the_donor_rotates(tmp_path):
    runs = {"M": [_record("M", s) for s in range(3)]}
    for s in range(3):
        found = {v: {"tasks": {"T": {"family": "sts", "main_score": 0.4}}, "family_averages": {"sts": 0.4}}
                 for v in ["trained", "zero", "reset-init"] + [f"seed-{k}" for k in range(3) if k != s]}
        (tmp_path / "M" / f"seed-{s}").mkdir(parents=True)
        (tmp_path / "M" / f"seed-{s}" / "interventions.json").write_text(json.dumps({"variants": found}))
    variants, comparisons = intervention_runs(tmp_path, runs)
    assert set(variants) == {"M [zero]", "M [reset-init]", "M [other-seed]"}  # a new variant needs no code
    assert [r["intervention"] for r in variants["M [other-seed]"]] == ["seed-1", "seed-2", "seed-0"]
    assert ("intervention: M trained vs W set to zero", "M", "M [zero]") in comparisons
    assert ("intervention: M trained vs reset-init", "M", "M [reset-init]") in comparisons


def test_donor_falls_back_to_the_lowest_other_seed():
    assert donor(0, [0, 1, 2], ["seed-1", "seed-2"]) == "seed-1"
    assert donor(2, [0, 1, 2], ["seed-0", "seed-1"]) == "seed-0"  # the last seed takes the first
    assert donor(1, [0, 1, 2], ["seed-0"]) == "seed-0"  # seed 2's W was not scored on seed 1
    assert donor(0, [0], []) is None
    assert donor(0, [0, 1], ["seed-10", "seed-2"]) == "seed-2"  # in number order, not text order

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

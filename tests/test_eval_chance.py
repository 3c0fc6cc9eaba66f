"""eval/chance.py: the expected V-measure of a random partition, against scikit-learn's expected
mutual information and a shuffle average of its v_measure_score (scripts/fixtures/stats_reference.py)."""
import json

import numpy as np
import pytest

from eval.chance import chance_v_measure, expected_mutual_information, expected_v_measure
from eval.clustering import score_clustering


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return json.loads((fixtures_dir / "eval" / "stats_reference.json").read_text())["chance"]


def test_expected_v_measure_matches_sklearn(ref):
    for case in ref:
        a, b = case["class_sizes"], case["cluster_sizes"]
        assert expected_mutual_information(a, b) == pytest.approx(case["emi"], rel=1e-9, abs=1e-12)
        assert expected_v_measure(a, b) == pytest.approx(case["expected_v"], rel=1e-9, abs=1e-12)
        # the closed form is the mean V-measure over shuffles (2,000 of them, so within 4 standard errors)
        assert expected_v_measure(a, b) == pytest.approx(case["shuffled_v_mean"], abs=4 * case["shuffled_v_sd"] / np.sqrt(2000) + 1e-12)
    twenty_by_eight = expected_v_measure([8] * 20, [8] * 20)
    assert 0.36 < twenty_by_eight < 0.39  # 20 classes x 8 texts: chance alone scores this


def test_chance_from_labels_and_bad_input():
    t = np.repeat([0, 1, 2], [5, 10, 20])
    p = np.repeat([7, 3, 9, 1], [1, 9, 12, 13])  # cluster ids need not be 0..k-1
    assert chance_v_measure(t, p) == pytest.approx(expected_v_measure([5, 10, 20], [1, 9, 12, 13]))
    assert chance_v_measure([0, 0, 0], [1, 1, 1]) == 1.0  # one class, one cluster: v_measure's convention
    with pytest.raises(ValueError, match="same"):
        expected_mutual_information([3, 3], [5])
    with pytest.raises(ValueError, match="1-D, same length"):
        chance_v_measure([0, 1], [0, 1, 1])


def test_score_clustering_stores_each_sets_chance_level():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)  # (40,)
    emb = rng.normal(size=(40, 5)) + 3.0 * np.eye(5)[labels]  # (40, 5) four separable blobs
    out = score_clustering(emb, labels, [np.arange(40), np.arange(0, 40, 2)])
    assert len(out["chance_v_measures"]) == 2
    assert out["chance_level"] == pytest.approx(np.mean(out["chance_v_measures"]))
    assert 0 < out["chance_level"] < out["main_score"]

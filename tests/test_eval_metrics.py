"""eval/{sts,retrieval,classification,clustering}.py against stored references.

References come from scripts/fixtures/make_eval_fixtures.py: scipy (Spearman/Pearson),
pytrec_eval = trec_eval (nDCG/MAP/recall/P), a plain loop (MRR@k), scikit-learn
(LogisticRegression as MTEB configures it, f1_score, KMeans, v_measure_score).
"""
import json

import numpy as np
import pytest
import torch

from eval.classification import macro_f1, score_classification, undersample_experiments
from eval.clustering import kmeans, score_clustering, v_measure
from eval.retrieval import score_retrieval
from eval.sts import score_sts


def load(fixtures_dir, name):
    base = fixtures_dir / "eval" / name
    return json.loads(base.with_suffix(".json").read_text()), np.load(base.with_suffix(".npz"))


# ---------------------------------------------------------------- STS
def test_sts_matches_scipy_with_heavy_ties(fixtures_dir):
    ref, arr = load(fixtures_dir, "sts")
    out = score_sts(torch.tensor(arr["emb1"]), arr["emb2"], arr["gold"])  # torch and numpy inputs
    for key in ("cosine_spearman", "cosine_pearson", "manhattan_spearman", "euclidean_spearman"):
        assert out[key] == pytest.approx(ref[key], abs=1e-10), key
    assert out["main_score"] == out["cosine_spearman"]
    assert out["n_items"] == len(arr["gold"])
    assert out["per_item"]["kind"] == "spearman"
    np.testing.assert_allclose(out["per_item"]["pred"], ref["cosine"], atol=1e-12)


def test_sts_rejects_bad_input():
    with pytest.raises(ValueError, match="gold"):
        score_sts(np.ones((3, 2)), np.ones((3, 2)), [1.0, 2.0])
    with pytest.raises(ValueError, match="same shape"):
        score_sts(np.ones((3, 2)), np.ones((3, 4)), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="NaN"):
        score_sts(np.full((3, 2), np.nan), np.ones((3, 2)), [1.0, 2.0, 3.0])


# ---------------------------------------------------------------- retrieval
def _retrieval(fixtures_dir, case, **kw):
    ref, arr = load(fixtures_dir, "retrieval")
    expected = ref["cases"][case]
    ks = sorted({int(k.rsplit("_", 1)[1]) for k in expected if k.startswith("ndcg_at_")})
    out = score_retrieval(arr["queries"], arr["docs"], ref["query_ids"], ref["doc_ids"], ref["qrels"],
                          k_values=ks, **kw)
    return out, expected, ks


@pytest.mark.parametrize("case,kw", [
    ("all", {}),                                          # k up to 1000 > corpus of 40
    ("all", {"chunk_size": 7}),                           # ties straddle chunk borders
    ("ignore_identical", {"ignore_identical_ids": True}),
    ("cut_at_10", {"chunk_size": 3}),                     # the top-k cut falls inside a tie group
])
def test_retrieval_matches_trec_eval(fixtures_dir, case, kw):
    out, expected, ks = _retrieval(fixtures_dir, case, **kw)
    for k in ks:
        for m in ("ndcg_at", "map_at", "recall_at", "precision_at", "mrr_at"):
            assert out[f"{m}_{k}"] == pytest.approx(expected[f"{m}_{k}"], abs=1e-6), f"{m}_{k}"
    assert out["main_score"] == out["ndcg_at_10"]
    # q4 has no judgements -> dropped; "q_absent" is judged but never embedded -> not scored
    assert out["per_item"]["ids"] == expected["kept"]
    assert out["n_items"] == len(expected["kept"])
    np.testing.assert_allclose(out["per_item"]["values"], expected["per_query_ndcg_at_10"], atol=1e-6)


def test_retrieval_ignore_identical_changes_the_score(fixtures_dir):
    # guards against the flag silently doing nothing: the identical doc ranks first for query "d7"
    with_id, _, _ = _retrieval(fixtures_dir, "all")
    without, _, _ = _retrieval(fixtures_dir, "ignore_identical", ignore_identical_ids=True)
    i = with_id["per_item"]["ids"].index("d7")
    assert with_id["per_item"]["values"][i] != without["per_item"]["values"][i]


def test_retrieval_tie_break_is_doc_id_descending():
    # three identical docs: trec_eval ranks "b" > "a2" > "a10" (byte order, descending; '2' > '1')
    docs = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    ids = ["a2", "b", "a10", "z"]
    out = score_retrieval(np.array([[1.0, 0.1]]), docs, ["q"], ids, {"q": {"a10": 1}}, k_values=(1, 2, 3))
    assert out["mrr_at_2"] == 0.0 and out["mrr_at_3"] == pytest.approx(1 / 3)
    out = score_retrieval(np.array([[1.0, 0.1]]), docs, ["q"], ids, {"q": {"b": 1}}, k_values=(1,))
    assert out["mrr_at_1"] == 1.0


def test_retrieval_rejects_bad_input():
    docs = np.eye(3)
    with pytest.raises(ValueError, match="doc ids"):
        score_retrieval(np.eye(3), docs, ["a", "b", "c"], ["x", "y"], {"a": {"x": 1}})
    with pytest.raises(ValueError, match="no query"):
        score_retrieval(np.eye(3), docs, ["a", "b", "c"], ["x", "y", "z"], {"nope": {"x": 1}})
    with pytest.raises(ValueError, match="zero-norm"):
        score_retrieval(np.zeros((1, 3)), docs, ["a"], ["x", "y", "z"], {"a": {"x": 1}})


# ---------------------------------------------------------------- classification
def test_undersample_matches_mteb_protocol(fixtures_dir):
    ref, _ = load(fixtures_dir, "classification")
    for name in ("binary", "multiclass"):
        case = ref[name]
        got = undersample_experiments(case["train_labels"], case["samples_per_label"])
        assert [g.tolist() for g in got] == case["experiments"], name


@pytest.mark.parametrize("name", ["binary", "multiclass"])
def test_classification_close_to_sklearn(fixtures_dir, name):
    ref, arr = load(fixtures_dir, "classification")
    case = ref[name]
    experiments = [np.array(e) for e in case["experiments"]]
    x_train = arr[f"{name}_x_train"]
    assert np.isnan(x_train).any()  # rows outside the experiments are NaN and must not be touched
    out = score_classification(x_train, case["train_labels"], torch.tensor(arr[f"{name}_x_test"]),
                               np.array(case["test_labels"]), experiments)
    # our L-BFGS vs scipy's L-BFGS-B with the same objective and stopping rule: within 1 point
    assert out["accuracy"] == pytest.approx(np.mean(case["sk_accuracy"]), abs=0.01)
    assert out["f1"] == pytest.approx(np.mean(case["sk_f1"]), abs=0.01)
    np.testing.assert_allclose(out["accuracy_per_experiment"], case["sk_accuracy"], atol=0.02)
    assert out["main_score"] == out["accuracy"]
    assert out["n_items"] == len(case["test_labels"])
    # per-item: fraction of experiments right; its mean is the accuracy
    assert np.mean(out["per_item"]["values"]) == pytest.approx(out["accuracy"], abs=1e-12)
    # the per-item agreement with sklearn's own correctness
    sk_correct = (np.array(case["sk_predictions"]) == np.array(case["test_labels"])).mean(0)
    assert np.abs(np.array(out["per_item"]["values"]) - sk_correct).mean() < 0.01


def test_macro_f1_matches_sklearn(fixtures_dir):
    ref, _ = load(fixtures_dir, "classification")
    case = ref["f1_case"]
    assert macro_f1(np.array(case["y_true"]), np.array(case["y_pred"])) == pytest.approx(case["f1_macro"], abs=1e-12)


def test_classification_rejects_nan_in_used_rows(fixtures_dir):
    x = np.eye(4)
    x[1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        score_classification(x, [0, 1, 0, 1], np.eye(4), [0, 1, 0, 1], [np.array([0, 1, 2, 3])])
    with pytest.raises(ValueError, match="single class"):
        score_classification(np.eye(4), [0, 0, 0, 1], np.eye(4), [0, 1, 0, 1], [np.array([0, 1])])


# ---------------------------------------------------------------- clustering
def test_v_measure_matches_sklearn(fixtures_dir):
    ref, _ = load(fixtures_dir, "clustering")
    for case in ref["v_cases"]:
        assert v_measure(case["true"], case["pred"]) == pytest.approx(case["v"], abs=1e-12), case


def test_kmeans_recovers_separated_blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 8)) * 20
    truth = np.repeat(np.arange(5), 40)
    x = centres[truth] + rng.normal(size=(200, 8))
    pred = kmeans(x[rng.permutation(200)], 5)
    assert len(np.unique(pred)) == 5
    assert v_measure(truth, kmeans(x, 5)) == 1.0
    # deterministic for a seed
    np.testing.assert_array_equal(kmeans(x, 5, seed=3), kmeans(x, 5, seed=3))


def test_score_clustering_close_to_sklearn(fixtures_dir):
    ref, arr = load(fixtures_dir, "clustering")
    sets = [arr[f"set{i}"] for i in range(3)]
    out = score_clustering(arr["emb"], arr["labels"], sets)
    assert out["n_items"] == 3 and out["per_item"]["values"] == out["v_measures"]
    assert out["main_score"] == pytest.approx(np.mean(out["v_measures"]))
    # full-batch k-means vs sklearn's KMeans / MiniBatchKMeans: different random processes, so
    # each set within the spread of the two sklearn runs, widened by 0.05
    for ours, full, mini in zip(out["v_measures"], ref["sk_kmeans_v"], ref["sk_minibatch_v"]):
        assert min(full, mini) - 0.05 <= ours <= max(full, mini) + 0.05
    assert out["v_measures"][0] == pytest.approx(1.0)  # the well-separated set is recovered exactly


def test_clustering_rejects_bad_input():
    with pytest.raises(ValueError, match="k must be"):
        kmeans(np.eye(3), 4)
    with pytest.raises(ValueError, match="labels"):
        score_clustering(np.eye(3), [0, 1], [np.array([0, 1])])

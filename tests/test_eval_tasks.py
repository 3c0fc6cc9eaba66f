"""The task half of the evaluators: real datasets, the registry, the suites, evaluate().

Row counts come from shared/data/MANIFEST.md (which matched them against MTEB); the
end-to-end checks use a hashed bag-of-words encoder on mini datasets whose answer is known
analytically (e.g. gold = number of shared words -> cosine is monotone in gold -> Spearman 1).
"""
import json
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from eval import tasks as T
from eval import loaders


class HashedBagOfWords:
    """Deterministic fake encoder: word counts hashed into D buckets, plus a constant bucket so no
    row is all-zero. Identical texts -> identical vectors. Records every call's instruction."""

    def __init__(self, dim: int = 4096):
        self.dim = dim
        self.calls: list[tuple[str | None, int]] = []

    def encode(self, texts, instruction=None):
        self.calls.append((instruction, len(texts)))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        out[:, 0] = 1.0
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, 1 + zlib.crc32(w.encode()) % (self.dim - 1)] += 1.0
        return out


# ------------------------------------------------------------------ real data: row counts (MANIFEST)

STS_ROWS = {"STSBenchmark": 1379, "SICK-R": 9927, "STS12": 3108, "STS13": 1500, "STS14": 3750, "STS15": 3000,
            "STS16": 1186, "BIOSSES": 100}
# name: (train rows, test rows, labels)
CLASSIFICATION_ROWS = {"Banking77": (10003, 3080, 77), "Emotion": (16000, 2000, 6),
                       "TweetSentimentExtraction": (27480, 3534, 3), "AmazonCounterfactual": (4018, 670, 2),
                       "IMDB": (25000, 25000, 2)}


@pytest.fixture(scope="module")
def full(data_dir):
    return {n: T.build_task(n, data_dir, "full") for n in T.TASKS}


@pytest.mark.parametrize("name", list(STS_ROWS))
def test_sts_row_counts(full, name):
    data = full[name]
    assert len(data.s1) == len(data.s2) == len(data.gold) == STS_ROWS[name]
    assert np.isfinite(data.gold).all()


def test_stsb_keeps_quotes_and_extra_columns(full):
    # Read with quoting off: a sentence holding '"' must survive, and 9-field lines still parse.
    assert any('"' in s for s in full["STSBenchmark"].s1 + full["STSBenchmark"].s2)
    assert full["STSBenchmark"].gold.min() == 0.0 and full["STSBenchmark"].gold.max() == 5.0


def test_retrieval_row_counts(full):
    sf, aa = full["SciFact"], full["ArguAna"]
    assert (len(sf.queries), len(sf.corpus), sum(map(len, sf.qrels.values()))) == (300, 5183, 339)
    assert (len(aa.queries), len(aa.corpus), sum(map(len, aa.qrels.values()))) == (1406, 8784, 1406)
    assert not sf.ignore_identical_ids and aa.ignore_identical_ids
    # SciFact doc text = (title + " " + text).strip()
    assert sf.corpus["4983"].startswith("Microstructural development of human newborn cerebral white matter")
    assert "matter assessed in vivo by diffusion tensor magnetic resonance imaging. Alterations" in sf.corpus["4983"]
    # ArguAna: the 5 judged docs missing from the rebuilt corpus (MANIFEST)
    missing = {d for q in aa.qrels.values() for d in q if d not in aa.corpus}
    assert len(missing) == 5


@pytest.mark.parametrize("name", list(CLASSIFICATION_ROWS))
def test_classification_row_counts(full, name):
    data = full[name]
    n_train, n_test, n_labels = CLASSIFICATION_ROWS[name]
    assert (len(data.train_texts), len(data.test_texts), len(data.label_names)) == (n_train, n_test, n_labels)
    assert len(data.train_labels) == n_train and len(data.test_labels) == n_test
    assert data.n_experiments == 10


def test_mteb_samples_per_label(full):
    spl = {n: full[n].samples_per_label for n in CLASSIFICATION_ROWS}
    assert spl == {"Banking77": 8, "Emotion": 16, "TweetSentimentExtraction": 32, "AmazonCounterfactual": 32,
                   "IMDB": 8}


def test_imdb_labels_balanced(full):
    assert np.bincount(full["IMDB"].test_labels).tolist() == [12500, 12500]
    assert np.bincount(full["IMDB"].train_labels).tolist() == [12500, 12500]


def test_clustering_sources_and_sets(data_dir, full):
    d = Path(data_dir) / "clustering"
    for path, text_col, rows, n_labels in [
        (d / "twentynewsgroups" / "20news_bydate_subjects.tsv", "subject", 18846, 20),
        (d / "reddit" / "reddit_test.tsv.gz", "text", 128000, 250),
        (d / "stackexchange" / "stackexchange_test.tsv.gz", "text", 217410, 171),
    ]:
        texts, labels = loaders.read_labelled_tsv(path, "label", text_col)
        assert (len(texts), len(set(labels))) == (rows, n_labels)
    # Full sets follow the MTEB descriptions (see eval/tasks.py docstring).
    for name, n_sets, (lo, hi) in [("TwentyNewsgroups", 10, (20, 20)), ("Reddit", 25, (10, 50)),
                                   ("StackExchange", 25, (10, 50))]:
        data = full[name]
        assert len(data.sets) == n_sets
        for s in data.sets:
            assert len(np.unique(s)) == len(s)  # no duplicate inside a set
            assert lo <= len(np.unique(data.labels[s])) <= hi


# ------------------------------------------------------------------ quick suite

def test_quick_is_deterministic_and_a_subset(data_dir, full):
    for name in T.TASKS:
        a = T.build_task(name, data_dir, "quick")
        b = T.build_task(name, data_dir, "quick")
        assert [t for _, t in a.texts()] == [t for _, t in b.texts()], name
        if isinstance(a, T.STSData):
            full_pairs = set(zip(full[name].s1, full[name].s2, full[name].gold))
            assert set(zip(a.s1, a.s2, a.gold)) <= full_pairs and np.array_equal(a.gold, b.gold)
        elif isinstance(a, T.RetrievalData):
            assert set(a.corpus) <= set(full[name].corpus) and set(a.queries) <= set(full[name].queries)
            # every judged doc of a kept query that exists is in the quick corpus
            assert all(d in a.corpus for q in a.qrels.values() for d in q if d in full[name].corpus)
        elif isinstance(a, T.ClassificationData):
            assert np.array_equal(a.test_labels, b.test_labels) and np.array_equal(a.train_labels, b.train_labels)
            assert set(a.test_texts) <= set(full[name].test_texts)
            assert len(np.unique(a.train_labels)) == len(a.label_names)  # every label in the pool
        else:
            assert all(np.array_equal(x, y) for x, y in zip(a.sets, b.sets))


def test_study_suite_is_quick_with_more_clustering_sets(data_dir):
    for name, task in T.TASKS.items():
        quick, study = T.build_task(name, data_dir, "quick"), T.build_task(name, data_dir, "study")
        if task.family != "clustering":
            assert [t for _, t in quick.texts()] == [t for _, t in study.texts()], name
            continue
        assert len(quick.sets) == 2 and len(study.sets) == 6
        # the quick sets come first, the same texts in each (the pools are indexed differently)
        for q, s in zip(quick.sets, study.sets[:2]):
            assert [quick.texts_[i] for i in q] == [study.texts_[i] for i in s], name


def test_quick_budget(data_dir):
    counts = T.suite_text_counts(data_dir, "quick")
    assert set(counts) == set(T.TASKS)
    assert sum(counts.values()) <= 6500, counts
    # long texts (SciFact abstracts, ArguAna arguments, IMDB reviews) cost ~10x a short one
    long = T.suite_text_counts(data_dir, "quick", min_chars=500)
    assert sum(long.values()) <= 1200, long


def test_evaluation_texts_quick(data_dir):
    texts = T.evaluation_texts(data_dir, "quick")
    sf = T.build_task("SciFact", data_dir, "quick")
    bk = T.build_task("Banking77", data_dir, "quick")
    assert set(sf.queries.values()) <= texts
    assert not (set(sf.corpus.values()) & texts - set(sf.queries.values()))  # corpora are not included
    assert set(bk.test_texts) <= texts


# ------------------------------------------------------------------ clear errors

def _copy(data_dir, tmp_path, rel):
    dst = tmp_path / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(data_dir) / rel, dst)
    return dst


def test_missing_file_names_path_and_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sts-test\.csv.*MANIFEST"):
        T.build_task("STSBenchmark", tmp_path, "full")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        T.resolve_data_dir(tmp_path / "nowhere")


def test_malformed_rows_name_file_and_line(data_dir, tmp_path):
    p = _copy(data_dir, tmp_path, "sts/stsbenchmark/sts-test.csv")
    lines = p.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = "main-captions\tMSRvid\t2012test\t0001\tfive\tA man.\tA dog.\n"  # score not a number
    p.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=r"sts-test\.csv:3: score 'five'"):
        T.build_task("STSBenchmark", tmp_path, "full")
    lines[2] = "only\tthree\tfields\n"
    p.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=r"sts-test\.csv:3: expected 7 or 9"):
        T.build_task("STSBenchmark", tmp_path, "full")

    q = _copy(data_dir, tmp_path, "retrieval/scifact/queries_test.jsonl")
    q.write_text(q.read_text(encoding="utf-8") + "{not json\n", encoding="utf-8")
    _copy(data_dir, tmp_path, "retrieval/scifact/qrels/test.tsv")
    _copy(data_dir, tmp_path, "retrieval/scifact/corpus.jsonl.gz")
    with pytest.raises(ValueError, match=r"queries_test\.jsonl:301: not valid JSON"):
        T.build_task("SciFact", tmp_path, "full")

    e = _copy(data_dir, tmp_path, "classification/emotion/test.txt")
    _copy(data_dir, tmp_path, "classification/emotion/train.txt.gz")
    e.write_text(e.read_text(encoding="utf-8") + "a;b;c\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"test\.txt:2002: expected 'text;label'"):
        T.build_task("Emotion", tmp_path, "full")


def test_empty_dataset_and_unknown_labels(data_dir, tmp_path):
    b = tmp_path / "sts" / "biosses" / "biosses_test.tsv"
    b.parent.mkdir(parents=True)
    b.write_text("sentence1\tsentence2\tscore\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty dataset"):
        T.build_task("BIOSSES", tmp_path, "full")
    root = tmp_path / "classification" / "amazon_counterfactual" / "en"
    root.mkdir(parents=True)
    (root / "EN_train.tsv").write_text("sentence\tis_counterfactual\nI wish it worked.\t1\n", encoding="utf-8")
    (root / "EN_test.tsv").write_text("sentence\tis_counterfactual\nIt works.\t2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"EN_test\.tsv:2: is_counterfactual must be 0 or 1"):
        T.build_task("AmazonCounterfactual", tmp_path, "full")


def test_unknown_and_left_out_tasks():
    with pytest.raises(ValueError, match="NFCorpus.*corpus not available"):
        T.evaluate(HashedBagOfWords(), ["NFCorpus"], data_dir=".")
    with pytest.raises(ValueError, match="'quick', 'study', 'full'"):
        T.evaluate(HashedBagOfWords(), "fast", data_dir=".")
    assert set(T.list_tasks()) == set(T.TASKS)
    assert {n for n, v in T.list_tasks(include_left_out=True).items() if not v["available"]} == set(T.LEFT_OUT)


# ------------------------------------------------------------------ evaluate() end to end

WORDS = [f"w{i}" for i in range(1000)]


def _mini_sts(root: Path, reverse: bool):
    # s1 has 8 words, s2 shares j of them (j = 0..8) and has 8 - j fresh ones; gold = j.
    # BoW cosine = (j + 1) / 9 is increasing in j, so Spearman(cos, gold) = +1 (-1 if reversed).
    rows, k = ["sentence1\tsentence2\tscore"], 0
    for rep in range(3):
        for j in range(9):
            a = WORDS[k:k + 8]
            b = a[:j] + WORDS[k + 8:k + 16 - j]
            k += 16
            rows.append(f"{' '.join(a)}\t{' '.join(b)}\t{(8 - j) if reverse else j}")
    p = root / "sts" / "biosses" / "biosses_test.tsv"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(rows) + "\n", encoding="utf-8")


def _mini_scifact(root: Path):
    # Query i shares its 3 words with doc i only; every other doc is unrelated -> nDCG@10 = 1.
    r = root / "retrieval" / "scifact"
    (r / "qrels").mkdir(parents=True, exist_ok=True)
    q = [json.dumps({"_id": f"q{i}", "text": f"alpha{i} beta{i} gamma{i}", "metadata": {}}) for i in range(20)]
    q.append(json.dumps({"_id": "unjudged", "text": "nothing", "metadata": {}}))
    (r / "queries_test.jsonl").write_text("\n".join(q) + "\n", encoding="utf-8")
    import gzip
    docs = [json.dumps({"_id": f"d{i}", "title": f"alpha{i}", "text": f"beta{i} gamma{i} filler", "metadata": {}})
            for i in range(20)] + [json.dumps({"_id": f"x{i}", "title": "", "text": f"other{i} filler"})
                                  for i in range(30)]
    with gzip.open(r / "corpus.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(docs) + "\n")
    (r / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                          "".join(f"q{i}\td{i}\t1\n" for i in range(20)), encoding="utf-8")


def test_evaluate_mini_sts_and_retrieval(tmp_path):
    _mini_sts(tmp_path, reverse=False)
    _mini_scifact(tmp_path)
    enc = HashedBagOfWords()
    logs = []
    res = T.evaluate(enc, ["BIOSSES", "SciFact"], data_dir=tmp_path, log=logs.append)
    assert res["BIOSSES"]["main_score"] == pytest.approx(1.0)
    assert res["SciFact"]["main_score"] == pytest.approx(1.0)  # nDCG@10
    assert res["SciFact"]["n_items"] == 20  # the unjudged query is dropped
    assert len(logs) == 2 and "BIOSSES" in logs[0] and "texts" in logs[0]
    # instructions: STS both sides (one call); retrieval queries instructed, documents None
    sts_instr, sci_q, sci_d = enc.calls
    assert sts_instr[0] == T.STS_INSTRUCTION
    assert sci_q == (T.TASKS["SciFact"].instruction, 20) and sci_d == (None, 50)

    _mini_sts(tmp_path, reverse=True)
    assert T.evaluate(enc, ["BIOSSES"], data_dir=tmp_path, log=lambda s: None)["BIOSSES"]["main_score"] == \
        pytest.approx(-1.0)


def test_evaluate_quick_real_tasks(data_dir):
    enc = HashedBagOfWords(dim=1024)
    names = ["STS16", "SciFact", "AmazonCounterfactual", "TwentyNewsgroups"]
    res = T.evaluate(enc, names, data_dir=data_dir, suite="quick", log=lambda s: None)
    for name in names:
        r = res[name]
        for key in ("family", "split", "main_score", "per_item", "n_items", "note", "suite"):
            assert key in r, (name, key)
        assert r["suite"] == "quick" and r["split"] == "test" and np.isfinite(r["main_score"])
    # A bag of words beats chance clearly on each family.
    assert res["STS16"]["main_score"] > 0.3
    assert res["SciFact"]["main_score"] > 0.3
    assert res["AmazonCounterfactual"]["main_score"] > 0.5
    assert res["TwentyNewsgroups"]["main_score"] > 0.05
    assert "approximate" not in res["SciFact"]["note"] and "quick" in res["SciFact"]["note"]
    avg = T.family_averages(res)
    assert set(avg) == {"sts", "retrieval", "classification", "clustering"}
    assert avg["sts"] == pytest.approx(res["STS16"]["main_score"])


def test_encoder_shape_is_checked(tmp_path):
    _mini_sts(tmp_path, reverse=False)

    class Bad:
        def encode(self, texts, instruction=None):
            return np.zeros((len(texts) - 1, 4))

    with pytest.raises(ValueError, match="expected \\(N, D\\)"):
        T.evaluate(Bad(), ["BIOSSES"], data_dir=tmp_path, log=lambda s: None)


# ------------------------------------------------------------------ independent reader (fixture)

def _digest(texts) -> str:
    import hashlib
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


def test_full_suite_matches_independent_reader(full, data_dir, fixtures_dir):
    # reference.json: scripts/fixtures/make_eval_tasks_fixtures.py reads the same files with the
    # csv module (QUOTE_NONE for tab files) / json / gzip, independently of eval/loaders.py.
    ref = json.loads((fixtures_dir / "eval_tasks" / "reference.json").read_text(encoding="utf-8"))
    for name, r in ref["sts"].items():
        data = full[name]
        assert (len(data.gold), _digest(data.s1), _digest(data.s2)) == (r["n"], r["s1"], r["s2"]), name
        assert data.gold.sum() == pytest.approx(r["gold_sum"], abs=1e-6)
    for name, r in ref["retrieval"].items():
        data = full[name]
        assert (len(data.queries), len(data.corpus)) == (r["queries"], r["docs"])
        assert _digest(data.queries.values()) == r["query_text"] and _digest(data.corpus.values()) == r["doc_text"]
    for name, r in ref["classification"].items():
        data = full[name]
        assert _digest(data.train_texts) == r["train_text"] and _digest(data.test_texts) == r["test_text"], name
        counts = {data.label_names[i]: int(c) for i, c in enumerate(np.bincount(data.test_labels)) if c}
        assert counts == r["test_label_counts"], name
    for name, path, col in [("TwentyNewsgroups", "twentynewsgroups/20news_bydate_subjects.tsv", "subject"),
                            ("Reddit", "reddit/reddit_test.tsv.gz", "text"),
                            ("StackExchange", "stackexchange/stackexchange_test.tsv.gz", "text")]:
        texts, labels = loaders.read_labelled_tsv(Path(data_dir) / "clustering" / path, "label", col)
        r = ref["clustering"][name]
        assert (len(texts), len(set(labels)), _digest(texts)) == (r["n"], r["labels"], r["text"]), name

"""The task registry, the two suites, and `evaluate()`: any encoder in, MTEB-style scores out.

An encoder is anything with `encode(texts: list[str], instruction: str | None = None) -> (N, D)`
(torch tensor or numpy). The encoder decides how to use the instruction (mltp formats it E5-style,
"Instruct: {instruction}\\nQuery: {text}"). Which side gets it follows E5-mistral / the MLTP paper:
retrieval queries get the task instruction and documents get None; STS, classification and
clustering texts all get the instruction (both sides).

Tasks (main score), data from shared/data (MANIFEST.md):
  STS (cosine Spearman)        STSBenchmark (test 1,379), SICK-R (all 9,927), STS12..STS16 (test
                               3,108 / 1,500 / 3,750 / 3,000 / 1,186), BIOSSES (100)
  Retrieval (nDCG@10)          SciFact (exact BEIR corpus 5,183, 300 queries, 339 qrels),
                               ArguAna (REBUILT corpus 8,784 docs vs BEIR 8,674: approximate;
                               drops hits whose doc id equals the query id, as MTEB)
  Classification (accuracy)    Banking77, Emotion, TweetSentimentExtraction,
                               AmazonCounterfactual (en), IMDB: logistic regression on
                               `samples_per_label` train examples per label, 10 experiments
  Clustering (V-measure)       TwentyNewsgroups, Reddit, StackExchange: seeded sets rebuilt from
                               the source data (MTEB's exact sampled sets are not available)
Left out (queries and qrels exist, corpus does not; see MANIFEST "Wanted but not obtained"):
  NFCorpus, SCIDOCS, FiQA2018, Touche2020. See LEFT_OUT.

MTEB settings followed (mteb v1 task files, the version the paper and E5-mistral report):
- classification: n_experiments 10 everywhere; samples_per_label 8 (AbsTaskClassification
  default: Banking77, IMDB), 16 (EmotionClassification), 32 (TweetSentimentExtraction,
  AmazonCounterfactual). MTEB v1 predicts the WHOLE test split (no cap: IMDB 25,000, Emotion
  2,000 of its test split; MTEB also scores Emotion/AmazonCounterfactual "validation", which we
  skip). Newer mteb ".v2" variants subsample test splits to 2,048; we follow v1.
- clustering sets (legacy MTEB task descriptions): Reddit and StackExchange "25 sets, each with
  10-50 classes, and each class with 100-1000 sentences"; TwentyNewsgroups "10 sets" of subject
  lines with all 20 groups. The set sizes of TwentyNewsgroups are not published in the task file:
  we draw 50-500 subjects per group (about 1,000-10,000 per set). Sampling is without replacement
  inside a set, labels and sizes drawn uniformly, numpy RandomState seeded per task: fixed.

Shapes: N = texts, D = embedding width, Q = queries, C = corpus documents.
"""
from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import loaders
from .sts import to_numpy

# E5-mistral's one instruction for every STS task (Wang et al. 2024, Table 13). Owned here; training
# formats its STS-like sources with the same string (mltp/data/sources.py imports it).
STS_INSTRUCTION = "Retrieve semantically similar text."

FAMILIES = ("sts", "retrieval", "classification", "clustering")
SUITES = ("quick", "study", "full")
SEED = 42  # every sampled subset derives its seed from this + the task name (see _rng)

# ---------------------------------------------------------------------------------------------
# The quick suite: one table, so the lead can retune after measuring. Deterministic subsets of
# every task, sized so SmolLM2-135M on a 2-core CPU runs all four families in about five minutes
# (budget roughly 6,000 short texts; long texts (SciFact abstracts, ArguAna arguments, IMDB
# reviews) cost ~10x a short one, so their counts are kept low).
#   sts:            pairs        seeded sample of pairs (all if the task has fewer)
#   retrieval:      queries      seeded sample of judged queries (all if fewer)
#                   distractors  corpus = every judged doc of those queries + this many others
#   classification: test         seeded sample of the test split
#                   pool         train pool = this many train rows per label (seeded); the 10
#                                experiments draw samples_per_label of them, as MTEB does
#                                from the full train split
#   clustering:     sets, labels, per_label  (sets of `labels` classes x `per_label` texts)
QUICK = {
    "STSBenchmark": dict(pairs=100),
    "SICK-R": dict(pairs=100),
    "STS12": dict(pairs=100),
    "STS13": dict(pairs=100),
    "STS14": dict(pairs=100),
    "STS15": dict(pairs=100),
    "STS16": dict(pairs=100),
    "BIOSSES": dict(pairs=100),
    "SciFact": dict(queries=150, distractors=200),
    "ArguAna": dict(queries=60, distractors=200),
    "Banking77": dict(test=250, pool=10),
    "Emotion": dict(test=250, pool=32),
    "TweetSentimentExtraction": dict(test=250, pool=64),
    "AmazonCounterfactual": dict(test=250, pool=64),
    "IMDB": dict(test=100, pool=16),
    "TwentyNewsgroups": dict(sets=2, labels=20, per_label=8),
    "Reddit": dict(sets=2, labels=10, per_label=15),
    "StackExchange": dict(sets=2, labels=10, per_label=15),
}

# The study suite: the quick suite with 6 clustering sets a dataset instead of 2. Sized from the
# committed quick-suite runs (scripts/size_study_suite.py, results/study-suite-sizing.md): the W
# on/off difference's item-level 95% CI half-width is under 0.01 in every family but clustering,
# whose 2 sets a dataset also leave its per-set test unable to reject (2^2 sign patterns).
STUDY = {**QUICK, **{name: dict(QUICK[name], sets=6) for name in ("TwentyNewsgroups", "Reddit", "StackExchange")}}
SUBSETS = {"quick": QUICK, "study": STUDY}

LEFT_OUT = {
    "NFCorpus": "corpus not available (queries/qrels only); see MANIFEST 'Wanted but not obtained'",
    "SCIDOCS": "corpus not available (queries/qrels only); see MANIFEST 'Wanted but not obtained'",
    "FiQA2018": "corpus not available (queries/qrels only); see MANIFEST 'Wanted but not obtained'",
    "Touche2020": "corpus not available; anserini qrels keep positives only",
}


# ---------------------------------------------------------------------------------------------
# What a built task holds (texts and labels only; no embeddings).

@dataclass
class STSData:
    s1: list[str]
    s2: list[str]
    gold: np.ndarray  # (N,)

    def texts(self):
        return [("both", self.s1 + self.s2)]


@dataclass
class RetrievalData:
    queries: dict[str, str]  # judged queries only (MTEB drops the others)
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]
    ignore_identical_ids: bool

    def texts(self):
        return [("query", list(self.queries.values())), ("doc", list(self.corpus.values()))]


@dataclass
class ClassificationData:
    train_texts: list[str]  # the train pool the experiments draw from
    train_labels: np.ndarray  # (N_train,) int label ids
    test_texts: list[str]
    test_labels: np.ndarray  # (N_test,) int label ids
    label_names: list[str]
    samples_per_label: int
    n_experiments: int

    def texts(self):
        # Upper bound: only the union of the experiments' rows is encoded.
        return [("both", self.train_texts + self.test_texts)]


@dataclass
class ClusteringData:
    texts_: list[str]  # the pool: every text used by some set
    labels: np.ndarray  # (N,) int label ids
    sets: list[np.ndarray]  # each (n_set,) indices into texts_/labels

    def texts(self):
        return [("both", self.texts_)]


@dataclass(frozen=True)
class Task:
    name: str
    family: str
    instruction: str
    build: Callable[[Path, str, str], object]  # (data_dir, suite, task name) -> *Data
    note: str = ""


# ---------------------------------------------------------------------------------------------
# Seeded sampling helpers. numpy's legacy RandomState, not default_rng: its streams are frozen
# across numpy versions (NEP 19), so a subset is the same every run, on every machine.

def _rng(name: str, what: str = "") -> np.random.RandomState:
    return np.random.RandomState((SEED * 1_000_003 + zlib.crc32(f"{name}/{what}".encode())) % 2**32)


def _sample(n_total: int, n: int, rng: np.random.RandomState) -> np.ndarray:
    # Sorted so the subset keeps file order; all rows when n >= n_total.
    if n >= n_total:
        return np.arange(n_total)
    return np.sort(rng.choice(n_total, size=n, replace=False))


def _label_ids(names_train: list[str], names_test: list[str], where: str):
    label_names = sorted(set(names_train))
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted(set(names_test) - set(index))
    if unknown:
        raise ValueError(f"{where}: test labels {unknown[:5]} never occur in the train split")
    to_ids = lambda names: np.array([index[n] for n in names], dtype=np.int64)  # noqa: E731
    return to_ids(names_train), to_ids(names_test), label_names


# ---------------------------------------------------------------------------------------------
# Builders, one per family; each closes over where its files are.

def _sts(reader: Callable[[Path], tuple]):
    def build(data_dir: Path, suite: str, name: str) -> STSData:
        s1, s2, gold = reader(data_dir)
        if suite in SUBSETS:
            keep = _sample(len(gold), SUBSETS[suite][name]["pairs"], _rng(name, "pairs"))
            s1, s2, gold = [s1[i] for i in keep], [s2[i] for i in keep], [gold[i] for i in keep]
        return STSData(list(s1), list(s2), np.asarray(gold, dtype=np.float64))
    return build


def _retrieval(folder: str, queries_file: str, corpus_file: str, ignore_identical_ids: bool):
    def build(data_dir: Path, suite: str, name: str) -> RetrievalData:
        root = data_dir / "retrieval" / folder
        queries = loaders.read_beir_queries(root / queries_file)
        corpus = loaders.read_beir_corpus(root / corpus_file)
        qrels = loaders.read_beir_qrels(root / "qrels" / "test.tsv")
        # MTEB/BEIR evaluate only queries that have judgements.
        judged = [q for q in queries if q in qrels]
        if not judged:
            raise ValueError(f"{root}: no query in {queries_file} has a judgement in qrels/test.tsv")
        if suite in SUBSETS:
            cfg = SUBSETS[suite][name]
            judged = [judged[i] for i in _sample(len(judged), cfg["queries"], _rng(name, "queries"))]
            relevant = {d for q in judged for d in qrels[q] if d in corpus}
            others = sorted(d for d in corpus if d not in relevant)
            extra = [others[i] for i in _sample(len(others), cfg["distractors"], _rng(name, "docs"))]
            keep = relevant | set(extra)
            corpus = {d: t for d, t in corpus.items() if d in keep}
        # Fresh containers: the readers' results are cached and shared.
        queries = {q: queries[q] for q in judged}
        qrels = {q: dict(qrels[q]) for q in judged}
        return RetrievalData(queries, dict(corpus), qrels, ignore_identical_ids)
    return build


def _classification(reader: Callable[[Path], tuple], samples_per_label: int, n_experiments: int = 10):
    def build(data_dir: Path, suite: str, name: str) -> ClassificationData:
        (train_texts, train_names), (test_texts, test_names) = reader(data_dir)
        train_y, test_y, label_names = _label_ids(train_names, test_names, name)
        if suite in SUBSETS:
            cfg = SUBSETS[suite][name]
            keep = _sample(len(test_y), cfg["test"], _rng(name, "test"))
            test_texts, test_y = [test_texts[i] for i in keep], test_y[keep]
            # Train pool: the first `pool` rows of each label in a seeded shuffle, kept in file order.
            order = _rng(name, "pool").permutation(len(train_y))
            taken: dict[int, int] = {}
            pool = []
            for i in order:
                if taken.get(train_y[i], 0) < cfg["pool"]:
                    taken[train_y[i]] = taken.get(train_y[i], 0) + 1
                    pool.append(i)
            pool = np.sort(np.array(pool))
            train_texts, train_y = [train_texts[i] for i in pool], train_y[pool]
        return ClassificationData(list(train_texts), train_y, list(test_texts), test_y, label_names,
                                  samples_per_label, n_experiments)
    return build


def _draw_sets(labels: np.ndarray, rng: np.random.RandomState, n_sets: int,
               labels_per_set: tuple[int, int], per_label: tuple[int, int]) -> list[np.ndarray]:
    # Each set: k classes drawn without replacement, then m texts of each class (m capped by
    # what the class has); k and m uniform in their inclusive ranges. Indices into `labels`.
    classes = np.unique(labels)
    by_class = {c: np.flatnonzero(labels == c) for c in classes}
    sets = []
    for _ in range(n_sets):
        k = min(int(rng.randint(labels_per_set[0], labels_per_set[1] + 1)), len(classes))
        chosen = rng.choice(classes, size=k, replace=False)
        members = []
        for c in np.sort(chosen):
            m = min(int(rng.randint(per_label[0], per_label[1] + 1)), len(by_class[c]))
            members.append(rng.choice(by_class[c], size=m, replace=False))
        sets.append(np.sort(np.concatenate(members)))
    return sets


def _clustering(reader: Callable[[Path], tuple], n_sets: int, labels_per_set: tuple[int, int],
                per_label: tuple[int, int]):
    def build(data_dir: Path, suite: str, name: str) -> ClusteringData:
        texts, names = reader(data_dir)
        label_names = sorted(set(names))
        index = {n: i for i, n in enumerate(label_names)}
        labels = np.array([index[n] for n in names], dtype=np.int64)  # (N_source,)
        if suite in SUBSETS:
            # Drawn one after another from one stream: the study suite's first 2 sets are the quick ones.
            cfg = SUBSETS[suite][name]
            sets = _draw_sets(labels, _rng(name, "quick-sets"), cfg["sets"], (cfg["labels"],) * 2,
                              (cfg["per_label"],) * 2)
        else:
            sets = _draw_sets(labels, _rng(name, "sets"), n_sets, labels_per_set, per_label)
        # Pool = rows used by any set; re-index the sets into the pool.
        pool = np.unique(np.concatenate(sets))  # (P,) sorted source rows
        sets = [np.searchsorted(pool, s) for s in sets]
        return ClusteringData([texts[i] for i in pool], labels[pool], sets)
    return build


# ---------------------------------------------------------------------------------------------
# Dataset readers bound to their files.

def _stsb(d: Path):
    return loaders.read_stsb(d / "sts" / "stsbenchmark" / "sts-test.csv")


def _combined(year: int):
    return lambda d: loaders.read_sts_pairs(d / "sts" / f"sts{year}" / f"sts{year}_test_combined.tsv",
                                            "sentence1", "sentence2", "score")


def _sick(d: Path):
    return loaders.read_sts_pairs(d / "sts" / "sick-r" / "sick_all_9927.tsv",
                                  "sentence_A", "sentence_B", "relatedness_score")


def _biosses(d: Path):
    return loaders.read_sts_pairs(d / "sts" / "biosses" / "biosses_test.tsv", "sentence1", "sentence2", "score")


def _banking77(d: Path):
    root = d / "classification" / "banking77"
    return (loaders.read_csv_columns(root / "train.csv", "text", "category"),
            loaders.read_csv_columns(root / "test.csv", "text", "category"))


def _emotion(d: Path):
    root = d / "classification" / "emotion"
    return loaders.read_emotion(root / "train.txt.gz"), loaders.read_emotion(root / "test.txt")


def _tweets(d: Path):
    root = d / "classification" / "tweet_sentiment_extraction"
    return (loaders.read_csv_columns(root / "train_no_selected_text.csv.gz", "text", "sentiment"),
            loaders.read_csv_columns(root / "test.csv", "text", "sentiment"))


def _amazon_cf(d: Path):
    root = d / "classification" / "amazon_counterfactual" / "en"
    return (loaders.read_amazon_counterfactual(root / "EN_train.tsv"),
            loaders.read_amazon_counterfactual(root / "EN_test.tsv"))


def _imdb(d: Path):
    root = d / "classification" / "imdb"
    return loaders.read_imdb(root / "train.jsonl.gz"), loaders.read_imdb(root / "test.jsonl.gz")


def _20ng(d: Path):
    return loaders.read_labelled_tsv(d / "clustering" / "twentynewsgroups" / "20news_bydate_subjects.tsv",
                                     "label", "subject")


def _reddit(d: Path):
    return loaders.read_labelled_tsv(d / "clustering" / "reddit" / "reddit_test.tsv.gz", "label", "text")


def _stackexchange(d: Path):
    return loaders.read_labelled_tsv(d / "clustering" / "stackexchange" / "stackexchange_test.tsv.gz",
                                     "label", "text")


# ---------------------------------------------------------------------------------------------
# The registry. Instructions: E5-mistral's MTEB instructions (unilm/e5 utils
# get_task_def_by_task_name_and_type), which the MLTP paper reuses.

TASKS: dict[str, Task] = {t.name: t for t in [
    Task("STSBenchmark", "sts", STS_INSTRUCTION, _sts(_stsb)),
    Task("SICK-R", "sts", STS_INSTRUCTION, _sts(_sick)),
    Task("STS12", "sts", STS_INSTRUCTION, _sts(_combined(12))),
    Task("STS13", "sts", STS_INSTRUCTION, _sts(_combined(13))),
    Task("STS14", "sts", STS_INSTRUCTION, _sts(_combined(14))),
    Task("STS15", "sts", STS_INSTRUCTION, _sts(_combined(15))),
    Task("STS16", "sts", STS_INSTRUCTION, _sts(_combined(16))),
    Task("BIOSSES", "sts", STS_INSTRUCTION, _sts(_biosses)),
    Task("SciFact", "retrieval", "Given a scientific claim, retrieve documents that support or refute the claim",
         _retrieval("scifact", "queries_test.jsonl", "corpus.jsonl.gz", ignore_identical_ids=False),
         note="exact BEIR corpus"),
    Task("ArguAna", "retrieval", "Given a claim, find documents that refute the claim",
         _retrieval("arguana", "queries_test.jsonl.gz", "corpus_reconstructed.jsonl.gz", ignore_identical_ids=True),
         note="approximate: rebuilt corpus (8,784 docs vs BEIR 8,674; 5 judged docs absent)"),
    Task("Banking77", "classification", "Given a online banking query, find the corresponding intents",
         _classification(_banking77, samples_per_label=8)),
    Task("Emotion", "classification",
         "Classify the emotion expressed in the given Twitter message into one of the six emotions: "
         "anger, fear, joy, love, sadness, and surprise",
         _classification(_emotion, samples_per_label=16), note="test split only (MTEB also scores validation)"),
    Task("TweetSentimentExtraction", "classification",
         "Classify the sentiment of a given tweet as either positive, negative, or neutral",
         _classification(_tweets, samples_per_label=32),
         note="train pool 27,480 of Kaggle's 27,481 rows (one empty text missing)"),
    Task("AmazonCounterfactual", "classification",
         "Classify a given Amazon customer review text as either counterfactual or not-counterfactual",
         _classification(_amazon_cf, samples_per_label=32), note="en config, test split only"),
    Task("IMDB", "classification", "Classify the sentiment expressed in the given movie review text from the IMDB dataset",
         _classification(_imdb, samples_per_label=8), note="full 25,000-review test split, as MTEB v1"),
    Task("TwentyNewsgroups", "clustering", "Identify the topic or theme of the given news articles",
         _clustering(_20ng, n_sets=10, labels_per_set=(20, 20), per_label=(50, 500)),
         note="sets rebuilt (seeded), not MTEB's exact sets"),
    Task("Reddit", "clustering", "Identify the topic or theme of Reddit posts based on the titles",
         _clustering(_reddit, n_sets=25, labels_per_set=(10, 50), per_label=(100, 1000)),
         note="sets rebuilt (seeded) from TWEAC reddit test titles, not MTEB's exact sets"),
    Task("StackExchange", "clustering", "Identify the topic or theme of StackExchange posts based on the titles",
         _clustering(_stackexchange, n_sets=25, labels_per_set=(10, 50), per_label=(100, 1000)),
         note="sets rebuilt (seeded) from TWEAC stackexchange test titles, not MTEB's exact sets"),
]}

def list_tasks(include_left_out: bool = False) -> dict[str, dict]:
    out = {n: {"family": t.family, "instruction": t.instruction, "note": t.note, "available": True}
           for n, t in TASKS.items()}
    if include_left_out:
        out.update({n: {"family": "retrieval", "instruction": None, "note": why, "available": False}
                    for n, why in LEFT_OUT.items()})
    return out


# ---------------------------------------------------------------------------------------------
# Where the data lives.

REPO_ROOT = Path(__file__).resolve().parents[1]


def user_data_dir() -> Path:
    """Where `run.py data` puts the data by default: $XDG_CACHE_HOME/mltp/data, else ~/.cache/mltp/data."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mltp" / "data"


FETCH_HINT = "python run.py data"  # the command that makes the user data directory from the public sources


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """data_dir argument, else $MLTP_DATA_DIR, else ../shared/data beside the repo, else the user cache."""
    if data_dir is not None:
        chosen = Path(data_dir)
    elif os.environ.get("MLTP_DATA_DIR"):
        chosen = Path(os.environ["MLTP_DATA_DIR"])
    else:
        candidates = [REPO_ROOT.parent / "shared" / "data", user_data_dir()]
        chosen = next((c for c in candidates if (c / "MANIFEST.md").is_file()), None)
        if chosen is None:
            raise FileNotFoundError(
                f"benchmark data not found in {[str(c) for c in candidates]}; fetch it from its public sources "
                f"with `{FETCH_HINT}` (into {user_data_dir()}), or pass data_dir= or set MLTP_DATA_DIR")
    if not chosen.is_dir():
        raise FileNotFoundError(f"benchmark data folder does not exist: {chosen}")
    return chosen


def _resolve_tasks(tasks, suite: str | None) -> tuple[list[str], str]:
    if isinstance(tasks, str):
        if tasks not in SUITES:
            raise ValueError(f"tasks must be one of {SUITES} or a list of task names, got {tasks!r}")
        if suite is not None and suite != tasks:
            raise ValueError(f"tasks={tasks!r} names a suite; it conflicts with suite={suite!r}")
        return list(TASKS), tasks
    names = list(tasks)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        why = [f"{n} ({LEFT_OUT[n]})" for n in unknown if n in LEFT_OUT]
        raise ValueError(f"unknown task(s) {unknown}; known: {list(TASKS)}" + (f"; left out: {why}" if why else ""))
    suite = suite or "full"
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {SUITES}, got {suite!r}")
    return names, suite


def build_task(name: str, data_dir=None, suite: str = "full"):
    """The texts/labels of one task in one suite (no encoding)."""
    names, suite = _resolve_tasks([name], suite)
    return TASKS[name].build(resolve_data_dir(data_dir), suite, name)


def suite_text_counts(data_dir=None, suite: str = "quick", min_chars: int = 0) -> dict[str, int]:
    """Distinct texts each task would encode at most (classification: whole train pool + test),
    counting only texts of at least `min_chars` characters."""
    d = resolve_data_dir(data_dir)
    return {n: sum(sum(1 for t in set(texts) if len(t) >= min_chars) for _, texts in TASKS[n].build(d, suite, n).texts())
            for n in TASKS}


def evaluation_texts(data_dir=None, tasks="full") -> set[str]:
    """Every evaluation text a model could have been trained on by accident, for decontamination:
    STS sentences, retrieval test QUERIES (not corpora), classification TEST texts, clustering texts."""
    names, suite = _resolve_tasks(tasks, None)
    d = resolve_data_dir(data_dir)
    out: set[str] = set()
    for n in names:
        data = TASKS[n].build(d, suite, n)
        if isinstance(data, STSData):
            out.update(data.s1, data.s2)
        elif isinstance(data, RetrievalData):
            out.update(data.queries.values())
        elif isinstance(data, ClassificationData):
            out.update(data.test_texts)
        else:
            out.update(data.texts_)
    return out


# ---------------------------------------------------------------------------------------------
# Encoding and scoring.

def encode_texts(encoder, texts: list[str], instruction: str | None) -> np.ndarray:
    """Encode each distinct text once and scatter back: (N, D) rows aligned with `texts`."""
    unique = list(dict.fromkeys(texts))
    # float32 whatever the encoder returns: half the memory of a large corpus, and the scorers
    # compute in float64 anyway
    emb = to_numpy(encoder.encode(unique, instruction=instruction), np.float32)  # (U, D)
    if emb.ndim != 2 or emb.shape[0] != len(unique):
        raise ValueError(f"encoder.encode returned shape {emb.shape} for {len(unique)} texts; expected (N, D)")
    row = {t: i for i, t in enumerate(unique)}
    return emb[[row[t] for t in texts]]  # (N, D)


def _run_sts(encoder, task: Task, data: STSData):
    from .sts import score_sts
    emb = encode_texts(encoder, data.s1 + data.s2, task.instruction)  # (2N, D)
    n = len(data.s1)
    return score_sts(emb[:n], emb[n:], data.gold), len(set(data.s1 + data.s2))


def _run_retrieval(encoder, task: Task, data: RetrievalData):
    from .retrieval import score_retrieval
    qids, dids = list(data.queries), list(data.corpus)
    q_emb = encode_texts(encoder, [data.queries[q] for q in qids], task.instruction)  # (Q, D)
    d_emb = encode_texts(encoder, [data.corpus[d] for d in dids], None)  # (C, D)
    scores = score_retrieval(q_emb, d_emb, qids, dids, data.qrels, ignore_identical_ids=data.ignore_identical_ids)
    return scores, len(set(data.queries.values())) + len(set(data.corpus.values()))


def _run_classification(encoder, task: Task, data: ClassificationData):
    from .classification import score_classification, undersample_experiments
    experiments = undersample_experiments(data.train_labels, data.samples_per_label, n_experiments=data.n_experiments,
                                          seed=SEED)
    used = np.unique(np.concatenate(experiments))  # (U,) train rows any experiment trains on
    test_emb = encode_texts(encoder, data.test_texts, task.instruction)  # (N_test, D)
    used_emb = encode_texts(encoder, [data.train_texts[i] for i in used], task.instruction)  # (U, D)
    # Only rows in the experiments are filled; the rest stay NaN so a wrong index cannot go unnoticed.
    train_emb = np.full((len(data.train_texts), used_emb.shape[1]), np.nan, dtype=used_emb.dtype)
    train_emb[used] = used_emb
    scores = score_classification(train_emb, data.train_labels, test_emb, data.test_labels, experiments)
    return scores, len({data.train_texts[i] for i in used} | set(data.test_texts))


def _run_clustering(encoder, task: Task, data: ClusteringData):
    from .clustering import score_clustering
    emb = encode_texts(encoder, data.texts_, task.instruction)  # (N, D)
    return score_clustering(emb, data.labels, data.sets), len(set(data.texts_))


RUNNERS = {"sts": _run_sts, "retrieval": _run_retrieval, "classification": _run_classification,
           "clustering": _run_clustering}


def evaluate(encoder, tasks="quick", data_dir=None, *, log=print, suite: str | None = None) -> dict[str, dict]:
    """Evaluate `encoder` on a suite ("quick" | "study" | "full") or a list of task names (in `suite`,
    default "full"). Returns {task: {"family", "split", "main_score", <metrics>, "per_item",
    "n_items", "note", "suite", "instruction", "n_texts" (distinct texts encoded), "seconds"}}."""
    if not callable(getattr(encoder, "encode", None)):
        raise ValueError(f"encoder {type(encoder).__name__} has no encode(texts, instruction=None) method")
    names, suite = _resolve_tasks(tasks, suite)
    d = resolve_data_dir(data_dir)
    results = {}
    for name in names:
        task = TASKS[name]
        start = time.perf_counter()
        data = task.build(d, suite, name)
        scores, n_texts = RUNNERS[task.family](encoder, task, data)
        seconds = time.perf_counter() - start
        note = "; ".join(x for x in (task.note, f"{suite} subset" if suite in SUBSETS else "") if x)
        results[name] = {**scores, "family": task.family, "split": "test", "main_score": float(scores["main_score"]),
                         "note": note, "suite": suite, "instruction": task.instruction,
                         "n_texts": n_texts, "seconds": seconds}
        log(f"[{suite}] {name} ({task.family}): {n_texts} texts, {seconds:.1f} s, main score {results[name]['main_score']:.4f}")
    return results


def family_averages(results: dict[str, dict]) -> dict[str, float]:
    """Mean main score per family over the tasks present in `results`."""
    by_family: dict[str, list[float]] = {}
    for r in results.values():
        by_family.setdefault(r["family"], []).append(float(r["main_score"]))
    return {f: float(np.mean(v)) for f, v in by_family.items()}

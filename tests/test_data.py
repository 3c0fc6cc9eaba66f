"""The training mixture (mltp/data/mixture.py, mltp/data/sources.py) against the raw files.

Reference values come from this file's own deliberately plain readers of the raw data (a tab
split, csv, a line count), written separately from mltp/data/sources.py, and from rows read by eye in
the files (MRPC's first line, WordNet's "entity" synset).
"""
import builtins
import csv
import gzip
import io
import json
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from mltp.data.mixture import (
    CLASSIFICATION_SOURCES, DEFAULT_SOURCES, SOURCES, Pair, build_mixture, build_mixture_with_dropped,
    instruction_for, is_symmetric, mixture_report,
)

SMALL = ("mrpc", "trecqa", "stsb", "sts12", "scifact")  # the sources that read in well under a second


def norm(text):
    # written apart from mltp.data.sources.normalize_text on purpose (lower, not casefold)
    return " ".join(text.lower().split())


def letters_digits(text):
    # written apart from mltp.data.mixture.contamination_key on purpose (a regex, lower, not casefold)
    return re.sub(r"[\W_]+", "", text.lower())


def plain_lines(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig") as f:
        return [line.rstrip("\r\n") for line in f]


def read(data_dir, name, seed=0):
    return SOURCES[name].read(data_dir, random.Random(seed))


# ---------------------------------------------------------------------------------------------
# shared builds (each costs seconds: build once per session)


@pytest.fixture(scope="session")
def eval_texts(data_dir):
    """Every STS evaluation sentence, read independently: STS12-16 test, STS-B test, SICK all, BIOSSES."""
    texts = set()
    for year in (12, 13, 14, 15, 16):
        for line in plain_lines(data_dir / f"sts/sts{year}/sts{year}_test_combined.tsv")[1:]:
            texts.update(line.split("\t")[1:3])
    for line in plain_lines(data_dir / "sts/stsbenchmark/sts-test.csv"):
        texts.update(line.split("\t")[5:7])
    for line in plain_lines(data_dir / "sts/sick-r/sick_all_9927.tsv")[1:]:
        texts.update(line.split("\t")[1:3])
    for line in plain_lines(data_dir / "sts/biosses/biosses_test.tsv")[1:]:
        texts.update(line.split("\t")[0:2])
    assert len(texts) > 20_000
    return texts


@pytest.fixture(scope="session")
def recorded_build(data_dir):
    """Every source, uncapped, not decontaminated, and the path of every file opened meanwhile.
    One build serves most tests: reading WordNet and Debian takes seconds."""
    opened = []
    real_open = builtins.open

    def recording_open(file, *args, **kwargs):
        opened.append(Path(file).resolve())
        return real_open(file, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builtins, "open", recording_open)  # gzip.open opens through builtins.open
        mp.setattr(io, "open", recording_open)
        rows = build_mixture(data_dir, max_per_source=None, include_classification=True)
    return rows, opened


@pytest.fixture(scope="session")
def full_rows(recorded_build):
    """The default sources only: each source has its own generator, so these rows are exactly
    what build_mixture(data_dir, max_per_source=None) returns, in another order."""
    return [row for row in recorded_build[0] if row.source in DEFAULT_SOURCES]


@pytest.fixture(scope="session")
def by_source(full_rows):
    groups = defaultdict(list)
    for row in full_rows:
        groups[row.source].append(row)
    return groups


@pytest.fixture(scope="session")
def clean_build(data_dir, eval_texts):
    return build_mixture_with_dropped(data_dir, max_per_source=None, exclude_texts=eval_texts)


# ---------------------------------------------------------------------------------------------
# readers


def test_mrpc_rows_and_negatives(data_dir):
    lines = [line.split("\t") for line in plain_lines(data_dir / "training/mrpc/msr-para-train.tsv")[1:]]
    rows = read(data_dir, "mrpc")
    assert len(rows) == sum(f[0] == "1" for f in lines) == 2407
    # first paraphrase pair of the file, read by eye
    assert rows[0].query.startswith('Amrozi accused his brother, whom he called "the witness"')
    assert rows[0].positive.startswith('Referring to him as only "the witness", Amrozi')
    non_paraphrase = {frozenset((f[3], f[4])) for f in lines if f[0] == "0"}
    with_negative = [r for r in rows if r.negative is not None]
    assert len(with_negative) > 20
    for r in with_negative:
        assert {frozenset((r.query, r.negative)), frozenset((r.positive, r.negative))} & non_paraphrase


def test_trecqa_rows_and_negatives(data_dir):
    with open(data_dir / "training/trecqa_wang/train.csv", newline="", encoding="utf-8") as f:
        records = list(csv.reader(f))[1:]
    answers = {(q, a): label for q, label, a in records}
    rows = read(data_dir, "trecqa")
    assert len(rows) == sum(label == "1" for label in answers.values()) == 348
    for r in rows:
        assert answers[(r.query, r.positive)] == "1"
        assert r.negative is None or answers[(r.query, r.negative)] == "0"
    assert sum(r.negative is not None for r in rows) > 300


@pytest.mark.parametrize("name, path, cols, header", [
    ("stsb", "sts/stsbenchmark/sts-train.csv", (4, 5, 6), False),
    ("sts12", "sts/sts12/sts12_train_combined.tsv", (3, 1, 2), True),
])
def test_sts_high_scores_become_pairs(data_dir, name, path, cols, header):
    score_col, a_col, b_col = cols
    lines = [line.split("\t") for line in plain_lines(data_dir / path)[1 if header else 0:]]
    score = {(f[a_col].strip(), f[b_col].strip()): float(f[score_col]) for f in lines}
    rows = read(data_dir, name)
    assert len(rows) == sum(float(f[score_col]) >= 4.0 for f in lines)
    for r in rows:
        assert score[(r.query, r.positive)] >= 4.0
        if r.negative is not None:
            partners = [(r.query, r.negative), (r.negative, r.query), (r.positive, r.negative), (r.negative, r.positive)]
            assert min(score.get(k, 5.0) for k in partners) <= 1.0
    if name == "stsb":
        assert (rows[0].query, rows[0].positive) == ("A plane is taking off.", "An air plane is taking off.")
        assert len(rows) == 1406


def test_scifact_claims_to_cited_abstracts(data_dir):
    root = data_dir / "retrieval/scifact"
    queries = {json.loads(l)["_id"]: json.loads(l)["text"] for l in plain_lines(root / "queries_train.jsonl")}
    cited = defaultdict(set)  # claim text -> cited doc ids (a few claims occur under two ids)
    qrels = plain_lines(root / "qrels/train.tsv")[1:]
    for line in qrels:
        qid, doc, _ = line.split("\t")
        cited[queries[qid]].add(doc)
    docs = {}
    for line in plain_lines(root / "corpus.jsonl.gz"):
        record = json.loads(line)
        docs[(record["title"] + " " + record["text"]).strip()] = record["_id"]
    rows = read(data_dir, "scifact")
    assert len(rows) == len(qrels) == 919
    for r in rows:
        assert docs[r.positive] in cited[r.query]
        assert docs[r.negative] not in cited[r.query]


def test_debian_dedup_and_sections(data_dir, by_source):
    records = [json.loads(l) for l in plain_lines(data_dir / "training/debian_descriptions/descriptions.jsonl.gz")]
    distinct_long = {norm(r["long"]) for r in records if r["long"].strip() and r["short"].strip()}
    rows = by_source["debian"]
    positives = [norm(r.positive) for r in rows]
    assert len(positives) == len(set(positives)) == len(distinct_long)
    assert len(records) - len(rows) > 3000  # the dedup really removed rows
    assert all(r.query and r.positive for r in rows)
    section = {}  # long text -> section of its first package (the one the dedup keeps)
    for r in records:
        section.setdefault(r["long"].strip(), r["section"])
    assert all(r.negative is None or section[r.negative] == section[r.positive] for r in rows)
    zero_ad = [r for r in rows if r.query == "Real-time strategy game of ancient warfare"]
    assert len(zero_ad) == 1 and zero_ad[0].positive.startswith('0 A.D. (pronounced "zero ey-dee")')


def test_wordnet_rows(data_dir, by_source):
    n_lemmas = n_examples = 0
    for name in ("data.noun.gz", "data.verb.gz", "data.adj.gz", "data.adv"):
        for line in plain_lines(data_dir / "training/wordnet" / name):
            if not line.startswith("  "):
                n_lemmas += int(line.split()[3], 16)
                n_examples += line.split(" | ", 1)[1].count('"') // 2
    rows = by_source["wordnet"]
    assert len(rows) == n_lemmas + n_examples
    pairs = {(r.query, r.positive) for r in rows}
    entity = "that which is perceived or known or inferred to have its own distinct existence (living or nonliving)"
    assert ("entity", entity) in pairs
    assert ("physical entity", "an entity that has physical existence") in pairs  # underscores -> spaces
    breathe = "draw air into, and expel out of, the lungs"
    assert ("breathe", breathe) in pairs and ("I can breathe better when the air is clean", breathe) in pairs
    assert ("outback", "inaccessible and sparsely populated") in pairs  # "(a)" marker gone
    assert not any(re.search(r"\((a|p|ip)\)$", r.query) for r in rows)
    # a sibling sense: another definition of the same lemma
    bank_senses = {r.positive for r in rows if r.query == "bank"}
    assert len(bank_senses) == 18  # 10 noun + 8 verb synsets of "bank" in WordNet 3.0
    for r in rows:
        if r.query == "bank":
            assert r.negative in bank_senses and r.negative != r.positive
    assert not any(r.negative for r in rows if r.query == "entity")  # one sense only


def test_classification_rows_follow_labels(data_dir):
    with open(data_dir / "classification/banking77/train.csv", newline="", encoding="utf-8") as f:
        records = list(csv.reader(f))[1:]
    label = {text.strip(): cat for text, cat in records}  # 4 texts occur twice, with the same label
    rows = read(data_dir, "banking77")
    assert len(rows) == len(records) == 10003
    for r in rows:
        assert label[r.positive] == label[r.query] != label[r.negative]
        assert r.positive != r.query


# ---------------------------------------------------------------------------------------------
# the mixture


def test_same_seed_same_mixture_other_seed_other_order(data_dir):
    a = build_mixture(data_dir, sources=SMALL, max_per_source=None, seed=0)
    b = build_mixture(data_dir, sources=SMALL, max_per_source=None, seed=0)
    c = build_mixture(data_dir, sources=SMALL, max_per_source=None, seed=1)
    assert a == b
    assert [(r.query, r.positive) for r in a] != [(r.query, r.positive) for r in c]
    assert Counter((r.query, r.positive) for r in a) == Counter((r.query, r.positive) for r in c)
    assert [r.source for r in a[:50]] != sorted(r.source for r in a[:50])  # shuffled across sources


def test_cap_samples_each_source(data_dir):
    rows = build_mixture(data_dir, sources=SMALL, max_per_source=500, seed=3)
    counts = Counter(r.source for r in rows)
    assert counts == {"mrpc": 500, "trecqa": 348, "stsb": 500, "sts12": 500, "scifact": 500}
    full = set(build_mixture(data_dir, sources=("mrpc",), max_per_source=None, seed=3))
    assert {r for r in rows if r.source == "mrpc"} <= full
    assert build_mixture(data_dir, sources=SMALL, max_per_source=500, seed=4) != rows
    with pytest.raises(ValueError, match="max_per_source"):
        build_mixture(data_dir, sources=SMALL, max_per_source=0)


def test_no_evaluation_file_is_opened(data_dir, recorded_build):
    rows, opened = recorded_build
    assert {r.source for r in rows} == set(DEFAULT_SOURCES) | set(CLASSIFICATION_SOURCES)
    # evaluation files per MANIFEST.md: any whose split column mentions test (incl. SICK "all")
    manifest = [line.split("|") for line in plain_lines(data_dir / "MANIFEST.md") if line.startswith("| ")]
    evaluation = {(data_dir / cols[3].strip()).resolve() for cols in manifest if "test" in cols[4]}
    assert len(evaluation) > 50
    assert opened and not (set(opened) & evaluation)
    assert not any(re.search("test|dev|val", p.name.lower()) or "sick" in str(p).lower() for p in opened)
    opened_rel = {str(p.relative_to(data_dir.resolve())) for p in opened}
    assert opened_rel == {f for name in SOURCES for f in SOURCES[name].files}


def test_decontamination(full_rows, clean_build, eval_texts):
    evaluation = {letters_digits(t) for t in eval_texts} - {""}

    def leaks(rows, key=letters_digits, against=evaluation):
        return Counter(
            r.source for r in rows
            if {key(r.query), key(r.positive), key(r.negative or "")} & against
        )

    before = leaks(full_rows)
    assert before["wordnet"] > 0 and before["stsb"] > 0  # the filter has real work to do
    # Matching on letters and digits finds what case/whitespace folding alone misses: WordNet
    # glosses that are STS14 OnWN sentences but for a final period.
    folded = leaks(full_rows, key=norm, against={norm(t) for t in eval_texts})
    assert before["wordnet"] > folded["wordnet"] + 100
    clean, dropped = clean_build
    assert leaks(clean) == Counter()
    for name in DEFAULT_SOURCES:
        assert dropped[name] == before[name]
    assert len(clean) == len(full_rows) - sum(before.values())


def test_instructions_and_report(data_dir):
    assert instruction_for("trecqa") == "Given a question, retrieve passages that answer the question"
    assert instruction_for("mrpc") == "Retrieve semantically similar text."
    assert all(instruction_for(name) for name in SOURCES)
    assert is_symmetric("stsb") and is_symmetric("mrpc") and not is_symmetric("scifact")
    with pytest.raises(ValueError, match="nosuch"):
        instruction_for("nosuch")
    with pytest.raises(ValueError, match="nosuch"):
        build_mixture(data_dir, sources=("nosuch",))
    with pytest.raises(ValueError, match="string 'mrpc'"):
        build_mixture(data_dir, sources="mrpc")

    rows = [Pair("q", "p", None, "mrpc"), Pair("q", "p", "n", "mrpc"), Pair("q", "p", "n", "banking77")]
    report = mixture_report(rows, {"mrpc": 5, "wordnet": 7})
    assert re.search(r"^mrpc\s+2\s+66\.7%\s+50%\s+5$", report, re.M)
    assert re.search(r"^wordnet\s+0\s+0\.0%\s+0%\s+7$", report, re.M)
    assert "INCLUDED (banking77)" in report
    assert "not used" in mixture_report(rows[:2])


# ---------------------------------------------------------------------------------------------
# bad input


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_malformed_lines_name_the_file(tmp_path):
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    write(tmp_path / "training/mrpc/msr-para-train.tsv", header + "1\t1\tonly three\n")
    with pytest.raises(ValueError, match=r"msr-para-train\.tsv:2"):
        build_mixture(tmp_path, sources=("mrpc",))
    write(tmp_path / "sts/stsbenchmark/sts-train.csv", "g\tf\ty\t1\tfive\ta\tb\n")
    with pytest.raises(ValueError, match=r"sts-train\.csv:1: score 'five'"):
        build_mixture(tmp_path, sources=("stsb",))
    with gzip.open(tmp_path / "data.noun.gz", "wt") as f:
        f.write("00001740 03 n 01 entity 0 000 no gloss here\n")
    (tmp_path / "training/wordnet").mkdir(parents=True)
    (tmp_path / "data.noun.gz").rename(tmp_path / "training/wordnet/data.noun.gz")
    with pytest.raises(ValueError, match=r"data\.noun\.gz:1"):
        build_mixture(tmp_path, sources=("wordnet",))


def test_missing_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"trecqa_wang/train\.csv"):
        build_mixture(tmp_path, sources=("trecqa",))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_mixture(tmp_path / "nowhere")

"""Readers for the training sources: each turns TRAIN-split files into (query, positive, negative) rows.

The paper trains on ~1.4M public (query, positive, hard negative) rows in the E5 style, with a
task instruction prepended to the query (arXiv 2409.02727). That mix is not available
here (shared/data/MANIFEST.md, "Wanted but not obtained"), so this file builds the closest honest
substitute from the small train splits that are staged:

| source                | query                  | positive               | hard negative (when one exists)          |
|-----------------------|------------------------|------------------------|------------------------------------------|
| mrpc                  | sentence 1             | its paraphrase         | a non-paraphrase of either sentence      |
| trecqa                | question               | a correct answer       | a wrong answer to the same question      |
| stsb, sts12           | sentence 1             | partner scored >= 4/5  | a partner of either scored <= 1/5        |
| scifact               | claim                  | cited abstract         | a random other abstract                  |
| debian                | one-line summary       | long description       | another package's text, same section     |
| wordnet               | lemma / example usage  | the synset definition  | the definition of another sense          |
| banking77, emotion,   | a text                 | another text, same     | a text with another label                |
| tweet_sentiment,      |                        | label (NV-Embed style) |                                          |
| amazon_counterfactual |                        |                        |                                          |

Only files named in a Source's `files` are opened; they are all TRAIN splits (or, for Debian and
WordNet, resources that no evaluation task draws from). SICK is never read: MTEB's SICK-R test
set is all of SICK, its train file included. Evaluation texts that leak in some other way
(WordNet glosses are STS OnWN sentences, STS-B train reuses STS12-16 test pairs) are removed by
`build_mixture(exclude_texts=...)` in data.py, not here.

Every random choice draws from the `rng` passed in, and every candidate list is kept in file
order (never a set), so the rows depend on the seed only, not on PYTHONHASHSEED.
"""
from __future__ import annotations

import csv
import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from eval.tasks import STS_INSTRUCTION
from eval.textio import open_text


@dataclass(frozen=True, slots=True)
class Pair:
    query: str
    positive: str
    negative: str | None  # None: the source has no hard negative for this row (in-batch only)
    source: str  # a key of SOURCES: the embedder looks up the instruction with it
    instruction: str | None = None  # None: the source's; rows of your own files carry theirs ("" = none)


@dataclass(frozen=True)
class Source:
    read: Callable[[Path, random.Random], list[Pair]]
    instruction: str  # E5-mistral style task instruction for the query side
    symmetric: bool  # True: the positive and negative sides get the instruction too (STS-like tasks)
    files: tuple[str, ...]  # every path (relative to data_dir) `read` opens; all train splits


# ---------------------------------------------------------------------------------------------
# file access: every file is opened by mltp.hygiene.textfile.open_text, so a missing file names its path


def _tsv_rows(path: Path, min_fields: int, header: bool) -> Iterator[tuple[int, list[str]]]:
    # Plain split on tabs, no quote handling: the STS-B and MRPC sentences contain bare `"`
    # (MANIFEST.md: "read them with quoting disabled").
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if header and lineno == 1:
                continue
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < min_fields:
                raise ValueError(
                    f"{path}:{lineno}: expected at least {min_fields} tab-separated fields, got {len(fields)}"
                )
            yield lineno, fields


def _score(path: Path, lineno: int, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: score {text!r} is not a number") from None


def _pick(rng: random.Random, candidates: list[str], *avoid: str) -> str | None:
    """A random candidate that is none of `avoid`, or None. A few blind draws first: filtering a
    Debian section of thousands of texts for every row would make the reader quadratic."""
    if not candidates:
        return None
    for _ in range(4):
        choice = rng.choice(candidates)
        if choice not in avoid:
            return choice
    pool = [c for c in candidates if c not in avoid]
    return rng.choice(pool) if pool else None


# ---------------------------------------------------------------------------------------------
# sentence pairs: MRPC, STS-B, STS12


def _pairs_with_negatives(
    labelled: list[tuple[str, str, bool | None]], rng: random.Random, source: str
) -> list[Pair]:
    """labelled: (a, b, True=similar / False=dissimilar / None=neither). Similar pairs become rows;
    a dissimilar partner of a (else of b) becomes the hard negative."""
    unlike: dict[str, list[str]] = defaultdict(list)  # sentence -> its dissimilar partners, file order
    for a, b, similar in labelled:
        if similar is False:
            unlike[a].append(b)
            unlike[b].append(a)
    rows = []
    for a, b, similar in labelled:
        if similar:
            negative = _pick(rng, unlike.get(a, []), a, b) or _pick(rng, unlike.get(b, []), a, b)
            rows.append(Pair(a, b, negative, source))
    return rows


def mrpc_pairs(data_dir: Path, rng: random.Random) -> list[Pair]:
    # Columns: Quality, #1 ID, #2 ID, #1 String, #2 String; Quality 1 = paraphrase.
    path = data_dir / "training/mrpc/msr-para-train.tsv"
    labelled = []
    for lineno, f in _tsv_rows(path, 5, header=True):
        if f[0] not in ("0", "1"):
            raise ValueError(f"{path}:{lineno}: Quality must be 0 or 1, got {f[0]!r}")
        labelled.append((f[3].strip(), f[4].strip(), f[0] == "1"))
    return _pairs_with_negatives(labelled, rng, "mrpc")


STS_POSITIVE = 4.0  # of 5: "the two sentences are mostly equivalent" or better (SemEval scale)
STS_NEGATIVE = 1.0  # of 5: "not equivalent, but are on the same topic" or worse


def _sts_label(score: float) -> bool | None:
    return True if score >= STS_POSITIVE else False if score <= STS_NEGATIVE else None


def _sts_file_pairs(path: Path, columns: tuple[int, int, int], header: bool, rng: random.Random, source: str) -> list[Pair]:
    first, second, score = columns  # of each tab-separated line
    labelled = [
        (f[first].strip(), f[second].strip(), _sts_label(_score(path, lineno, f[score])))
        for lineno, f in _tsv_rows(path, max(columns) + 1, header=header)
    ]
    return _pairs_with_negatives(labelled, rng, source)


def stsb_pairs(data_dir: Path, rng: random.Random) -> list[Pair]:
    # genre, file, year, id, score, sentence1, sentence2 [, 2 source columns on some lines]
    return _sts_file_pairs(data_dir / "sts/stsbenchmark/sts-train.csv", (5, 6, 4), False, rng, "stsb")


def sts12_pairs(data_dir: Path, rng: random.Random) -> list[Pair]:
    # subset, sentence1, sentence2, score (header line); only gold-scored pairs are in the file
    return _sts_file_pairs(data_dir / "sts/sts12/sts12_train_combined.tsv", (1, 2, 3), True, rng, "sts12")


# ---------------------------------------------------------------------------------------------
# question answering and retrieval: TREC-QA, SciFact


def trecqa_pairs(data_dir: Path, rng: random.Random) -> list[Pair]:
    # qtext,label,atext with csv quoting; the text is PTB-tokenised (-LRB-, ``) and kept as is.
    path = data_dir / "training/trecqa_wang/train.csv"
    right: dict[str, list[str]] = defaultdict(list)
    wrong: dict[str, list[str]] = defaultdict(list)
    with open_text(path) as f:
        reader = csv.reader(f)
        if next(reader, None) != ["qtext", "label", "atext"]:
            raise ValueError(f"{path}:1: expected the header qtext,label,atext")
        for fields in reader:
            if len(fields) != 3 or fields[1] not in ("0", "1"):
                raise ValueError(f"{path}:{reader.line_num}: expected qtext,label(0/1),atext, got {fields!r}")
            question, label, answer = (x.strip() for x in fields)
            (right if label == "1" else wrong)[question].append(answer)
    return [
        Pair(q, a, _pick(rng, wrong.get(q, []), a), "trecqa")
        for q, answers in right.items()
        for a in answers
    ]


def _jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not a JSON line ({e.msg})") from None


def _field(path: Path, lineno: int, record: dict, key: str) -> str:
    if not isinstance(record.get(key), str):
        raise ValueError(f"{path}:{lineno}: missing string field {key!r}")
    return record[key]


def scifact_pairs(data_dir: Path, rng: random.Random) -> list[Pair]:
    root = data_dir / "retrieval/scifact"
    queries_path, corpus_path = root / "queries_train.jsonl", root / "corpus.jsonl.gz"
    queries = {
        _field(queries_path, n, r, "_id"): _field(queries_path, n, r, "text").strip()
        for n, r in _jsonl(queries_path)
    }
    qrels: dict[str, list[str]] = defaultdict(list)  # query id -> cited doc ids, file order
    for lineno, f in _tsv_rows(root / "qrels/train.tsv", 3, header=True):
        if _score(root / "qrels/train.tsv", lineno, f[2]) > 0:
            qrels[f[0]].append(f[1])
    # BEIR's document text is title + " " + abstract (how mteb's retrieval evaluator joins them).
    corpus = {
        _field(corpus_path, n, r, "_id"): (r.get("title", "") + " " + _field(corpus_path, n, r, "text")).strip()
        for n, r in _jsonl(corpus_path)
    }
    doc_ids = list(corpus)
    rows = []
    for qid, cited in qrels.items():
        unknown = [qid] if qid not in queries else [d for d in cited if d not in corpus]
        if unknown:
            raise ValueError(f"{root / 'qrels/train.tsv'}: id(s) {unknown} of query {qid} not in the queries/corpus")
        for doc in cited:
            # A random abstract is a weak negative, but SciFact has no judged non-relevant docs.
            other = rng.choice(doc_ids)
            while other in cited:
                other = rng.choice(doc_ids)
            rows.append(Pair(queries[qid], corpus[doc], corpus[other], "scifact"))
    return rows


# ---------------------------------------------------------------------------------------------
# general-domain title -> body pairs: Debian package descriptions (E5 "CCPairs" in spirit)


def normalize_text(text: str) -> str:
    """The key under which two texts count as the same: case and whitespace folded."""
    return " ".join(text.casefold().split())


def contamination_key(text: str) -> str:
    """Letters and digits only, case folded: a test text that differs from a training text by
    punctuation or spacing alone ("a gloss." vs "a gloss") is the same text to a model. The one
    key for decontaminating the built-in mixture and --train-data files alike."""
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def debian_pairs(data_dir: Path, rng: random.Random) -> list[Pair]:
    path = data_dir / "training/debian_descriptions/descriptions.jsonl.gz"
    kept: dict[str, tuple[str, str, str]] = {}  # normalised long text -> (short, long, section)
    for lineno, record in _jsonl(path):
        short, long = _field(path, lineno, record, "short").strip(), _field(path, lineno, record, "long").strip()
        section = _field(path, lineno, record, "section")
        # -dev/-doc/-data variants repeat one long text: keep only its first package (file order),
        # otherwise a batch holds the same positive twice and one copy is a false in-batch negative.
        if short and long and normalize_text(long) not in kept:
            kept[normalize_text(long)] = (short, long, section)
    by_section: dict[str, list[str]] = defaultdict(list)
    for short, long, section in kept.values():
        by_section[section].append(long)
    return [
        Pair(short, long, _pick(rng, by_section[section], long), "debian")
        for short, long, section in kept.values()
    ]


# ---------------------------------------------------------------------------------------------
# WordNet 3.0 (wndb(5WN) data files)

WORDNET_FILES = ("data.noun.gz", "data.verb.gz", "data.adj.gz", "data.adv")
_ADJ_MARKER = re.compile(r"\((a|p|ip)\)$")  # syntactic marker on adjectives, e.g. "outback(a)"
_EXAMPLE = re.compile(r'"([^"]+)"')


def _wordnet_synsets(path: Path) -> Iterator[tuple[list[str], str, list[str]]]:
    """(lemmas, definition, examples) per synset line. Line layout (wndb(5WN)):
    offset lex_filenum ss_type w_cnt(2 hex) [word lex_id]... p_cnt [pointer]... [frames] | gloss"""
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if line.startswith("  "):  # the licence header: lines start with two spaces
                continue
            head, bar, gloss = line.partition(" | ")
            fields = head.split()
            try:
                n_words = int(fields[3], 16)
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{lineno}: not a wndb synset line") from None
            if not bar or len(fields) < 4 + 2 * n_words:
                raise ValueError(f"{path}:{lineno}: synset line without {n_words} words and a ' | ' gloss")
            words = fields[4 : 4 + 2 * n_words : 2]
            lemmas = [_ADJ_MARKER.sub("", w).replace("_", " ") for w in words]
            gloss = gloss.strip()
            # The gloss is the definition, then quoted examples separated by "; ".
            quote = gloss.find('"')
            definition = (gloss if quote < 0 else gloss[:quote]).strip().rstrip(";").strip()
            examples = [e.strip() for e in _EXAMPLE.findall(gloss[quote:])] if quote >= 0 else []
            if definition:
                yield lemmas, definition, [e for e in examples if e]


def wordnet_pairs(data_dir: Path, rng: random.Random) -> list[Pair]:
    synsets = [s for name in WORDNET_FILES for s in _wordnet_synsets(data_dir / "training/wordnet" / name)]
    senses: dict[str, list[str]] = defaultdict(list)  # lemma (case-folded) -> definitions of its synsets
    for lemmas, definition, _ in synsets:
        for lemma in lemmas:
            senses[lemma.casefold()].append(definition)
    rows = []
    for lemmas, definition, examples in synsets:
        for lemma in lemmas:
            rows.append(Pair(lemma, definition, _pick(rng, senses[lemma.casefold()], definition), "wordnet"))
        for example in examples:
            # An example sentence uses one of the synset's lemmas: another sense of the first
            # lemma that has one is the confusable definition.
            negative = next(
                (n for n in (_pick(rng, senses[lem.casefold()], definition) for lem in lemmas) if n), None
            )
            rows.append(Pair(example, definition, negative, "wordnet"))
    return rows


# ---------------------------------------------------------------------------------------------
# classification train splits, OFF by default (NV-Embed, Lee et al. 2024, sec. 4.2: a text's
# positive is another text of its label, the hard negative a text of another label)


def _label_pairs(texts: list[tuple[str, str]], rng: random.Random, source: str) -> list[Pair]:
    by_label: dict[str, list[str]] = defaultdict(list)
    for text, label in texts:
        by_label[label].append(text)
    labels = list(by_label)
    rows = []
    for text, label in texts:
        positive = _pick(rng, by_label[label], text)
        others = [other for other in labels if other != label]
        if positive is None or not others:
            continue
        rows.append(Pair(text, positive, rng.choice(by_label[rng.choice(others)]), source))
    return rows


def _csv_texts(path: Path, text_col: str, label_col: str, delimiter: str = ",") -> list[tuple[str, str]]:
    with open_text(path) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        if reader.fieldnames is None or not {text_col, label_col} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected columns {text_col!r} and {label_col!r}, got {reader.fieldnames}")
        out = []
        for record in reader:
            text, label = record[text_col], record[label_col]
            if text is None or label is None:
                raise ValueError(f"{path}:{reader.line_num}: row has too few fields")
            if text.strip():
                out.append((text.strip(), label.strip()))
        return out


def banking77_pairs(data_dir: Path, rng: random.Random) -> list[Pair]:
    path = data_dir / "classification/banking77/train.csv"
    return _label_pairs(_csv_texts(path, "text", "category"), rng, "banking77")


def emotion_pairs(data_dir: Path, rng: random.Random) -> list[Pair]:
    # "text;label_name" lines; the text itself never holds ';' in this split, split from the right anyway
    path = data_dir / "classification/emotion/train.txt.gz"
    texts = []
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            text, sep, label = line.rstrip("\r\n").rpartition(";")
            if not sep:
                raise ValueError(f"{path}:{lineno}: expected 'text;label'")
            if lineno > 1 and text.strip():
                texts.append((text.strip(), label))
    return _label_pairs(texts, rng, "emotion")


def tweet_sentiment_pairs(data_dir: Path, rng: random.Random) -> list[Pair]:
    path = data_dir / "classification/tweet_sentiment_extraction/train_no_selected_text.csv.gz"
    return _label_pairs(_csv_texts(path, "text", "sentiment"), rng, "tweet_sentiment")


def amazon_counterfactual_pairs(data_dir: Path, rng: random.Random) -> list[Pair]:
    path = data_dir / "classification/amazon_counterfactual/en/EN_train.tsv"
    texts = _csv_texts(path, "sentence", "is_counterfactual", delimiter="\t")
    return _label_pairs(texts, rng, "amazon_counterfactual")


# ---------------------------------------------------------------------------------------------
# the registry. Instructions follow E5-mistral (Wang et al. 2024, Table 13) where the task is
# one of theirs, and the same "Given X, retrieve Y" form otherwise.

# E5-mistral: one instruction for every STS task, the string eval/tasks.py owns and evaluates with.

SOURCES: dict[str, Source] = {
    "mrpc": Source(mrpc_pairs, STS_INSTRUCTION, True, ("training/mrpc/msr-para-train.tsv",)),
    "trecqa": Source(
        trecqa_pairs, "Given a question, retrieve passages that answer the question", False,
        ("training/trecqa_wang/train.csv",),
    ),
    "stsb": Source(stsb_pairs, STS_INSTRUCTION, True, ("sts/stsbenchmark/sts-train.csv",)),
    "sts12": Source(sts12_pairs, STS_INSTRUCTION, True, ("sts/sts12/sts12_train_combined.tsv",)),
    "scifact": Source(
        scifact_pairs, "Given a scientific claim, retrieve documents that support or refute the claim", False,
        tuple(f"retrieval/scifact/{name}" for name in ("queries_train.jsonl", "qrels/train.tsv", "corpus.jsonl.gz")),
    ),
    "debian": Source(
        debian_pairs, "Given a one-line software package summary, retrieve its full description", False,
        ("training/debian_descriptions/descriptions.jsonl.gz",),
    ),
    "wordnet": Source(
        wordnet_pairs, "Given a word or a sentence using it, retrieve its dictionary definition", False,
        tuple(f"training/wordnet/{name}" for name in WORDNET_FILES),
    ),
    "banking77": Source(
        banking77_pairs, "Given a online banking query, find the corresponding intents", False,
        ("classification/banking77/train.csv",),
    ),
    "emotion": Source(
        emotion_pairs,
        "Classify the emotion expressed in the given Twitter message into one of the six emotions: "
        "anger, fear, joy, love, sadness, and surprise",
        False, ("classification/emotion/train.txt.gz",),
    ),
    "tweet_sentiment": Source(
        tweet_sentiment_pairs, "Classify the sentiment of a given tweet as either positive, negative, or neutral", False,
        ("classification/tweet_sentiment_extraction/train_no_selected_text.csv.gz",),
    ),
    "amazon_counterfactual": Source(
        amazon_counterfactual_pairs,
        "Classify a given Amazon customer review text as either counterfactual or not-counterfactual", False,
        ("classification/amazon_counterfactual/en/EN_train.tsv",),
    ),
}

DEFAULT_SOURCES = ("mrpc", "trecqa", "stsb", "sts12", "scifact", "debian", "wordnet")
CLASSIFICATION_SOURCES = ("banking77", "emotion", "tweet_sentiment", "amazon_counterfactual")

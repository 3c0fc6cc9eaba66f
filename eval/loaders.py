"""One small reader per benchmark file format in shared/data (see its MANIFEST.md).

Every reader returns plain Python lists/dicts, keeps the file's row order, and fails loudly:
- a missing file -> FileNotFoundError naming the path and where the file comes from;
- a malformed row -> ValueError naming the file and the 1-based line number;
- a file with no data rows -> ValueError.
Files over 1.5 MB are stored gzip-compressed upstream (name ends in .gz); `open_text` reads both.
"""
from __future__ import annotations

import csv
import functools
import io
import json
from pathlib import Path

from . import textio

# Where each dataset folder comes from, for the FileNotFoundError message (MANIFEST.md "source").
SOURCES = {
    "sts/stsbenchmark": "STS-B original release (amao0o0/SynWMD data/downstream/STS/STSBenchmark)",
    "sts/sick-r": "SICK (train+trial+test annotated, 9,927 pairs)",
    "sts/sts12": "SemEval-2012 STS raw files (SentEval test-gold), combined to *_test_combined.tsv",
    "sts/sts13": "SemEval-2013 STS raw files, combined to *_test_combined.tsv",
    "sts/sts14": "SemEval-2014 STS raw files, combined to *_test_combined.tsv",
    "sts/sts15": "SemEval-2015 STS raw files, combined to *_test_combined.tsv",
    "sts/sts16": "SemEval-2016 STS raw files, combined to *_test_combined.tsv",
    "sts/biosses": "BIOSSES 100 pairs (kathrinblagec/neural-sentence-embedding-models-for-biomedical-applications)",
    "retrieval/scifact": "BEIR scifact (corpus) + anserini-tools BEIR v1.0.0 test topics/qrels",
    "retrieval/arguana": "ArguAna counterargs corpus rebuild + anserini-tools BEIR v1.0.0 test topics/qrels",
    "classification/banking77": "PolyAI-LDN/task-specific-datasets banking_data",
    "classification/emotion": "dair-ai emotion (niuzaisheng/AttExplainer data/emotion)",
    "classification/tweet_sentiment_extraction": "Kaggle tweet-sentiment-extraction (spence998/Tweet-Sentiment-Predictor)",
    "classification/amazon_counterfactual": "amazon-science/amazon-multilingual-counterfactual-dataset data/EN_*.tsv",
    "classification/imdb": "aclImdb (Maas et al. 2011) packed to jsonl",
    "clustering/twentynewsgroups": "20news-bydate Subject lines (YunomiXavia/20news-bydate)",
    "clustering/reddit": "UKPLab/TWEAC-qa-agent-selection data/reddit/test",
    "clustering/stackexchange": "UKPLab/TWEAC-qa-agent-selection data/stackexchange/test",
}


def cached(reader):
    """Memoise a reader on (path, size, mtime): the quick and full suites, and repeated
    evaluate() calls during training, re-read the same large .gz files. Callers must not mutate
    what a cached reader returns (the task builders copy)."""
    @functools.lru_cache(maxsize=32)
    def by_stat(path: Path, size: int, mtime_ns: int, *args):
        return reader(path, *args)

    @functools.wraps(reader)
    def read(path, *args):
        path = Path(path)
        if not path.is_file():
            raise _missing(path)
        st = path.stat()
        return by_stat(path, st.st_size, st.st_mtime_ns, *args)
    return read


def _missing(path: Path) -> FileNotFoundError:
    source = next((s for key, s in SOURCES.items() if key in path.as_posix()), "see MANIFEST.md")
    return FileNotFoundError(
        f"dataset file not found: {path}. Obtain it from {source} as listed in shared/data/MANIFEST.md, "
        "and point MLTP_DATA_DIR (or data_dir=) at that shared/data folder."
    )


def open_text(path: Path) -> io.TextIOBase:
    """textio.open_text (the opener training shares), with this module's missing-file message."""
    return textio.open_text(path, missing=_missing)


def _nonempty(rows: list, path: Path) -> list:
    if not rows:
        raise ValueError(f"{path}: no data rows (empty dataset)")
    return rows


def _float(value: str, path: Path, line: int, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{path}:{line}: {what} {value!r} is not a number") from None


def _text(value: str, path: Path, line: int, what: str) -> str:
    if not value.strip():
        raise ValueError(f"{path}:{line}: empty {what}")
    return value


# ---------------------------------------------------------------- STS

@cached
def read_stsb(path: Path) -> tuple[list[str], list[str], list[float]]:
    """STS-B sts-*.csv: tab-separated despite the name, no header, no quoting (sentences contain '"').

    Columns: genre, file, year, id, score, sentence1, sentence2 [, source1, source2 on 284 test lines].
    """
    s1, s2, gold = [], [], []
    with open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) not in (7, 9):
                raise ValueError(f"{path}:{line_no}: expected 7 or 9 tab-separated fields, got {len(fields)}")
            gold.append(_float(fields[4], path, line_no, "score"))
            s1.append(_text(fields[5], path, line_no, "sentence1"))
            s2.append(_text(fields[6], path, line_no, "sentence2"))
    return _nonempty(s1, path), s2, gold


def read_tsv_table(path: Path, columns: list[str]) -> list[tuple[int, dict[str, str]]]:
    """A headered tab-separated file read without quoting; returns (line number, {column: value}) rows."""
    rows = []
    with open_text(path) as f:
        header = f.readline().rstrip("\r\n").split("\t")
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path}:1: header {header} lacks column(s) {missing}")
        for line_no, line in enumerate(f, 2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != len(header):
                raise ValueError(f"{path}:{line_no}: expected {len(header)} tab-separated fields, got {len(fields)}")
            rows.append((line_no, dict(zip(header, fields))))
    return _nonempty(rows, path)


@cached
def read_sts_pairs(path: Path, s1_col: str, s2_col: str, score_col: str):
    """SICK-R / BIOSSES / STS12-16 combined files: headered TSV -> (sentences1, sentences2, gold)."""
    s1, s2, gold = [], [], []
    for line_no, row in read_tsv_table(path, [s1_col, s2_col, score_col]):
        s1.append(_text(row[s1_col], path, line_no, s1_col))
        s2.append(_text(row[s2_col], path, line_no, s2_col))
        gold.append(_float(row[score_col], path, line_no, score_col))
    return s1, s2, gold


# ---------------------------------------------------------------- retrieval (BEIR layout)

def read_jsonl(path: Path, keys: tuple[str, ...]) -> list[dict]:
    rows = []
    with open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or any(k not in row for k in keys):
                raise ValueError(f"{path}:{line_no}: JSON object lacks one of the keys {list(keys)}")
            rows.append(row)
    return _nonempty(rows, path)


@cached
def read_beir_queries(path: Path) -> dict[str, str]:
    return {str(r["_id"]): r["text"] for r in read_jsonl(path, ("_id", "text"))}


@cached
def read_beir_corpus(path: Path) -> dict[str, str]:
    # BEIR/MTEB document text = (title + " " + text).strip()  (mteb RetrievalEvaluator corpus_to_str).
    return {str(r["_id"]): (r.get("title", "") + " " + r["text"]).strip()
            for r in read_jsonl(path, ("_id", "text"))}


@cached
def read_beir_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for line_no, row in read_tsv_table(path, ["query-id", "corpus-id", "score"]):
        grade = _float(row["score"], path, line_no, "score")
        qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(grade)
    return qrels


# ---------------------------------------------------------------- classification

@cached
def read_csv_columns(path: Path, text_col: str, label_col: str) -> tuple[list[str], list[str]]:
    """A quoted CSV with a header (Banking77, TweetSentimentExtraction)."""
    texts, labels = [], []
    with open_text(path) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or text_col not in header or label_col not in header:
            raise ValueError(f"{path}:1: header {header} lacks column {text_col!r} or {label_col!r}")
        ti, li = header.index(text_col), header.index(label_col)
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{reader.line_num}: expected {len(header)} CSV fields, got {len(row)}")
            texts.append(_text(row[ti], path, reader.line_num, text_col))
            labels.append(_text(row[li], path, reader.line_num, label_col))
    return _nonempty(texts, path), labels


@cached
def read_emotion(path: Path) -> tuple[list[str], list[str]]:
    """dair-ai emotion 'text;label' lines after a 'text;label_name' header (texts never contain ';')."""
    texts, labels = [], []
    with open_text(path) as f:
        if f.readline().strip() != "text;label_name":
            raise ValueError(f"{path}:1: expected header 'text;label_name'")
        for line_no, line in enumerate(f, 2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split(";")
            if len(fields) != 2:
                raise ValueError(f"{path}:{line_no}: expected 'text;label', got {len(fields)} ';'-fields")
            texts.append(_text(fields[0], path, line_no, "text"))
            labels.append(_text(fields[1], path, line_no, "label"))
    return _nonempty(texts, path), labels


@cached
def read_amazon_counterfactual(path: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for line_no, row in read_tsv_table(path, ["sentence", "is_counterfactual"]):
        if row["is_counterfactual"] not in ("0", "1"):
            raise ValueError(f"{path}:{line_no}: is_counterfactual must be 0 or 1, got {row['is_counterfactual']!r}")
        texts.append(_text(row["sentence"], path, line_no, "sentence"))
        labels.append(row["is_counterfactual"])
    return texts, labels


@cached
def read_imdb(path: Path) -> tuple[list[str], list[str]]:
    """aclImdb packed as jsonl; the label is the folder in the id: 'test/neg/0_2.txt' -> 'neg'."""
    texts, labels = [], []
    for line_no, row in enumerate(read_jsonl(path, ("id", "text")), 1):
        parts = row["id"].split("/")
        if len(parts) != 3 or parts[1] not in ("pos", "neg"):
            raise ValueError(f"{path}:{line_no}: id {row['id']!r} is not '<split>/<pos|neg>/<file>'")
        texts.append(_text(row["text"], path, line_no, "text"))
        labels.append(parts[1])
    return texts, labels


# ---------------------------------------------------------------- clustering

@cached
def read_labelled_tsv(path: Path, label_col: str, text_col: str) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for line_no, row in read_tsv_table(path, [label_col, text_col]):
        texts.append(_text(row[text_col], path, line_no, text_col))
        labels.append(_text(row[label_col], path, line_no, label_col))
    return texts, labels

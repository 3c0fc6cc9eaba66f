"""The derivations: how each file of the data directory that is not an upstream file verbatim is made.

Each derivation takes its inputs in the order the manifest lists them (bytes for a file, a
{relative path: bytes} dict for a folder) and returns the file's uncompressed bytes, which the
caller checks against the manifest's sha256. They reproduce, byte for byte, how the data was
staged (MANIFEST.md, "source" column and Notes); scripts/check_derivations.py proves it on the
real upstream snapshots.
"""
from __future__ import annotations

import ast
import csv
import gzip
import html
import io
import json
import re
import tokenize
from typing import Callable, Mapping

Folder = Mapping  # relative path -> bytes; only the files a derivation needs are read


def tsv(rows) -> bytes:
    """Rows as the staged tsv files were written: csv.writer, tab-separated, "\\n" line ends."""
    buf = io.StringIO()
    csv.writer(buf, delimiter="\t", lineterminator="\n").writerows(rows)
    return buf.getvalue().encode("utf-8")


def copy(data: bytes) -> bytes:
    return data


def gunzip(data: bytes) -> bytes:
    return gzip.decompress(data)


def csv_rows(data: bytes, start: int, stop: int) -> bytes:
    """The header, then CSV rows start..stop (1-based, inclusive), rewritten by csv.writer's defaults."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    buf = io.StringIO(newline="")
    csv.writer(buf).writerows([rows[0]] + rows[start:stop + 1])
    return buf.getvalue().encode("utf-8")


def anserini_topics_to_beir(data: bytes) -> bytes:
    """anserini `topics.beir-*.tsv.gz` (id TAB text) -> BEIR queries jsonl {_id, text, metadata}."""
    out = []
    for line in gzip.decompress(data).decode("utf-8").splitlines():
        qid, text = line.split("\t", 1)
        out.append(json.dumps({"_id": qid, "text": text, "metadata": {}}) + "\n")
    return "".join(out).encode("utf-8")


def trec_qrels_to_beir(data: bytes) -> bytes:
    """TREC qrels (qid 0 docid rel) -> BEIR qrels tsv with a `query-id corpus-id score` header."""
    out = ["query-id\tcorpus-id\tscore\n"]
    for line in data.decode("utf-8").splitlines():
        qid, _, doc, rel = line.split()
        out.append(f"{qid}\t{doc}\t{rel}\n")
    return "".join(out).encode("utf-8")


def imdb_jsonl(*folders: Folder, splits: list[str]) -> bytes:
    """aclImdb review files <split>/{neg,pos}/<id>_<rating>.txt -> one jsonl, neg then pos, by id.

    The upstream repository cut the original train split into train + val; merging them back gives
    the original 25,000, each row naming the folder it came from (`src_dir`).
    """
    name = splits[0]  # the original split every row is credited to
    rows = []
    for split, folder in zip(splits, folders):
        for path in folder:
            m = re.fullmatch(r"(neg|pos)/(\d+)_(\d+)\.txt", path)
            if m:
                rows.append((m[1], int(m[2]), int(m[3]), split, f"{name}/{m[1]}/{m[2]}_{m[3]}.txt", folder[path]))
    rows.sort(key=lambda r: (r[0], r[1]))
    out = []
    for label, _, rating, split, rid, data in rows:
        record = {"id": rid, "text": data.decode("utf-8"), "label": int(label == "pos"), "label_text": label,
                  "rating": rating, "src_dir": split}
        out.append(json.dumps(record, ensure_ascii=False) + "\n")
    return "".join(out).encode("utf-8")


def labelled_lines(folder: Folder) -> bytes:
    """<label>.txt files with one text per line -> `label TAB text` tsv, labels in name order."""
    rows = [("label", "text")]
    for path in sorted(folder):
        if path.endswith(".txt") and "/" not in path:
            rows += [(path[:-len(".txt")], line) for line in folder[path].decode("utf-8").splitlines()]
    return tsv(rows)


def newsgroup_subjects(train: Folder, test: Folder) -> bytes:
    """20news-bydate <group>/<id> messages -> `split label doc_id subject` rows, the Subject: header."""
    rows = [("split", "label", "doc_id", "subject")]
    for split, folder in (("train", train), ("test", test)):
        docs = []
        for path in folder:
            group, _, doc = path.partition("/")
            if doc.isdigit():
                docs.append((group, int(doc), path))
        for group, doc, path in sorted(docs):
            m = re.search(r"^Subject:[ \t]*(.*)$", folder[path].decode("latin-1"), re.MULTILINE)
            rows.append((split, group, doc, m[1].strip() if m else ""))
    return tsv(rows)


def sts_combined(*files: bytes, names: list[str]) -> bytes:
    """STS input + gold files -> `subset sentence1 sentence2 score`, pairs with no gold dropped.

    `files` alternate input, gold for each subset in `names`; sentence1/2 are the first two tab
    fields of the input line (some releases carry source columns after them).
    """
    out = ["subset\tsentence1\tsentence2\tscore\n"]
    for name, inputs, gold in zip(names, files[0::2], files[1::2]):
        pairs = inputs.decode("utf-8").splitlines()
        scores = gold.decode("utf-8").splitlines()
        if len(pairs) != len(scores):
            raise ValueError(f"STS subset {name}: {len(pairs)} input lines but {len(scores)} gold lines")
        for pair, score in zip(pairs, scores):
            if score.strip():
                s1, s2 = pair.split("\t")[:2]
                out.append(f"{name}\t{s1}\t{s2}\t{score.strip()}\n")
    return "".join(out).encode("utf-8")


def biosses_pairs(pairs: bytes, scores: bytes) -> bytes:
    """Sentence lines 2i, 2i+1 zipped with score line i -> `sentence1 sentence2 score`."""
    lines = pairs.decode("utf-8").splitlines()
    gold = [s.strip() for s in scores.decode("utf-8").splitlines() if s.strip()]
    if len(lines) != 2 * len(gold):
        raise ValueError(f"BIOSSES: {len(lines)} sentence lines for {len(gold)} scores")
    out = ["sentence1\tsentence2\tscore\n"]
    out += [f"{lines[2 * i]}\t{lines[2 * i + 1]}\t{g}\n" for i, g in enumerate(gold)]
    return "".join(out).encode("utf-8")


def sick_all(train: bytes, trial: bytes, test: bytes) -> bytes:
    """The three SICK files as one table, with the SemEval_set column the official SICK.txt has."""
    out, header = [], None
    for name, data in (("TRAIN", train), ("TRIAL", trial), ("TEST", test)):
        lines = data.decode("utf-8").splitlines()
        header = header or lines[0] + "\tSemEval_set\n"
        out += [f"{line}\t{name}\n" for line in lines[1:] if line.strip()]
    return (header + "".join(out)).encode("utf-8")


def html_to_text(page: bytes, encoding: str) -> bytes:
    """A Word-made HTML page as plain text: styles and tags dropped, entities decoded, line breaks
    kept, trailing spaces and runs of blank lines removed."""
    text = page.decode(encoding)
    text = re.sub(r"(?is)<style.*?</style>", "", text)
    text = html.unescape(re.sub(r"<[^>]+>", "", text)).replace("\r\n", "\n")
    lines: list[str] = []
    for line in (raw.rstrip() for raw in text.split("\n")):
        if line or (lines and lines[-1]):
            lines.append(line)
    return ("\n".join(lines).strip() + "\n").encode("utf-8")


ARGUMENT_FILE = re.compile(r"(?P<split>[^/]+)/(?P<theme>[^/]+)/(?P<debate>[^/]+)/(?:pro|con)/"
                           r"(?P<key>(?:pro|con)\d+[ab])-(?:point|counter)\.txt")


def arguana_corpus(folder: Folder, splits: list[str]) -> bytes:
    """ArguAna counterargs files -> BEIR-style corpus jsonl (a rebuild, not BEIR's own corpus).

    id `{split}-{theme}-{initials of the debate's words}-{pro|con}NN{a|b}` and text = the file
    with newlines turned into spaces, the form BEIR's arguana corpus uses; title = the debate's
    folder name in words for test documents, empty otherwise. Documents sorted by id within each
    split, splits in `splits` order; every test document is kept, later ones only if their text
    is new.
    """
    by_split: dict[str, list[dict]] = {s: [] for s in splits}
    for path in folder:
        m = ARGUMENT_FILE.fullmatch(path)
        if not m or m["split"] not in by_split:
            continue
        initials = "".join(word[0] for word in m["debate"].split("-") if word)
        text = folder[path].decode("utf-8").strip().replace("\n", " ")
        title = m["debate"].replace("-", " ") if m["split"] == "test" else ""
        by_split[m["split"]].append({"_id": f"{m['split']}-{m['theme']}-{initials}-{m['key']}", "title": title,
                                     "text": text, "metadata": {}})
    out, seen = [], set()
    for split in splits:
        for doc in sorted(by_split[split], key=lambda d: d["_id"]):
            if split == "test" or doc["text"] not in seen:
                seen.add(doc["text"])
                out.append(json.dumps(doc) + "\n")
    return "".join(out).encode("utf-8")


def _python_strings(text: str) -> list[str]:
    """The string literals of a printed list or numpy array: "['a' 'b']", "['a', 'b']", "['a'\\n 'b']"."""
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    return [ast.literal_eval(t.string) for t in tokens if t.type == tokenize.STRING]


def _csv_dicts(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def scifact_corpus(corpus_csv: bytes) -> bytes:
    """SciFact corpus CSV (abstract = a printed list of sentences) -> BEIR corpus jsonl.

    text = the sentences stripped and joined by one space, as BEIR's scifact/corpus.jsonl has it.
    """
    out = []
    for d in _csv_dicts(corpus_csv):
        text = " ".join(s.strip() for s in _python_strings(d["abstract"]))
        out.append(json.dumps({"_id": d["doc_id"], "title": d["title"], "text": text, "metadata": {}}) + "\n")
    return "".join(out).encode("utf-8")


def _claims(claims_csv: bytes) -> list[dict]:
    """One row per claim (the CSV repeats a claim once per evidence document), in file order."""
    seen, claims = set(), []
    for d in _csv_dicts(claims_csv):
        if d["id"] not in seen:
            seen.add(d["id"])
            claims.append(d)
    return claims


def scifact_queries(claims_csv: bytes) -> bytes:
    out = [json.dumps({"_id": d["id"], "text": d["claim"], "metadata": {}}) + "\n" for d in _claims(claims_csv)]
    return "".join(out).encode("utf-8")


def scifact_qrels(claims_csv: bytes) -> bytes:
    """claim id -> each cited document (numeric order), score 1: the BEIR train qrels convention."""
    out = ["query-id\tcorpus-id\tscore\n"]
    for d in _claims(claims_csv):
        out += [f"{d['id']}\t{doc}\t1\n" for doc in sorted(re.findall(r"\d+", d["cited_doc_ids"]), key=int)]
    return "".join(out).encode("utf-8")


DERIVATIONS: dict[str, Callable[..., bytes]] = {
    f.__name__: f for f in (copy, gunzip, csv_rows, anserini_topics_to_beir, trec_qrels_to_beir, imdb_jsonl,
                            labelled_lines, newsgroup_subjects, sts_combined, biosses_pairs, sick_all, html_to_text, arguana_corpus, scifact_corpus,
                            scifact_queries, scifact_qrels)
}

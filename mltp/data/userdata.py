"""Your own training data: `--train-data FILE.jsonl[:WEIGHT]`, one JSON object a line.

    {"query": "...", "positive": "...", "negatives": ["...", ...], "instruction": "..."}

`query` and `positive` are required non-empty strings; `negatives` (a list of non-empty strings)
and `instruction` (a string) are optional. A row without an instruction trains its query plain.
The instruction goes on the query side only, as for the built-in retrieval sources.

Strict: a line that is not such an object stops the run with the file, the line number and the
field; an empty file is an error. Nothing is skipped except by decontamination, which drops a row
whole when any of its texts is an evaluation text, and is counted and printed per file.

Negatives: the loss takes one hard negative per query (mltp.loss), so a row's negative is drawn
from its list once, with a generator seeded by the run's seed and the file, as the built-in
sources draw theirs. Weight: how many copies of the file the mixture holds (2.0: every row twice;
0.5: a seeded half), default 1. The built-in per-source cap (mltp.data.mixture) does not apply: the user
chose the size.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from .sources import Pair, contamination_key, normalize_text
from ..hygiene.textfile import file_sha256

PREFIX = "file:"  # source name of a user file's rows: "file:<name>" (mltp.data.mixture.is_symmetric knows it)


@dataclass(frozen=True)
class UserRow:
    query: str
    positive: str
    negatives: tuple[str, ...]
    instruction: str | None


def parse_spec(spec: str) -> tuple[Path, float]:
    """'FILE.jsonl' or 'FILE.jsonl:WEIGHT' -> (path, weight)."""
    path, weight = spec, 1.0
    head, sep, tail = spec.rpartition(":")
    try:
        if sep and head:
            path, weight = head, float(tail)
    except ValueError:
        pass  # a ':' inside the file name: no weight given
    if not weight > 0 or weight != weight or weight == float("inf"):
        raise ValueError(f"--train-data {spec}: weight must be a positive finite number, got {weight}")
    return Path(path), weight



def _text(row: dict, field: str, where: str) -> str:
    value = row[field]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field '{field}' must be a non-empty string, got {value!r:.60}")
    return value


def read_rows(path: Path) -> list[UserRow]:
    if not path.is_file():
        raise FileNotFoundError(f"--train-data {path}: no such file")
    rows = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            where = f"{path} line {n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{where}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1})") from None
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object with 'query' and 'positive', got {type(row).__name__}")
            unknown = sorted(set(row) - {"query", "positive", "negatives", "instruction"})
            if unknown:
                raise ValueError(f"{where}: unknown field(s) {unknown} (known: query, positive, negatives, instruction)")
            for field in ("query", "positive"):
                if field not in row:
                    raise ValueError(f"{where}: field '{field}' is missing")
            negatives = row.get("negatives", [])
            if not isinstance(negatives, list):
                raise ValueError(f"{where}: field 'negatives' must be a list of strings, got {type(negatives).__name__}")
            for i, neg in enumerate(negatives):
                if not isinstance(neg, str) or not neg.strip():
                    raise ValueError(f"{where}: field 'negatives' item {i} must be a non-empty string, got {neg!r:.60}")
            instruction = row.get("instruction")
            if instruction is not None and not isinstance(instruction, str):
                raise ValueError(f"{where}: field 'instruction' must be a string, got {type(instruction).__name__}")
            rows.append(UserRow(_text(row, "query", where), _text(row, "positive", where), tuple(negatives), instruction or None))
    if not rows:
        raise ValueError(f"--train-data {path}: the file is empty")
    return rows


def check_files(specs: list) -> list[dict]:
    """Every --train-data file read and checked before any slow step; what results.json records."""
    files = []
    for spec in specs:
        if isinstance(spec, dict):  # checked already (a sweep resolves each run's copy again)
            files.append(spec)
            continue
        path, weight = parse_spec(spec)
        rows = read_rows(path)
        if weight < 1 and round(weight * len(rows)) == 0:  # as user_pairs draws a part of the file
            raise ValueError(f"--train-data {spec}: weight {weight:g} of its {len(rows)} row(s) rounds to none; "
                             f"give a weight of at least {1 / len(rows):.2g}")
        files.append({"path": str(path.resolve()), "weight": weight, "sha256": file_sha256(path), "rows": len(rows)})
    names = [Path(f["path"]).name for f in files]
    if len(set(names)) != len(names):
        raise ValueError(f"--train-data: two files share a name {names}; their rows would share a source name")
    return files


def user_pairs(file: dict, seed: int, exclude: set[str]) -> tuple[list[Pair], int]:
    """A checked file's rows as training pairs (decontaminated, weighted), and how many were dropped."""
    path = Path(file["path"])
    if file_sha256(path) != file["sha256"]:
        raise ValueError(f"--train-data {path} changed since it was checked at the start of the run")
    source = PREFIX + path.name
    rng = random.Random(f"{seed}/{source}")
    rows = read_rows(path)
    kept = [r for r in rows if not any(contamination_key(t) in exclude for t in (r.query, r.positive, *r.negatives))]
    pairs = [Pair(r.query, r.positive, rng.choice(r.negatives) if r.negatives else None, source, r.instruction or "")
             for r in kept]
    whole, part = divmod(file["weight"], 1.0)
    pairs = pairs * int(whole) + rng.sample(pairs, round(part * len(pairs)))
    return pairs, len(rows) - len(kept)


def join_user_data(rows: list[Pair], dropped: dict[str, int], files: list[dict], seed: int,
                   exclude_texts: set[str]) -> tuple[list[Pair], dict[str, int], list[dict]]:
    """The built-in rows (or none, to replace them) plus every file's, shuffled together."""
    exclude = {contamination_key(t) for t in exclude_texts} - {""}  # the built-in mixture's key (mltp.data.mixture)
    rows, dropped, record = list(rows), dict(dropped), []
    for file in files:
        pairs, n_dropped = user_pairs(file, seed, exclude)
        if not pairs and n_dropped == file["rows"]:
            raise ValueError(f"--train-data {file['path']}: no row left after decontamination ({n_dropped} dropped)")
        if not pairs:
            raise ValueError(f"--train-data {file['path']}: weight {file['weight']:g} of the {file['rows'] - n_dropped} "
                             f"row(s) left after decontamination ({n_dropped} dropped) rounds to none")
        rows += pairs
        dropped[pairs[0].source] = n_dropped
        record.append({**file, "dropped": n_dropped, "pairs": len(pairs)})
    if len({normalize_text(t) for p in rows for t in (p.positive, p.negative) if t is not None}) < 2:
        raise ValueError(f"--train-data {', '.join(f['path'] for f in files)}: every row has the same positive text "
                         "and no other candidate; rows with the same positive are false negatives of each other, "
                         "so the training data teaches nothing")
    random.Random(seed).shuffle(rows)
    return rows, dropped, record

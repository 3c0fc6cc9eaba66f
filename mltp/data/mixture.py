"""The training mixture: rows from every source, decontaminated, capped, shuffled.

    build_mixture(data_dir) -> [Pair(query, positive, negative | None, source), ...]

Order of work, per source: read every row (sources.py), drop rows that touch an evaluation text,
then cap the survivors by seeded sampling; finally shuffle all sources together. Decontaminating
before capping means the cap is filled with clean rows.

Balance: a cap, not sampling weights. Uncapped, WordNet (255k rows) and Debian (61k) would be 96%
of the rows and a short CPU run would see a few dozen TREC-QA rows at most. With the default cap of
DEFAULT_MAX_PER_SOURCE = 10,000 the default mixture is 26,014 rows before decontamination
(~24k after removing the STS evaluation texts): WordNet and Debian ~40% each, the five small
sources (348 to 2,407 rows each, kept whole) the rest, so 300 steps of batch 32 (9,600 rows) see
every source at least ~130 times (TREC-QA, the smallest).

Instructions: the embedder prepends `row_instruction(row)` (its source's, or a --train-data row's
own) to the query; where `is_symmetric(row.source)` is True (MRPC, STS: both sides are the same kind of text) it prepends
it to the positive and the negative as well, as the paper's evaluation does for non-retrieval
tasks (arXiv 2409.02727; yixuantt/PoolingAndAttn, eval_instruction.py).
"""
from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from mltp.data.sources import (CLASSIFICATION_SOURCES, DEFAULT_SOURCES, SOURCES, Pair, contamination_key,
                               normalize_text)
from mltp.data.userdata import PREFIX as USER_PREFIX

__all__ = [
    "Pair", "SOURCES", "DEFAULT_SOURCES", "CLASSIFICATION_SOURCES", "DEFAULT_MAX_PER_SOURCE",
    "build_mixture", "build_mixture_with_dropped", "decontaminate", "instruction_for", "is_symmetric", "row_instruction",
    "contamination_key", "mixture_report", "normalize_text",
]

DEFAULT_MAX_PER_SOURCE = 10_000  # see the module docstring: balance for a short CPU run


def _source(name: str):
    if name not in SOURCES:
        raise ValueError(f"unknown training source {name!r}; known: {sorted(SOURCES)}")
    return SOURCES[name]


def instruction_for(source: str) -> str:
    return _source(source).instruction


def row_instruction(row: Pair) -> str | None:
    """The query's instruction: the row's own (rows of --train-data files), else its source's."""
    return instruction_for(row.source) if row.instruction is None else row.instruction


def is_symmetric(source: str) -> bool:
    """True when the positive (and negative) side gets the instruction too."""
    if source.startswith(USER_PREFIX):
        return False  # --train-data rows: the instruction goes on the query side only
    return _source(source).symmetric


def decontaminate(rows: list[Pair], exclude: set[str]) -> tuple[list[Pair], int]:
    """Rows none of whose texts is in `exclude` (already `contamination_key`ed), and how many were
    dropped. A row goes whole, even when only its negative matches: an evaluation text must never
    be seen."""
    if not exclude:
        return rows, 0
    kept = [
        row for row in rows
        if contamination_key(row.query) not in exclude
        and contamination_key(row.positive) not in exclude
        and (row.negative is None or contamination_key(row.negative) not in exclude)
    ]
    return kept, len(rows) - len(kept)


def build_mixture_with_dropped(
    data_dir: str | Path,
    *,
    sources: tuple[str, ...] | list[str] = DEFAULT_SOURCES,
    max_per_source: int | None = DEFAULT_MAX_PER_SOURCE,
    seed: int = 0,
    exclude_texts: set[str] | None = None,
    include_classification: bool = False,
) -> tuple[list[Pair], dict[str, int]]:
    """Shuffled (query, positive, negative) rows from TRAIN splits only, the same for the same
    seed, and {source: rows dropped by decontamination} for mixture_report.

    exclude_texts: every evaluation text (raw; normalised here). Any row with a query, positive or
    negative equal to one of them by contamination_key (letters and digits, case folded) is dropped.
    include_classification: add the classification train splits (off by default: they are the
    train halves of evaluation tasks, so a run that uses them must say so; mixture_report does).
    """
    data_dir = Path(data_dir)
    if isinstance(sources, str):
        raise ValueError(f"sources must be a list of source names, got the string {sources!r}")
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data directory not found: {data_dir}")
    if max_per_source is not None and max_per_source < 1:
        raise ValueError(f"max_per_source must be >= 1 or None, got {max_per_source}")
    names = list(dict.fromkeys([*sources, *(CLASSIFICATION_SOURCES if include_classification else ())]))
    for name in names:
        _source(name)
    exclude = {contamination_key(t) for t in exclude_texts or ()}
    exclude.discard("")  # a text of punctuation alone would match every other such text

    rows: list[Pair] = []
    dropped: dict[str, int] = {}
    for name in names:
        # One generator per source, keyed by name: adding or removing a source leaves the rows of
        # the others unchanged. (random.Random hashes a str seed with SHA-512: stable across runs.)
        rng = random.Random(f"{seed}/{name}")
        clean, dropped[name] = decontaminate(SOURCES[name].read(data_dir, rng), exclude)
        if max_per_source is not None and len(clean) > max_per_source:
            clean = rng.sample(clean, max_per_source)
        rows.extend(clean)
    random.Random(seed).shuffle(rows)
    return rows, dropped


def build_mixture(data_dir: str | Path, **options) -> list[Pair]:
    """The rows of build_mixture_with_dropped(data_dir, **options), without the dropped counts."""
    rows, _ = build_mixture_with_dropped(data_dir, **options)
    return rows


def mixture_report(rows: list[Pair], dropped: dict[str, int] | None = None) -> str:
    """A plain-text table: rows, share and hard-negative coverage per source (+ decontamination)."""
    counts = Counter(row.source for row in rows)
    negatives = Counter(row.source for row in rows if row.negative is not None)
    names = list(dict.fromkeys([*sorted(counts), *sorted(dropped or {})]))
    header = f"{'source':<22} {'rows':>7} {'share':>6} {'hard neg':>8}"
    lines = [header + (f" {'dropped':>8}" if dropped is not None else "")]
    for name in names:
        n = counts[name]
        line = f"{name:<22} {n:>7} {n / max(len(rows), 1):>6.1%} {negatives[name] / max(n, 1):>8.0%}"
        if dropped is not None:
            line += f" {dropped.get(name, 0):>8}"
        lines.append(line)
    total = f"{'total':<22} {len(rows):>7}"
    lines.append(total + (f" {'':>6} {'':>8} {sum(dropped.values()):>8}" if dropped is not None else ""))
    used = [name for name in CLASSIFICATION_SOURCES if counts[name]]
    lines.append(f"classification train splits: {'INCLUDED (' + ', '.join(used) + ')' if used else 'not used'}")
    return "\n".join(lines)

"""The benchmark data's manifest: every file, where it comes from, its sha256, size and licence.

Two forms of the same facts:
- MANIFEST.md beside the data (a Markdown table written by hand when the data was staged);
- eval/manifest.json in this repository, the machine-readable form that `run.py data` follows.
  scripts/manifest.py writes it from MANIFEST.md plus the recipe table in eval/recipes.py, and
  tests/test_manifest.py checks the two still agree.

An upstream is written `owner/repo@commit:path`; a path ending in "/" names a folder (fetched as
the repository's archive), and `path!member` a file inside a zip or tar archive.

    load() -> [Entry, ...]                  the committed manifest.json
    parse_markdown(text) -> [Row, ...]      MANIFEST.md's main table, one Row per file
    render_markdown(entries) -> str         that table again, for a data directory made by `run.py data`
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_JSON = Path(__file__).resolve().parent / "manifest.json"

COLUMNS = ("family", "dataset", "file", "split", "rows", "size", "sha256", "source", "licence", "faithful")
# The same columns as the hand-written MANIFEST.md heads them, which the pre-run check reads
# (mltp.data.manifest.read_manifest): a fetched folder is verified as the staged one is.
HEADER = ("family", "dataset", "file", "split", "rows", "size (bytes)", "sha256", "source", "upstream licence",
          "faithful to MTEB/original?")
UPSTREAM = re.compile(r"(?P<repo>[\w.-]+/[\w.-]+)@(?P<commit>[0-9a-f]{7,40}):(?P<path>\S+)")


@dataclass(frozen=True)
class Row:
    """One line of MANIFEST.md's main table, as written there."""
    family: str
    dataset: str
    file: str
    split: str
    rows: str
    size: int
    sha256: str
    source: str
    licence: str
    faithful: str


@dataclass(frozen=True)
class Upstream:
    repo: str  # owner/name on GitHub
    commit: str  # 40 hex digits: the pinned snapshot
    path: str  # a file, a folder ending in "/", or "archive!member"

    @classmethod
    def parse(cls, spec: str) -> "Upstream":
        m = UPSTREAM.fullmatch(spec)
        if not m:
            raise ValueError(f"not an upstream spec (owner/repo@commit:path): {spec!r}")
        return cls(m["repo"], m["commit"], m["path"])

    def __str__(self) -> str:
        return f"{self.repo}@{self.commit}:{self.path}"


@dataclass(frozen=True)
class Entry:
    """One file of the data directory and how to make it."""
    file: str  # path inside the data directory, as it is stored (".gz" = gzip of the verified bytes)
    sha256: str  # of the uncompressed content
    size: int  # bytes of the uncompressed content
    derivation: str  # a name in eval.derive.DERIVATIONS; "copy" = the upstream file verbatim
    inputs: tuple[str, ...]  # upstream specs, or "data:<file>" for another entry of this manifest
    licence: str
    family: str = ""
    dataset: str = ""
    split: str = ""
    rows: str = ""
    note: str = ""  # the source column of MANIFEST.md, kept for the reader
    faithful: str = ""
    options: dict = field(default_factory=dict)  # the derivation's keyword arguments

    @property
    def gzipped(self) -> bool:
        return self.file.endswith(".gz")

    def upstreams(self) -> list[Upstream]:
        return [Upstream.parse(s) for s in self.inputs if not s.startswith("data:")]

    def local_inputs(self) -> list[str]:
        return [s[len("data:"):] for s in self.inputs if s.startswith("data:")]


def table_rows(text: str):
    """Every body row of every Markdown table in `text`: (line number, header cells, row cells).

    The one reader of MANIFEST.md tables, for parse_markdown below and the pre-run check
    (mltp.data.manifest.read_manifest); each refuses a row whose cells do not match its header in a table it reads (skipping it would
    leave its file unverified). A table of notes may hold a `|` inside a cell."""
    header = None
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.startswith("|"):
            header = None  # a table ended
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not all(c and set(c) <= set("-: ") for c in cells):  # not the |---|---| row
            yield line_no, header, cells


def parse_markdown(text: str) -> list[Row]:
    """The rows of the first table whose header has COLUMNS' places (the main table)."""
    rows, main = [], None
    for number, header, cells in table_rows(text):
        if main is None and len(header) == len(COLUMNS) and header[0] == "family" and header[2] == "file":
            main = header
        if header is not main:
            if rows:
                break
            continue
        if len(cells) != len(COLUMNS):
            raise ValueError(f"MANIFEST.md line {number}: {len(cells)} cells, expected {len(COLUMNS)}")
        values = dict(zip(COLUMNS, cells))
        if not re.fullmatch(r"[0-9a-f]{64}", values["sha256"]):
            raise ValueError(f"MANIFEST.md line {number}: bad sha256 {values['sha256']!r}")
        values["size"] = int(values["size"])
        rows.append(Row(**values))
    if not rows:
        raise ValueError("MANIFEST.md: no table with the columns " + " | ".join(COLUMNS))
    return rows


def render_markdown(entries: list[Entry]) -> str:
    """A MANIFEST.md for a fetched data directory: the main table, same columns, one row per file."""
    head = ["# Data manifest", "",
            "Written by `python run.py data` from this project's eval/manifest.json: every file below was made",
            "from the public source named in its row and checked against the sha256 and size given here",
            "(of the uncompressed content for names ending in .gz).", "",
            "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    body = ["| " + " | ".join([e.family, e.dataset, e.file, e.split, e.rows, str(e.size), e.sha256, e.note, e.licence,
                               e.faithful]) + " |" for e in sorted(entries, key=lambda e: e.file)]
    return "\n".join(head + body) + "\n"


def to_json(entries: list[Entry]) -> str:
    out = []
    for e in entries:
        d = asdict(e)
        d["inputs"] = list(e.inputs)
        out.append(d)
    return json.dumps({"entries": out}, indent=1, ensure_ascii=False) + "\n"


def from_json(text: str) -> list[Entry]:
    return [Entry(**{**d, "inputs": tuple(d["inputs"])}) for d in json.loads(text)["entries"]]


def load(path: str | Path = MANIFEST_JSON) -> list[Entry]:
    """The parsed manifest entries, in the order they are fetched (inputs before what is made of them)."""
    return from_json(Path(path).read_text())

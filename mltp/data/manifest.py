"""Check data files against the size and sha256 that the data folder's MANIFEST.md lists.

    verify(data_dir, ["sts/biosses/biosses_test.tsv", ...]) -> {path: verdict}

A file cut short at a line boundary still parses, and it changes the scores without any error, so
every file a run reads is checked before the run starts. For a `.gz` file the manifest describes
the uncompressed bytes, so the file is hashed as it is decompressed. Hashing the whole benchmark
takes seconds, so a verdict is cached by the file's size, mtime, inode and change time (and the
expected hash): an edit changes the change time even when it puts the mtime back, and a second
run pays one `stat` per file. Only passes are cached, so a bad file is caught every time.

Rows without a size or sha256 (MANIFEST.md has a short table of that kind) can only be checked
for existence; their verdict says so instead of claiming a check that was not made.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from eval.manifest import table_rows

from ..hygiene.atomic import atomic_write_json

MANIFEST = "MANIFEST.md"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    size: int  # bytes; of the uncompressed content for a .gz file
    sha256: str


class DataError(ValueError):
    """A data file that is not the one MANIFEST.md describes."""


SIZE_COLUMNS = ("size (bytes)", "size")  # the hand-written MANIFEST.md's name; `run.py data` once wrote the other


def read_manifest(data_dir: str | os.PathLike) -> dict[str, Entry]:
    """{relative path: Entry} from every MANIFEST.md table that has file, size and sha256 columns."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {data_dir}: not a benchmark data folder")
    entries: dict[str, Entry] = {}
    for line_no, header, cells in table_rows(path.read_text(encoding="utf-8")):
        size_column = next((name for name in SIZE_COLUMNS if name in header), None)
        if "file" not in header or "sha256" not in header or size_column is None:
            continue  # a table of notes: its files can only be checked for existence
        if len(cells) != len(header):
            raise DataError(f"{path}:{line_no}: {len(cells)} cells, the table's header has {len(header)}")
        row = dict(zip(header, cells))
        if not row[size_column].isdigit():
            raise DataError(f"{path}:{line_no}: size {row[size_column]!r} is not a number")
        entries[row["file"]] = Entry(int(row[size_column]), row["sha256"].lower())
    return entries


def _digest(path: Path) -> tuple[int, str]:
    """(size, sha256) of the file's content; a .gz file is decompressed on the way."""
    h, size = hashlib.sha256(), 0
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"data file {path} is not a whole gzip file ({e}): fetch it again (see {MANIFEST})") from None
    return size, h.hexdigest()


def default_cache() -> Path:
    # Beside the converted models (mltp.formats.gguf.cache_root): one cache folder for the project.
    return Path(os.environ.get("MLTP_CACHE", Path.home() / ".cache" / "mltp")) / "data-verdicts.json"


def _load_cache(path: Path) -> dict:
    try:
        cache = json.loads(path.read_text())
        return cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: verify again


def verify(data_dir: str | os.PathLike, relative_paths, *, cache: str | os.PathLike | None = None) -> dict[str, str]:
    """Check each file against MANIFEST.md; return {path: "sha256 ok" | "sha256 ok (cached)" | why unchecked}.

    Raises FileNotFoundError for a missing file and DataError for one whose size or sha256 differ,
    each naming the file and the expected and found values.
    """
    data_dir = Path(data_dir)
    entries = read_manifest(data_dir)
    cache_path = Path(cache) if cache is not None else default_cache()
    verdicts_cache = _load_cache(cache_path)
    verdicts, changed = {}, False
    for rel in dict.fromkeys(relative_paths):
        path = data_dir / rel
        if not path.is_file():
            listed = "listed in" if rel in entries else "needed; not even listed in"
            raise FileNotFoundError(f"data file {path} is missing ({listed} {data_dir / MANIFEST})")
        entry = entries.get(rel)
        if entry is None:
            verdicts[rel] = f"exists; {MANIFEST} gives no size or sha256 for it"
            continue
        st = path.stat()
        key = str(path.resolve())
        # ctime: any write to the file sets it, and no call can set it back (mtime can be, by touch -r).
        stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino,
                 "sha256": entry.sha256}
        if verdicts_cache.get(key) == stamp:
            verdicts[rel] = "sha256 ok (cached)"
            continue
        size, digest = _digest(path)
        what = "uncompressed size" if path.suffix == ".gz" else "size"
        if size != entry.size:
            raise DataError(f"data file {path}: {what} {size} bytes, {MANIFEST} expects {entry.size} "
                            f"(sha256 {digest}, expected {entry.sha256}): the file is damaged or another version")
        if digest != entry.sha256:
            raise DataError(f"data file {path}: sha256 {digest}, {MANIFEST} expects {entry.sha256}: "
                            "the file is damaged or another version")
        verdicts[rel] = "sha256 ok"
        verdicts_cache[key] = stamp
        changed = True
    if changed:
        try:
            atomic_write_json(cache_path, verdicts_cache)
        except OSError:
            pass  # only a cache: an unwritable one costs time, not correctness
    return verdicts

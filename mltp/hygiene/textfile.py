"""Opening the data files: one reader for training sources (mltp/data/sources.py) and evaluators (eval/loaders.py),
and one digest of a file's bytes for the records that name a file by its sha256.

One opener, so that both sides decode the same bytes the same way: a file the two read differently
would let a training text slip past decontamination.
"""
from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path
from typing import Callable


def open_text(path: str | Path, missing: Callable[[Path], Exception] | None = None) -> io.TextIOBase:
    """Text handle on `path`, gunzipped when its name ends in .gz.

    utf-8-sig drops a leading byte-order mark (MRPC's files start with one) and reads plain UTF-8
    unchanged; newline="" leaves line ends to the csv module. `missing(path)` builds the error for
    an absent file, so a caller can say where that file comes from.
    """
    path = Path(path)
    if not path.is_file():
        raise missing(path) if missing else FileNotFoundError(f"data file not found: {path}")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def file_sha256(path: str | Path) -> str:
    """sha256 of the file's bytes as stored (a .gz file is not decompressed), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

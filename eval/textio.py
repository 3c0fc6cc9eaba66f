"""Opening data files and writing outputs: eval's own small helpers, so that eval imports nothing
from mltp (mltp opens its training sources with this same `open_text`, mltp/hygiene/textfile.py).

One opener for both sides, so that training and evaluation decode the same bytes the same way: a
file the two read differently would let a training text slip past decontamination.
Writes are atomic: beside the target (same filesystem), then `os.replace`; a crash leaves the old
file or the new one, never half of one.
"""
from __future__ import annotations

import gzip
import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


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


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], mode: int = 0o644) -> Path:
    """Call `write(f)` on a binary file beside `path`, then move it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, mode)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))  # utf-8, not the locale's

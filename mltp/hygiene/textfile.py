"""One digest of a file's bytes for the records that name a file by its sha256; and the one opener
that training sources and evaluators share, which eval owns (eval/textio.py) so eval needs no mltp.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from eval.textio import open_text  # noqa: F401  (re-exported: one opener for both sides)


def file_sha256(path: str | Path) -> str:
    """sha256 of the file's bytes as stored (a .gz file is not decompressed), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

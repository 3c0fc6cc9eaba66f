"""Atomic file writes: a crash leaves the old file or the new one, never half of one.

Write beside the target (same filesystem), then `os.replace`, which is atomic on POSIX and Windows.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike) -> None:
    """The permissions an ordinary new file gets (0666 less the umask): mkstemp and safetensors'
    save_file make 0600 files, which another user of a shared run directory cannot read."""
    os.chmod(path, 0o666 & ~_umask())


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)` and move the result onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        follow_umask(tmp)  # after the write: a writer may replace the file it was given
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))  # not the locale's


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_stem(stem: str | os.PathLike, data: dict, markdown: str) -> None:
    """STEM.json (the data) and STEM.md (its table), each written atomically: the benchmarks' output."""
    stem = Path(stem)  # appended to, not with_suffix: "qwen2-0.5b" would lose its ".5b"
    atomic_write_text(stem.with_name(stem.name + ".json"), json.dumps(data, indent=2) + "\n")
    atomic_write_text(stem.with_name(stem.name + ".md"), markdown)


def remove_stray_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete what a killed writer left in `directory` (not below it): atomic_write's
    `.NAME.XXXX.tmp` files and `.NAME.tmp` folders written whole and then renamed, as checkpoints
    are. A kill, unlike an exception, skips the cleanup in atomic_write."""
    directory = Path(directory)
    stray = sorted(directory.glob(".*.tmp")) if directory.is_dir() else []
    for p in stray:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stray

"""One writer per run directory: a lock held while a run writes there.

    release = hold(run_dir)     # RunLocked, naming the holder's process, if another run holds it
    ...; release()

Two processes given the same --out would interleave train_history.jsonl and checkpoints, and the
history would still claim to be complete. The lock is an flock on run_dir/.lock: the kernel
releases it when its process ends, however it ends, so a lock file left by a killed run is stale
by construction and is taken over. The file names the holder's pid and host for the message, and
goes when the run ends.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

LOCK = ".lock"


class RunLocked(RuntimeError):
    """Another live process writes this run directory."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"process {info['pid']} on {info['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"  # it is still writing its name


def _acquire(path: Path) -> int:
    """An open descriptor of `path` holding its flock; RunLocked if a live process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLocked(f"{path.parent} is being written by {_holder(path)}: wait for it to end, "
                            "or pass another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its last holder removed between our open and our flock
            return fd
        os.close(fd)


def hold(run_dir: Path):
    """Take run_dir's lock; returns the function that releases it (and removes the lock file)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    fd = _acquire(path)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())

    def release() -> None:
        path.unlink(missing_ok=True)  # while still held: an opener waiting on it sees another inode and retries
        os.close(fd)
    return release

"""train_history.jsonl: one line per optimiser step, appended as the step ends.

Written step by step so a killed run keeps every step it took. A resumed run restarts from its
last checkpoint, so the lines after that step (steps whose effect the checkpoint does not hold,
and a last line a kill may have cut in half) are dropped before it goes on: the file then lists
each step of the run exactly once, whatever the number of sessions. The run's training record
(`summary`) is computed from the whole file, so a rerun of a finished run reports the run, not
its own zero steps.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .atomic import atomic_write_text

FILE = "train_history.jsonl"


def _read(path: Path) -> list[dict]:
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break  # a line a kill cut short: it and anything after it are not part of the record
        if not isinstance(row, dict) or "step" not in row:
            break
        rows.append(row)
    return rows


class History:
    def __init__(self, run_dir: str | Path, resume_at: int, write: bool = True):
        """Keep the steps up to `resume_at` (the checkpoint's step) and append from there.
        `write=False` keeps the rows in memory only (every rank but the first under torchrun)."""
        self.path, self.write = Path(run_dir) / FILE, write
        kept = [r for r in _read(self.path) if r["step"] <= resume_at]
        if write:
            atomic_write_text(self.path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))
        self.rows = kept
        self.session_start = resume_at

    def append(self, row: dict) -> None:
        # Strict JSON: a non-finite value (an inf gradient norm) is written as null.
        row = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
        if self.write:
            with open(self.path, "a") as f:
                f.write(json.dumps(row, allow_nan=False) + "\n")
                f.flush()
        self.rows.append(row)

    def summary(self) -> dict:
        rows = self.rows
        seconds = sum(r.get("seconds", 0.0) for r in rows)
        tokens = sum(r.get("tokens", 0) for r in rows)
        return {
            "steps_run": rows[-1]["step"] if rows else 0,  # of the whole run, over every session
            # False for a run resumed from a checkpoint of an older version, which wrote the file
            # only when a session ended: then some steps have no line.
            "history_complete": [r["step"] for r in rows] == list(range(1, len(rows) + 1)),
            "first_step": self.session_start + 1,  # of this session
            "steps_this_session": (rows[-1]["step"] if rows else 0) - self.session_start,
            "final_loss": rows[-1]["loss"] if rows else None,
            "seconds": seconds,
            "tokens": tokens,
            "tokens_per_second": tokens / seconds if seconds > 0 else None,
        }

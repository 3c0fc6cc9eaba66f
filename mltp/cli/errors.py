"""How a command stops on input it cannot use: one line naming the file, flag or problem, exit 2."""
from __future__ import annotations

import sys


def fail(message: str) -> None:
    print(f"run.py: error: {message}", file=sys.stderr)
    sys.exit(2)

"""How a command names itself and stops on input it cannot use: one line naming the file, flag or
problem, then exit 2 (never a traceback)."""
from __future__ import annotations

import sys

# What the user typed to start the command: "run.py", "mltp" or "python -m mltp" (set by
# mltp.cli.main), so that messages and recorded commands speak the user's language.
_program = ["run.py"]


def set_program(name: str) -> None:
    _program[0] = name


def program() -> str:
    return _program[0]


def invocation() -> str:
    """The command line that starts this program again: "python run.py", "mltp", "python -m mltp"."""
    return "python run.py" if program() == "run.py" else program()


def fail(message: str) -> None:
    print(f"{program()}: error: {message}", file=sys.stderr)
    sys.exit(2)

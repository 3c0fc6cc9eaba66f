#!/usr/bin/env python
"""mltp from a checkout: the same program as the installed `mltp` command.

    python run.py --pool mltp --layers middle4 --no-layer-weights   # one configuration (the `train` command)
    python run.py ablation                                          # the study, resumable
    python run.py --help                                            # every command

The commands live in mltp/cli/, one module each.
"""
from mltp import cli


def main(argv: list[str] | None = None) -> None:
    cli.main(argv, prog="run.py")


if __name__ == "__main__":
    main()

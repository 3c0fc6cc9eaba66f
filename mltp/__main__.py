"""`python -m mltp COMMAND ...`: the `mltp` command (mltp/cli/)."""
from mltp.cli import main

main(prog="python -m mltp")

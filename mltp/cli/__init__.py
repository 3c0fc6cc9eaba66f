"""The command line: `mltp COMMAND ...`, `python -m mltp COMMAND ...` and `python run.py COMMAND ...`
are one program. With no command it trains (`python run.py --pool mltp --layers middle4`).

Each command is one module here with
    add_arguments(parser)   the flags it uses, and no other (the shared groups: mltp/cli/flags.py)
    run(args)               the work; `fail(message)` (mltp/cli/errors.py) for input it cannot use
and one line in COMMANDS below: its name, its module, what it does and how long it takes on two
cores (the first line of its --help). To add a command: write the module, add the line.

Nothing heavy is imported until a command runs: `mltp --help` lists the commands at once.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import NamedTuple

from .errors import fail, program, set_program


class Command(NamedTuple):
    module: str  # under mltp.cli
    does: str  # what it does, one line
    takes: str  # how long it takes on two cores
    arguments: str = "add_arguments"  # the function that adds its flags: in its module, or "module:function"


COMMANDS = {
    "train": Command("train", "fine-tune one configuration (LoRA + pooler) and evaluate it: the main job",
                     "about 10 minutes on two cores at the CPU budget"),
    "ablation": Command("ablation", "the study: every configuration at every seed, resumable, then its report",
                        "each run as long as `train`, 10 to 30 minutes on two cores; --report-only seconds"),
    "probe": Command("probe", "zero-shot quality of every single block, or where a trained MLTP pooler attends",
                     "the pooler probe over the quick suite took 43 minutes on two cores"),
    "intervene": Command("intervene", "re-score a study's trained MLTP runs with W zeroed, shuffled, reset, or another seed's",
                         "11 to 21 minutes a run on two cores", "flags:add_intervene_arguments"),
    "export": Command("export", "write a saved embedder as a sentence-transformers directory",
                      "under a minute on two cores for SmolLM2-135M"),
    "encode": Command("encode", "embed a file of texts with a saved embedder into a .npy",
                      "about 700 tokens a second on two cores with SmolLM2-135M"),
    "data": Command("data", "fetch the benchmark data from its public sources, derive and verify every file",
                    "minutes on two cores, most of it downloading; run again, it keeps what is verified"),
}
DEFAULT = "train"


def overview() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {program()} [COMMAND] [FLAGS]", "",
             "mltp: Multi-Layers Trainable Pooling for LLM embeddings, and the study of what in it helps.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {c.does} ({c.takes})" for name, c in COMMANDS.items()]
    lines += ["", f"With no command, {program()} trains: `{program()} --pool mltp --layers middle4 --no-layer-weights`.",
              f"`{program()} COMMAND --help` lists a command's flags."]
    return "\n".join(lines)


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose --help starts with what the command does, then its usage."""

    def format_help(self) -> str:
        formatter = self._get_formatter()
        formatter.add_text(self.description)
        formatter.add_usage(self.usage, self._actions, self._mutually_exclusive_groups)
        for group in self._action_groups:
            formatter.start_section(group.title)
            formatter.add_text(group.description)
            formatter.add_arguments(group._group_actions)
            formatter.end_section()
        return formatter.format_help()


def parser_for(name: str) -> tuple[argparse.ArgumentParser, object]:
    """The parser of one command, with its flags only, and the command's module."""
    command = COMMANDS[name]
    module = importlib.import_module(f"{__name__}.{command.module}")
    where, _, function = command.arguments.rpartition(":")
    add_arguments = getattr(importlib.import_module(f"{__name__}.{where}") if where else module, function)
    doc = (module.__doc__ or "").strip().partition("\n")[2].strip()  # its first line is for readers of the code
    parser = Parser(prog=f"{program()} {name}", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description=f"{command.does[0].upper()}{command.does[1:]} ({command.takes}).\n\n{doc}")
    add_arguments(parser)
    return parser, module


def parse(argv: list[str]) -> tuple[argparse.Namespace, object]:
    """The command's flags from argv (its name first, or none for train), and its module."""
    name = argv[0] if argv and argv[0] in COMMANDS else DEFAULT
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        fail(f"unknown command {argv[0]!r}; the commands: {', '.join(COMMANDS)} (`{program()} --help`)")
    parser, module = parser_for(name)
    args = parser.parse_args(argv[1:] if argv and argv[0] == name else argv)
    args.command = name
    args.argv = list(argv)  # recorded in logs and reports: the exact command that reproduces a run
    return args, module


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Run one command. `prog`: what the user typed (messages name it); default, the script's name."""
    set_program(prog or Path(sys.argv[0]).name)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(overview())
        return
    args, module = parse(argv)
    module.run(args)

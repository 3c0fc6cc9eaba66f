"""Hardware budgets, and the checks every command makes before any slow step."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import eval as evaluators
from mltp.checkpoint import resolve_model
from mltp.config import read_config
from mltp.distributed import launched_ranks, rank_device
from mltp.layers import parse_layers

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
    args.ranks = launched_ranks()  # > 1 under torchrun (mltp.distributed)
    if args.ranks > 1:
        if getattr(args, "command", "train") != "train":
            fail(f"torchrun runs the main job (one configuration) only, not `{args.command}`: run that with one process")
        args.device = rank_device(args.device)
        if args.batch_size % args.ranks:
            fail(f"--batch-size {args.batch_size} does not split evenly over {args.ranks} ranks (torchrun --nproc_per_node): "
                 f"give a multiple of {args.ranks}")
    if chosen:
        why = "a GPU is available" if device.type == "cuda" else "no GPU: CPU budget, about 15 minutes on 2 cores"
        log(f"defaults for {device.type} ({why}): {', '.join(chosen)}")

    try:
        args.data_dir = str(evaluators.resolve_data_dir(args.data_dir))
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    if not (Path(args.data_dir) / "MANIFEST.md").exists():
        fail(f"no benchmark data at {args.data_dir} (MANIFEST.md missing): pass --data-dir or set MLTP_DATA_DIR")
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
    if args.tasks:
        known = evaluators.list_tasks()
        unknown = [t for t in args.tasks.split(",") if t not in known]
        if unknown:
            fail(f"unknown task(s) {unknown}; known: {', '.join(known)}")
    for key in ("steps", "batch_size", "max_length", "lora_r", "grad_accum", "mini_batch"):
        if getattr(args, key, None) is not None and getattr(args, key) < 1:
            fail(f"--{key.replace('_', '-')} must be >= 1")
    return args


def config_name(args: argparse.Namespace) -> str:
    parts = [args.pool, args.attn]
    if args.pool in ("mltp", "layer-mean"):
        parts.append(args.layers.replace(",", "_"))
    if args.pool == "mltp" and args.no_layer_weights:
        parts.append("noW")
    # The per-block token, when not the attention's default (causal: EOS, bidirectional: mean).
    if args.pool in ("mltp", "layer-mean") and args.layer_token not in (None, "eos" if args.attn == "causal" else "mean"):
        parts.append(args.layer_token)
    if args.pool == "trainable" and args.tokens not in (None, "eos" if args.attn == "causal" else "all"):
        parts.append(f"{args.tokens}-tokens")
    if args.eval_only:
        parts.append("zeroshot")
    return "-".join(parts)

"""Hardware budgets, and the checks every command makes before any slow step."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

import eval as evaluators
from eval.files import task_files
from mltp.data import manifest
from mltp.formats.checkpoint import resolve_model
from mltp.embedder import E5_TEMPLATE
from mltp.distributed import launched_ranks, rank_device
from mltp.layers import parse_layers
from mltp.pooler_flags import unused_flags
from mltp.pooling import PER_BLOCK_KINDS, SINGLE_BLOCK_KINDS, PoolerConfig
from mltp.hygiene.preflight import check_model_dir
from mltp.data.sources import CLASSIFICATION_SOURCES, DEFAULT_SOURCES, SOURCES
from mltp.tokenizer import load_tokenizer
from mltp.data.userdata import check_files

from .data import fetch_data
from .errors import fail

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


def resolve(args: argparse.Namespace, log=print) -> argparse.Namespace:
    """Fill hardware defaults and check every input before any work starts."""
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        fail(f"--device {args.device}: not a device; use cpu, cuda or cuda:N")
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
        if not getattr(args, "fetch_data", False):
            fail(f"{e}; or add --fetch-data")
        args.data_dir = str(args.data_dir or evaluators.user_data_dir())
    if not (Path(args.data_dir) / "MANIFEST.md").exists() and getattr(args, "fetch_data", False):
        fetch_data(args.data_dir, log=log)
    if not (Path(args.data_dir) / "MANIFEST.md").exists():
        fail(f"no benchmark data at {args.data_dir} (MANIFEST.md missing): pass --data-dir, set MLTP_DATA_DIR, "
             f"or fetch it with `python run.py data --to {args.data_dir}`")
    for key in ("steps", "batch_size", "max_length", "lora_r", "grad_accum", "latents", "heads", "head_dim", "mini_batch"):
        if getattr(args, key, None) is not None and getattr(args, key) < 1:
            fail(f"--{key.replace('_', '-')} must be >= 1")
    for key in ("lr", "lora_alpha"):
        if not (math.isfinite(getattr(args, key)) and getattr(args, key) > 0):
            fail(f"--{key.replace('_', '-')} must be a positive number, got {getattr(args, key)}")
    if args.no_layer_weights and args.pool != "mltp":
        fail(f"--no-layer-weights applies to --pool mltp only (got --pool {args.pool})")
    has_table = {"layer_weight_std": ("mltp",), "layer_weight_lr_mult": ("mltp", "scalar-mix")}
    for flag, kinds in has_table.items():
        value = getattr(args, flag, 1.0)
        if not (math.isfinite(value) and value > 0):
            fail(f"--{flag.replace('_', '-')} must be a positive number, got {value}")
        if value != 1.0 and (args.pool not in kinds or args.no_layer_weights):
            fail(f"--{flag.replace('_', '-')} applies to --pool {' or '.join(kinds)} with its layer table only")
    if getattr(args, "command", "train") == "train":
        # Given by hand, a flag the pooler ignores is a mistake; left at its default, the
        # run records it as unused (results.json "unused_settings").
        given = {a.split("=")[0] for a in getattr(args, "argv", [])}
        ignored = [f"--{flag.replace('_', '-')}" for flag in unused_flags(args.pool) if f"--{flag.replace('_', '-')}" in given]
        if ignored:
            fail(f"{', '.join(ignored)} {'does' if len(ignored) == 1 else 'do'} not apply to --pool {args.pool}: "
                 f"drop {'it' if len(ignored) == 1 else 'them'}")
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

    try:
        args.model_dir = str(resolve_model(args.model))
        config = check_model_dir(args.model_dir)
        args.layer_ids = list(parse_layers(args.layers, config.num_hidden_layers))
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    args.num_layers = num_layers = config.num_hidden_layers
    causal = args.attn == "causal"
    args.layer_token = args.layer_token or ("eos" if causal else "mean")
    args.tokens = args.tokens or ("eos" if causal else "all")
    args.block = getattr(args, "block", None)
    if args.block is not None and (args.pool not in SINGLE_BLOCK_KINDS or not 1 <= args.block <= num_layers):
        fail(f"--block {args.block}: a block 1..{num_layers}, for --pool {', '.join(SINGLE_BLOCK_KINDS)} only")
    try:
        PoolerConfig(kind=args.pool, hidden_size=config.hidden_size, num_layers=config.num_hidden_layers,
                     layers=args.layers, layer_token=args.layer_token, layer_weights=not args.no_layer_weights,
                     tokens=args.tokens, num_latents=args.latents, num_heads=args.heads, head_dim=args.head_dim,
                     layer_weight_std=getattr(args, "layer_weight_std", 1.0), block=args.block)
    except ValueError as e:
        fail(f"pooler widths (--latents, --heads, --head-dim): {e}")
    trains = getattr(args, "command", "train") in ("train", "ablation") and not args.eval_only
    sources = [*DEFAULT_SOURCES, *(CLASSIFICATION_SOURCES if args.include_classification_train else ())] if trains else []
    if getattr(args, "train_data", None) and getattr(args, "train_data_mode", "join") == "replace":
        sources = []  # the built-in mixture is not read
    if trains and sources:
        check_max_length(args, sources, log)
    check_data(args, sources)
    return args


def check_max_length(args: argparse.Namespace, sources: list[str], log=print) -> None:
    # Truncation keeps the instruction and cuts the text (mltp.tokenizer): a query must hold its
    # instruction, one token of text and the end-of-text token. Below that for every source, no
    # query holds any text: refused. Below it for some sources: said, since their queries are
    # instruction only (their positives, without instruction, still hold text).
    tokenizer = load_tokenizer(args.model_dir)
    prefixes = [E5_TEMPLATE.format(instruction=SOURCES[name].instruction, text="") for name in sources]
    need = {name: n + 2 for name, n in zip(sources, tokenizer.count_tokens(prefixes))}
    if args.max_length < min(need.values()):
        fail(f"--max-length {args.max_length} holds no training text: the shortest instruction takes "
             f"{min(need.values()) - 2} tokens, plus one of text and the end-of-text token; give at least {min(need.values())}")
    short = [name for name, n in need.items() if args.max_length < n]
    if short:
        log(f"note: at --max-length {args.max_length} the queries of {', '.join(short)} hold their instruction only "
            f"(at least {max(need.values())} holds text for every source)")


def check_data(args: argparse.Namespace, sources: list[str]) -> None:
    """Every file the run reads (its tasks, and its training sources) against MANIFEST.md."""
    tasks = args.tasks.split(",") if args.tasks else list(evaluators.TASKS)
    # A source none of whose files is there is left out of the mixture, and the run says so
    # (job.sources_present: `run.py data` fetches no Debian or WordNet files); one half there is an error.
    sources = [n for n in sources if any((Path(args.data_dir) / f).exists() for f in SOURCES[n].files)]
    files = task_files(tasks) + [f for name in sources for f in SOURCES[name].files]
    try:
        args.data_verdicts = manifest.verify(args.data_dir, files)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))


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

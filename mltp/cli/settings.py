"""Hardware budgets, the checks every command makes before any slow step, and a run's settings.

`resolve(args)` checks each group of flags the command has (mltp/cli/flags.py) and fills what the
hardware decides, so that a wrong input stops before minutes of work, naming the flag or file.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch

import eval as evaluators
from eval.files import task_files
from mltp.data import manifest
from mltp.data.sources import CLASSIFICATION_SOURCES, DEFAULT_SOURCES, SOURCES
from mltp.config import ModelConfig
from mltp.data.userdata import check_files
from mltp.distributed import launched_ranks, rank_device
from mltp.embedder import E5_TEMPLATE
from mltp.formats.checkpoint import resolve_model
from mltp.hygiene.preflight import check_model_dir
from mltp.layers import parse_layers
from mltp.pooling import kinds_reading
from mltp.tokenizer import load_tokenizer

from .data import fetch_data
from .errors import fail, invocation
from .flags import pooler_config

# Budgets by hardware. CPU: the quick suite and a short run, so the main job ends in about ten
# minutes on 2 cores (results/README.md). GPU: the full suite and a run long enough to move a
# fresh pooler. joint_forward (mltp.step): one forward per step; pays on a GPU, which waits on
# kernel launches at these sizes, and not on a CPU, which waits on arithmetic and would compute
# the extra padding.
BUDGETS = {
    "cpu": dict(suite="quick", steps=60, batch_size=16, max_length=64, lr=3e-4, warmup=6, seeds=1, dtype="float32",
                joint_forward=False),
    "cuda": dict(suite="full", steps=1000, batch_size=64, max_length=256, lr=1e-4, warmup=100, seeds=3, dtype="bfloat16",
                 joint_forward=True),
}


def resolve(args: argparse.Namespace, log=print) -> argparse.Namespace:
    """Fill hardware defaults and check every flag the command has, before any slow step."""
    if hasattr(args, "device"):
        resolve_device(args, log)
    if hasattr(args, "steps"):
        check_training(args)
    if getattr(args, "tasks", None):
        check_tasks(args.tasks)
    model = resolve_model_dir(args) if hasattr(args, "model") else None
    if hasattr(args, "pool"):
        resolve_pooler(args, model)
    if hasattr(args, "data_dir"):  # after the flags: a wrong flag is named whether or not the data is here
        resolve_data_dir(args, log)
    if hasattr(args, "suite"):
        sources = training_sources(args)
        if sources:
            check_max_length(args, sources, log)
        check_data(args, sources)
    return args


def resolve_device(args: argparse.Namespace, log=print) -> None:
    """The device, and what the hardware's budget decides of the flags left unset."""
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        fail(f"--device {args.device}: not a device; use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        fail(f"--device {args.device}: CUDA is not available on this machine")
    budget = BUDGETS["cuda" if device.type == "cuda" else "cpu"]
    chosen = []
    for key in ("suite", "steps", "batch_size", "max_length", "lr", "dtype", "joint_forward", "seeds"):
        if hasattr(args, key) and getattr(args, key) is None:
            setattr(args, key, budget[key])
            chosen.append(f"{key}={budget[key]}")
    if hasattr(args, "steps"):
        args.warmup = min(budget["warmup"], max(1, args.steps // 10))
    args.device = str(device)
    if hasattr(args, "steps"):
        resolve_ranks(args)
    if chosen:
        log(f"defaults for {device.type} ({'a GPU is available' if device.type == 'cuda' else 'no GPU: the CPU budget'}): "
            f"{', '.join(chosen)}")


def resolve_ranks(args: argparse.Namespace) -> None:
    args.ranks = launched_ranks()  # > 1 under torchrun (mltp.distributed)
    if args.ranks > 1:
        if args.command != "train":
            fail(f"torchrun runs the main job (one configuration) only, not `{args.command}`: run that with one process")
        args.device = rank_device(args.device)
        if args.batch_size % args.ranks:
            fail(f"--batch-size {args.batch_size} does not split evenly over {args.ranks} ranks (torchrun --nproc_per_node): "
                 f"give a multiple of {args.ranks}")


def checkout(start: Path) -> Path | None:
    """The mltp checkout holding `start` (a folder with run.py and mltp/ in it), if any."""
    return next((d for d in (start, *start.parents) if (d / "run.py").is_file() and (d / "mltp").is_dir()), None)


def data_dir_candidates() -> list[tuple[str, Path]]:
    """Where the benchmark data is looked for when --data-dir is not given, in order (flags.DATA_HELP)."""
    if os.environ.get("MLTP_DATA_DIR"):
        return [("$MLTP_DATA_DIR", Path(os.environ["MLTP_DATA_DIR"]))]
    here = checkout(Path.cwd())
    found = [("beside the checkout", here.parent / "shared" / "data")] if here is not None else []
    return found + [("the user data folder", evaluators.user_data_dir())]


def find_data_dir(candidates: list[tuple[str, Path]]) -> Path | None:
    """The first candidate holding MANIFEST.md (the tests skip by this same lookup, tests/conftest.py)."""
    return next((path for _, path in candidates if (path / "MANIFEST.md").is_file()), None)


def resolve_data_dir(args: argparse.Namespace, log=print) -> None:
    """--data-dir, else the first candidate holding MANIFEST.md; fetched first with --fetch-data."""
    candidates = [("--data-dir", Path(args.data_dir))] if args.data_dir else data_dir_candidates()
    found = find_data_dir(candidates)
    if found is None and args.fetch_data:
        found = candidates[0][1] if args.data_dir or os.environ.get("MLTP_DATA_DIR") else evaluators.user_data_dir()
        fetch_data(found, log=log)
    if found is None:
        where = "; ".join(f"{name}: {path}" for name, path in candidates)
        fail(f"no benchmark data (a folder with MANIFEST.md) in {where}. Fetch it with `{invocation()} data` "
             f"(into {evaluators.user_data_dir()}), pass --data-dir, set MLTP_DATA_DIR, or add --fetch-data")
    args.data_dir = str(found.expanduser())


def check_training(args: argparse.Namespace) -> None:
    for key in ("steps", "batch_size", "max_length", "lora_r", "grad_accum", "latents", "heads", "head_dim", "mini_batch"):
        if getattr(args, key, None) is not None and getattr(args, key) < 1:
            fail(f"--{key.replace('_', '-')} must be >= 1")
    for key in ("lr", "lora_alpha", "layer_weight_std", "layer_weight_lr_mult"):
        value = getattr(args, key, 1.0)
        if not (math.isfinite(value) and value > 0):
            fail(f"--{key.replace('_', '-')} must be a positive number, got {value}")
    if getattr(args, "train_data", None):
        try:
            args.train_data = check_files(args.train_data)
        except (FileNotFoundError, ValueError) as e:
            fail(str(e))


def check_tasks(tasks: str) -> None:
    known = evaluators.list_tasks()
    unknown = [t for t in tasks.split(",") if t not in known]
    if unknown:
        fail(f"unknown task(s) {unknown}; known: {', '.join(known)}")


def resolve_model_dir(args: argparse.Namespace) -> ModelConfig:
    """The checkpoint directory, checked in milliseconds (mltp.hygiene.preflight); its config."""
    try:
        args.model_dir = str(resolve_model(args.model))
        config = check_model_dir(args.model_dir)
        if hasattr(args, "layers"):
            args.layer_ids = list(parse_layers(args.layers, config.num_hidden_layers))
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    args.num_layers = config.num_hidden_layers
    return config


def resolve_pooler(args: argparse.Namespace, model: ModelConfig) -> None:
    """The per-block token and the trainable pooler's input follow the attention unless given;
    then the pooler's flags are checked by building its config (mltp.cli.flags.pooler_config)."""
    causal = args.attn == "causal"
    args.layer_token = args.layer_token or ("eos" if causal else "mean")
    args.tokens = args.tokens or ("eos" if causal else "all")
    pooler_config(args, model.hidden_size, model.num_hidden_layers)


def training_sources(args: argparse.Namespace) -> list[str]:
    """The built-in training sources the run reads (none when it does not train, or replaces them)."""
    if getattr(args, "eval_only", True) or getattr(args, "train_data_mode", "join") == "replace" and args.train_data:
        return []
    return [*DEFAULT_SOURCES, *(CLASSIFICATION_SOURCES if args.include_classification_train else ())]


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
            f"(--max-length {max(need.values())} or more leaves text in every source's queries)")


def check_data(args: argparse.Namespace, sources: list[str]) -> None:
    """Every file the run reads (its tasks, and its training sources) against MANIFEST.md."""
    tasks = args.tasks.split(",") if args.tasks else list(evaluators.TASKS)
    # A source none of whose files is there is left out of the mixture, and the run says so
    # (job.sources_present: `data` fetches no Debian or WordNet files); one half there is an error.
    sources = [n for n in sources if any((Path(args.data_dir) / f).exists() for f in SOURCES[n].files)]
    files = task_files(tasks) + [f for name in sources for f in SOURCES[name].files]
    try:
        args.data_verdicts = manifest.verify(args.data_dir, files)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))


def config_name(args: argparse.Namespace) -> str:
    """The main job's run directory name: the configuration, by its settings."""
    per_block = args.pool in kinds_reading("layers")
    parts = [args.pool, args.attn]
    if per_block:
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
    if per_block and args.layer_token not in (None, "eos" if args.attn == "causal" else "mean"):
        parts.append(args.layer_token)
    if args.pool == "trainable" and args.tokens not in (None, "eos" if args.attn == "causal" else "all"):
        parts.append(f"{args.tokens}-tokens")
    if args.eval_only:
        parts.append("zeroshot")
    return "-".join(parts)


# ---- a run's settings record (mltp.hygiene.identity) ----------------------------------------------

# Where things are and how fast they run, not what is computed; and the sweep's own choice of runs.
# Every other resolved flag is a setting, so a new flag is one the day it is added.
NOT_SETTINGS = frozenset({
    "out", "data_dir", "model_dir", "device", "compile", "gradient_checkpointing", "fetch_data",
    "seeds", "only", "list", "time_limit", "report_only", "no_report",
})


def run_config(args: argparse.Namespace) -> dict:
    """The resolved flags, as config.json and results.json record them (the data check's verdicts
    go to results.json apart: they say "cached" the second time)."""
    return {k: v for k, v in vars(args).items() if k not in ("command", "argv", "data_verdicts")}


def run_settings(config: dict) -> dict:
    """The run's settings record: the resolved flags that change its numbers."""
    return {k: v for k, v in config.items() if k not in NOT_SETTINGS}

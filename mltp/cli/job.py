"""One run: train a configuration (unless --eval-only), save it, evaluate it, write results.json."""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import eval as evaluators
from mltp import distributed
from mltp.data import manifest
from mltp.hygiene.atomic import atomic_write_json, atomic_write_text, remove_stray_temps
from mltp.formats.checkpoint import load_model
from mltp.data.mixture import DEFAULT_SOURCES, SOURCES, build_mixture_with_dropped, mixture_report
from mltp.embedder import Embedder, EmbedderConfig
from mltp.hygiene.interrupt import TrainingInterrupted
from mltp.layers import describe_layers
from mltp.lora import LoRAConfig, apply_lora, merge_lora
from mltp.fast import compile_blocks
from mltp.pooler_flags import unused_flags
from mltp.pooling import PER_BLOCK_KINDS, PoolerConfig, build_pooler, count_parameters
from mltp.hygiene.preflight import safetensors_header
from mltp.hygiene.strict_json import finite_or_null
from mltp.tokenizer import load_tokenizer
from mltp.train import CheckpointError, SettingsMismatch, TrainConfig, latest_checkpoint, train
from mltp.data.userdata import join_user_data

from ..hygiene.identity import differences, run_config as resolved_config, settings_of
from .settings import ROOT, config_name, fail

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
        layers=args.layers, layer_token=args.layer_token, layer_weights=not args.no_layer_weights, layer_weight_std=args.layer_weight_std, block=args.block,
        tokens=args.tokens, num_latents=args.latents, num_heads=args.heads, head_dim=args.head_dim,
    )
    # The pooler trains in fp32 even when the decoder is bf16: it starts from random weights.
    pooler = build_pooler(pooler_config).to(args.device)
    log(f"pooling: {args.pool} ({count_parameters(pooler_config):,} parameters), attention: {args.attn}, "
        f"layers: {describe_layers(args.layers, model.config.num_hidden_layers) if args.pool in PER_BLOCK_KINDS else (args.block or 'last')}"
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


def sources_present(data_dir: str) -> tuple[list[str], list[str]]:
    """The default training sources whose files data_dir holds, and those it lacks: a directory made
    by `run.py data` has no Debian or WordNet files (MANIFEST.md pins no public source for them)."""
    present = [n for n in DEFAULT_SOURCES if all((Path(data_dir) / f).exists() for f in SOURCES[n].files)]
    return present, [n for n in DEFAULT_SOURCES if n not in present]


@functools.lru_cache(maxsize=4)
def training_rows(data_dir: str, seed: int, include_classification: bool, tasks: tuple[str, ...],
                  sources: tuple[str, ...] = DEFAULT_SOURCES):
    """The mixture decontaminated against every text of the tasks the run evaluates (a suite: all
    of them, in full); cached so a sweep builds it once per seed."""
    exclude = evaluators.evaluation_texts(data_dir, tasks=list(tasks))
    return build_mixture_with_dropped(data_dir, sources=sources, seed=seed, exclude_texts=exclude,
                                      include_classification=include_classification)


def check_run_dir(run_dir: Path, args: argparse.Namespace) -> None:
    """Refuse, before any work, a run directory made under other settings (finished or not)."""
    try:
        found = differences(run_dir, args)
    except ValueError as e:
        fail(str(e))
    if found and found[2]:
        label, path, differ = found
        state = {"finished": "a finished run", "checkpoint": "an unfinished run", "started": "a started run"}[label]
        fail(f"{run_dir} holds {state} made with other settings ({'; '.join(differ)}; recorded in {path}). "
             f"To go on with it, give the flags it was made with; to start afresh, pass another --out or delete {run_dir}")
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:  # readable now, not after the model and the data are prepared
        try:
            torch.load(checkpoint / "trainer.pt", map_location="cpu", weights_only=True)
            for weights in checkpoint.glob("*.safetensors"):
                safetensors_header(weights)
        except (OSError, RuntimeError, ValueError) as e:
            fail(f"cannot resume from {checkpoint}: {e}. To start afresh, pass another --out or delete {run_dir}")


def data_hashes(args: argparse.Namespace) -> dict[str, str]:
    """sha256 per data file the run reads, as MANIFEST.md lists it (resolve() checked the files)."""
    listed = manifest.read_manifest(args.data_dir)
    return {f: listed[f].sha256 for f in getattr(args, "data_verdicts", None) or {} if f in listed}


def resume_command(args: argparse.Namespace) -> str:
    return "python run.py " + shlex.join(args.argv)


def run_one(args: argparse.Namespace, run_dir: Path) -> dict:
    """Train (unless --eval-only) and evaluate one configuration; write run_dir/results.json.

    Under torchrun every rank trains; rank 0 alone logs, writes and evaluates (the others return None)."""
    world = distributed.start(args.device)
    if world.main:
        check_run_dir(run_dir, args)
        for folder in (run_dir, run_dir / "final", run_dir / "checkpoints"):
            remove_stray_temps(folder)  # what a killed earlier session may have left half written
    log = Tee(run_dir / "log.txt") if world.main else (lambda message: None)
    try:
        return _run(args, run_dir, log, world)
    except TrainingInterrupted as e:
        log(f"interrupted after step {e.step} of {e.steps}; checkpoint {e.checkpoint or 'none yet'}. "
            f"To resume: {resume_command(args)}")
        sys.exit(130)
    except KeyboardInterrupt:
        log(f"interrupted; what was done is kept. To resume: {resume_command(args)}")
        sys.exit(130)
    except SettingsMismatch as e:
        fail(f"{e}. To start afresh, pass another --out or delete {run_dir}")
    except CheckpointError as e:
        fail(str(e))


def _run(args: argparse.Namespace, run_dir: Path, log, world) -> dict | None:
    t0 = time.perf_counter()
    log(f"run {run_dir} ({datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC), command: {resume_command(args)}")
    torch.manual_seed(args.seed)
    embedder, lora_config = build_embedder(args, log)
    run_config = resolved_config(args)
    if world.main:
        atomic_write_json(run_dir / "config.json", run_config)
    tasks = args.tasks.split(",") if args.tasks else args.suite

    train_summary, mixture = None, None
    if not args.eval_only:
        evaluated = tuple(tasks) if args.tasks else tuple(evaluators.TASKS)
        log(f"decontaminating the training data against every text of the {len(evaluated)} evaluated task(s) ...")
        present, absent = sources_present(args.data_dir)
        if absent:
            log(f"training sources left out, their files are not in {args.data_dir}: {', '.join(absent)}")
        own = getattr(args, "train_data", None) or []
        replace = own and args.train_data_mode == "replace"
        rows, dropped = ([], {}) if replace else training_rows(args.data_dir, args.seed, args.include_classification_train,
                                                               evaluated, tuple(present))
        if own:
            rows, dropped, own = join_user_data(rows, dropped, own, args.seed,
                                                evaluators.evaluation_texts(args.data_dir, tasks=list(evaluated)))
        log("training mixture:\n" + mixture_report(rows, dropped))
        mixture = {"rows": len(rows), "dropped": dropped, "include_classification_train": args.include_classification_train}
        if own:
            mixture.update(train_data=own, train_data_mode=args.train_data_mode)
        if absent:
            mixture["sources_left_out"] = absent
        cfg = TrainConfig(
            steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr, warmup=args.warmup,
            max_length=args.max_length, seed=args.seed, save_every=max(10, args.steps // 5),
            log_every=max(1, min(10, args.steps // 10)), joint_forward=args.joint_forward, mini_batch=args.mini_batch,
            layer_table_lr_mult=args.layer_weight_lr_mult,
        )
        log(f"training: {cfg.steps} steps x {cfg.batch_size} queries, lr {cfg.lr}, max {cfg.max_length} tokens, LoRA r={lora_config.r}, "
            f"{'one joint forward' if cfg.joint_forward else 'separate forwards'} per step"
            + (f", GradCache mini-batches of {cfg.mini_batch} texts" if cfg.mini_batch else "")
            + (f", on {world.size} ranks of {cfg.batch_size // world.size} queries, candidates from every rank" if world.size > 1 else ""))
        provenance = {"code_revision": environment(args.device)["git_revision"], "data_sha256": data_hashes(args)}
        train_summary = train(embedder, rows, cfg, lora_config, run_dir, log=log, settings=settings_of(run_config),
                              provenance=provenance)
    distributed.stop()  # training was the only collective work: evaluation runs once, on rank 0
    if not world.main:
        return None
    embedder.save(run_dir / "final", lora_config)
    if lora_config is not None:
        # Saved first: merging changes the base weights in place. Evaluation then runs the plain
        # decoder, fewer operators for the same vectors (bench/README.md, "Evaluation through a
        # merged adapter"). Embedder.load evaluates saved embedders the same way.
        merge_lora(embedder.model)
        log("LoRA adapter merged into the base weights for evaluation")

    t_eval = time.perf_counter()
    results = {}
    for name in args.tasks.split(",") if args.tasks else list(evaluators.TASKS):
        # One task at a time, so an evaluator's refusal (NaN embeddings, say) names its task.
        try:
            results.update(evaluators.evaluate(embedder, tasks=[name], data_dir=args.data_dir, log=log, suite=args.suite))
        except ValueError as e:
            fail(f"task {name}: {e}; {run_dir / 'results.json'} was not written")
    eval_seconds = time.perf_counter() - t_eval
    broken = {name: r["main_score"] for name, r in results.items() if not math.isfinite(r["main_score"])}
    if broken:
        fail(f"non-finite main score for task(s) {broken}: the model's embeddings hold NaN or infinity "
             f"(check the model's weights and --dtype); {run_dir / 'results.json'} was not written")
    record = {
        "name": config_name(args), "command": f"python run.py {' '.join(args.argv)}", "config": run_config,
        "unused_settings": list(unused_flags(args.pool)),  # recorded in config, yet they shape nothing for this pooler
        "suite": args.suite + (f" ({args.tasks})" if args.tasks else ""),
        "family_averages": evaluators.family_averages(results), "tasks": results,
        "train": train_summary, "mixture": mixture, "environment": environment(args.device), "ranks": world.size,
        "data": getattr(args, "data_verdicts", None),
        "seconds": {"total": time.perf_counter() - t0, "eval": eval_seconds},
    }
    record, nulls = finite_or_null(record)
    if nulls:
        record["null_because_not_finite"] = nulls
    atomic_write_text(run_dir / "results.json", json.dumps(record, indent=2, allow_nan=False) + "\n")
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

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
from eval.mteb_results import write_mteb_results
from mltp import distributed
from mltp.data import manifest
from mltp.data.mixture import DEFAULT_SOURCES, SOURCES, build_mixture_with_dropped, mixture_report
from mltp.data.userdata import join_user_data
from mltp.embedder import Embedder, EmbedderConfig
from mltp.formats.checkpoint import load_model
from mltp.hygiene.atomic import atomic_write_json, atomic_write_text, remove_stray_temps
from mltp.hygiene.identity import SettingsMismatch, check_run_dir
from mltp.hygiene.interrupt import TrainingInterrupted, terminate_as_interrupt
from mltp.hygiene.runlock import RunLocked, hold
from mltp.hygiene.preflight import safetensors_header
from mltp.hygiene.strict_json import finite_or_null
from mltp.layers import describe_layers
from mltp.lora import LoRAConfig, apply_lora, merge_lora
from mltp.model import compile_blocks
from mltp.pooling import build_pooler, count_parameters, kinds_reading
from mltp.tokenizer import load_tokenizer
from mltp.train import CheckpointError, TrainConfig, latest_checkpoint, train

from .errors import fail, invocation
from .flags import pooler_config, unused_flags
from .settings import config_name, run_config, run_settings

ROOT = Path(__file__).resolve().parents[2]  # the checkout this code runs from, for its git revision


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
    model = load_model(args.model_dir, dtype=getattr(torch, args.dtype), device=args.device)
    config = pooler_config(args, model.config.hidden_size, model.config.num_hidden_layers)
    # The pooler trains in fp32 even when the decoder is bf16: it starts from random weights.
    pooler = build_pooler(config).to(args.device)
    L = model.config.num_hidden_layers
    log(f"pooling: {args.pool} ({count_parameters(config):,} parameters), attention: {args.attn}, "
        f"layers: {describe_layers(args.layers, L) if args.pool in kinds_reading('layers') else (args.block or 'last')}"
        + (f", layer weights: {'on' if not args.no_layer_weights else 'OFF'}" if args.pool == "mltp" else ""))
    lora_config = None
    if not args.eval_only:
        lora_config = LoRAConfig(r=args.lora_r, alpha=args.lora_alpha)
        apply_lora(model, lora_config)  # adapters are fp32 even on a bf16 model (mltp.lora)
        model.gradient_checkpointing = args.gradient_checkpointing
    embedder = Embedder(model, load_tokenizer(args.model_dir), pooler,
                        EmbedderConfig(model=args.model, causal=args.attn == "causal", max_length=512))
    if embedder.upto is not None:
        log(f"the pooler reads blocks up to {embedder.upto}: blocks {embedder.upto + 1}..{L} are not run")
    if args.compile:
        compile_blocks(model, args.compile)
    return embedder, lora_config


def sources_present(data_dir: str) -> tuple[list[str], list[str]]:
    """The default training sources whose files data_dir holds, and those it lacks: a directory made
    by the `data` command has no Debian or WordNet files (MANIFEST.md pins no public source for them)."""
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


def check_before_work(run_dir: Path, args: argparse.Namespace) -> None:
    """Refuse, before any work, a run directory made under other settings (finished or not), or a
    checkpoint that cannot be read back."""
    try:
        check_run_dir(run_dir, run_settings(run_config(args)))
    except SettingsMismatch as e:
        fail(f"{e}. To go on with it, give the flags it was made with; to start afresh, pass another --out or delete {run_dir}")
    except ValueError as e:  # a record that is not JSON, or has no settings
        fail(str(e))
    try:
        checkpoint = latest_checkpoint(run_dir)
    except CheckpointError as e:
        fail(str(e))
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
    return f"{invocation()} {shlex.join(args.argv)}"


def run_one(args: argparse.Namespace, run_dir: Path) -> dict:
    """Train (unless --eval-only) and evaluate one configuration; write run_dir/results.json.

    Under torchrun every rank trains; rank 0 alone logs, writes and evaluates (the others return None)."""
    world = distributed.start(args.device)
    release = writer_lock(run_dir) if world.main else (lambda: None)
    try:
        with terminate_as_interrupt():  # SIGTERM stops every phase as Ctrl-C does, resume command included
            return _run_one(args, run_dir, world)
    finally:
        release()


def writer_lock(run_dir: Path):
    """The run directory to this process alone (mltp.hygiene.runlock), before anything there is read."""
    blocker = next((d for d in (run_dir, *run_dir.parents) if d.exists() and not d.is_dir()), None)
    if blocker is not None:
        fail(f"--out {run_dir}: {blocker} is a file, not a folder")
    try:
        return hold(run_dir)
    except RunLocked as e:
        fail(str(e))
    except OSError as e:
        fail(f"--out {run_dir}: cannot write there ({e.strerror or e})")


def _run_one(args: argparse.Namespace, run_dir: Path, world) -> dict:
    if world.main:
        check_before_work(run_dir, args)
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
    except CheckpointError as e:
        fail(str(e))


def _run(args: argparse.Namespace, run_dir: Path, log, world) -> dict | None:
    t0 = time.perf_counter()
    log(f"run {run_dir} ({datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC), command: {resume_command(args)}")
    torch.manual_seed(args.seed)
    embedder, lora_config = build_embedder(args, log)
    config = run_config(args)
    settings = run_settings(config)  # the run's identity (mltp.hygiene.identity), recorded in each file
    if world.main:
        atomic_write_json(run_dir / "config.json", {"settings": settings, "config": config})
    train_summary, mixture = None, None
    if not args.eval_only:
        train_summary, mixture = train_run(args, embedder, lora_config, run_dir, settings, log, world)
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
    embedder.progress = log  # SciFact runs minutes on two cores: say how far it is
    results = evaluate_run(args, embedder, run_dir, log)
    eval_seconds = time.perf_counter() - t_eval
    record = {
        "name": config_name(args), "command": f"{invocation()} {' '.join(args.argv)}", "settings": settings, "config": config,
        "unused_settings": unused_flags(embedder.pooler.config),  # recorded in config, yet they shape nothing for this pooler
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
    write_mteb_results(run_dir, record["tasks"], model_name=f"mltp/{record['name']}")  # the same scores, for MTEB's tools
    log(results_table(record))
    log(f"wrote {run_dir / 'results.json'} ({record['seconds']['total'] / 60:.1f} min)")
    return record


def training_mixture(args: argparse.Namespace, log) -> tuple[list, dict]:
    """The run's training rows, decontaminated against every text it evaluates, and their record."""
    evaluated = tuple(args.tasks.split(",")) if args.tasks else tuple(evaluators.TASKS)
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
    return rows, mixture


def train_run(args: argparse.Namespace, embedder: Embedder, lora_config: LoRAConfig, run_dir: Path, settings: dict,
              log, world) -> tuple[dict, dict]:
    """Train the embedder in place (mltp.train); the training record and the mixture's."""
    rows, mixture = training_mixture(args, log)
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
    return train(embedder, rows, cfg, lora_config, run_dir, log=log, settings=settings, provenance=provenance), mixture


def evaluate_run(args: argparse.Namespace, embedder: Embedder, run_dir: Path, log) -> dict:
    results = {}
    for name in args.tasks.split(",") if args.tasks else list(evaluators.TASKS):
        # One task at a time, so an evaluator's refusal (NaN embeddings, say) names its task.
        try:
            results.update(evaluators.evaluate(embedder, tasks=[name], data_dir=args.data_dir, log=log, suite=args.suite))
        except ValueError as e:
            fail(f"task {name}: {e}; {run_dir / 'results.json'} was not written")
    broken = {name: r["main_score"] for name, r in results.items() if not math.isfinite(r["main_score"])}
    if broken:
        fail(f"non-finite main score for task(s) {broken}: the model's embeddings hold NaN or infinity "
             f"(check the model's weights and --dtype); {run_dir / 'results.json'} was not written")
    return results


def results_table(record: dict) -> str:
    lines = [f"\n{record['name']}  (suite: {record['suite']})", f"{'family':<16} {'mean':>7}"]
    for family, score in record["family_averages"].items():
        lines.append(f"{family:<16} {score:>7.4f}")
    lines.append(f"\n{'task':<28} {'family':<15} {'main score':>10} {'items':>7}")
    for name, r in record["tasks"].items():
        lines.append(f"{name:<28} {r['family']:<15} {r['main_score']:>10.4f} {r.get('n_items', ''):>7}")
    return "\n".join(lines)

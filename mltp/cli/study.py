"""The study: its configurations, the comparisons its report makes, and the resumable sweep."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from eval.report import write_report

from .job import run_one
from .settings import ROOT, fail, resolve

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
               "include_classification_train", "suite", "tasks", "dtype", "seed", "joint_forward", "mini_batch")


def check_same_budget(run_dir: Path, run_args: argparse.Namespace) -> None:
    # joint_forward and mini_batch are here although they change no model, loss or data: one
    # forward draws other dropout masks than three (GradCache's mini-batches other than whole
    # groups), and configurations compared at one seed share their dropout draws (common random
    # numbers: the W on/off runs' losses differed by <= 0.034 per step). A report mixing the
    # modes would lose that.
    done = json.loads((run_dir / "results.json").read_text())["config"]
    done = {k: done.get(k) for k in BUDGET_KEYS}
    differ = [f"{k}: finished {done[k]!r}, asked {getattr(run_args, k, None)!r}"
              for k in BUDGET_KEYS if done[k] != getattr(run_args, k, None)]
    if differ:
        fail(f"{run_dir} was run with other settings ({'; '.join(differ)}); give the same flags to go on "
             f"with this study, or another --out for a new one")


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
            runs[name] = [json.loads(p.read_text()) for p in seeds]
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


def run(args: argparse.Namespace) -> None:
    if not (args.list or args.report_only):  # neither needs a device, the model or the data
        args = resolve(args)
    run_ablation(args)

"""The study's sweep: every configuration of mltp/cli/study.py at each seed, then the report.

    python run.py ablation --suite study --seeds 3 --out runs/ablation     # resumable
    python run.py ablation --list                                          # just print the configurations
    python run.py ablation --report-only --out results/cpu-study2          # rebuild report.md, .json, chart.svg

Seed-major: a sweep cut short still has every configuration's first seed. A finished run is
skipped and a killed one resumes, each only under the settings it was made with (every run
directory is checked before any work); `--time-limit` starts no run that would end past it.
The report compares the configurations with 95% intervals and a verdict per family (eval.report).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from eval.families import RegistrationError
from eval.interventions import intervention_runs
from eval.report import write_report

from . import flags
from .errors import fail
from .job import check_before_work, run_one
from .settings import resolve
from .study import study_comparisons, study_configs


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (the configurations set the pooling flags)")
    flags.add_model(g)
    flags.add_attention(g)
    flags.add_widths(g)
    flags.add_training(p)
    flags.add_evaluation(p)
    flags.add_device(p)
    flags.add_data(p)
    flags.add_out(p, "runs/ablation")
    s = p.add_argument_group("the sweep")
    s.add_argument("--seeds", type=int, help="seeds per configuration (default: 3 on GPU, 1 on CPU)")
    s.add_argument("--only", help="comma-separated configuration names to run (default: all)")
    s.add_argument("--list", action="store_true", help="print the configurations and exit")
    s.add_argument("--time-limit", type=float, metavar="MIN",
                   help="start no run that would end past MIN minutes (predicted from the slowest run so far; the "
                        "first always starts); finished runs are kept, so the next invocation goes on from there")
    s.add_argument("--report-only", action="store_true", help="run nothing: rebuild the report from the finished runs in --out")
    s.add_argument("--no-report", action="store_true",
                   help="run, but leave the report to a later --report-only (a rented GPU's minutes go to runs)")


def run(args: argparse.Namespace) -> None:
    if not (args.list or args.report_only):  # neither needs a device, the model or the data
        args = resolve(args)
    out = Path(args.out or "runs/ablation")
    configs = study_configs(args.attn)
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
        sweep(args, out, configs, selected)
        if args.no_report:
            return
    report(args, out, configs, None if args.report_only else time.perf_counter() - t0)


def run_args(args: argparse.Namespace, overrides: dict, seed: int) -> argparse.Namespace:
    """One run's flags: the sweep's, with the configuration's pooling flags (the rest at their defaults)."""
    defaults = dict(layers="all", no_layer_weights=False, layer_token=None, tokens=None, block=None,
                    layer_weight_std=1.0, layer_weight_lr_mult=1.0)  # unless a configuration names them
    return argparse.Namespace(**{**vars(args), **defaults, **overrides, "seed": seed})


def sweep(args: argparse.Namespace, out: Path, configs: dict, selected: list[str]) -> None:
    print(f"study: {len(selected)} configurations x {args.seeds} seed(s) -> {out}"
          + (f", time limit {args.time_limit:g} min" if args.time_limit else ""))
    plan = [(seed, name, out / name / f"seed-{seed}", resolve(run_args(args, configs[name], seed), log=lambda m: None))
            for seed in range(args.seeds) for name in selected]  # seed-major
    # Every run directory, finished or not, before any work: a killed configuration must not
    # resume under new flags any more than a finished one may be skipped under them.
    for _, _, run_dir, one in plan:
        check_before_work(run_dir, one)
    t0, slowest = time.perf_counter(), 0.0
    for seed, name, run_dir, one in plan:
        if (run_dir / "results.json").exists():
            print(f"[skip] {name} seed {seed}: finished earlier")
            continue
        elapsed = time.perf_counter() - t0
        if args.time_limit and slowest and elapsed + slowest > args.time_limit * 60:
            print(f"[stop] time limit: {elapsed / 60:.1f} of {args.time_limit:g} min used, the slowest run took "
                  f"{slowest / 60:.1f} min; run the same command again to go on from {name} seed {seed}")
            break
        started = time.perf_counter()
        run_one(one, run_dir)
        slowest = max(slowest, time.perf_counter() - started)


def report(args: argparse.Namespace, out: Path, configs: dict, sweep_seconds: float | None) -> None:
    runs = {}
    for name in configs:
        seeds = sorted((out / name).glob("seed-*/results.json"))
        if seeds:
            runs[name] = [json.loads(p.read_text()) for p in seeds]
    if not runs:
        fail(f"no finished runs in {out}: nothing to report")
    reference = "M3-mltp" if args.attn == "causal" else "M5-mltp-bi"
    comparisons = [c for c in study_comparisons(reference) if c[1] in runs and c[2] in runs]
    variants, intervened = intervention_runs(out, runs)
    runs.update(variants)
    comparisons += intervened
    try:  # an unreadable registration.json: the one report error a user can reach
        paths = write_report(
            runs, out, comparisons=comparisons,
            title=f"MLTP ablation study ({args.attn} ablations)",
            # Every command that produced a run in this directory (sessions may differ), in order seen.
            commands=list(dict.fromkeys(same_out(r["command"], out) for rs in runs.values() for r in rs if r.get("command"))),
            sweep_seconds=sweep_seconds,
        )
    except RegistrationError as e:
        fail(f"report not written: {e}")
    print(f"report: {paths['markdown']}")


def same_out(command: str, out: Path) -> str:
    """A run's command with an `--out` that named this folder by another path (a checkout elsewhere)
    spelt as this report names it, so the reproduce line runs from this checkout."""
    words = command.split(" ")
    for i, w in enumerate(words[:-1]):
        if w == "--out" and Path(words[i + 1]).name == out.name and Path(words[i + 1]) != out:
            words[i + 1] = str(out)
    return " ".join(words)

"""The study: its configurations, the comparisons its report makes, and the resumable sweep."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from eval.report import write_report

from mltp.train import setting_differences

from .identity import run_config, settings_of
from .intervene import donor_seed
from .job import check_run_dir, run_one
from .settings import ROOT, fail, resolve

# name -> overrides of the main job's flags. Ablations are run on the causal MLTP (M3), the
# paper's own reference point for MLTP; `--attn bidirectional` moves them to M5's setting.
def study_configs(attn: str) -> dict[str, dict]:
    # The W dose: an init std near the RMS of the per-block vectors W is added to (the middle
    # blocks of the default model), and a learning rate that moves it by a sizeable share of that
    # within a short run; each run records how far it moved (results.json: train.layer_table).
    dose = dict(layer_weight_std=8.0, layer_weight_lr_mult=300.0)
    middle = "middle1"  # the single-block controls read the middle block (15 of 30)
    return {
        "M1-eos": dict(pool="eos", attn="causal"),
        "M2-trainable": dict(pool="trainable", attn="causal"),
        "M3-mltp": dict(pool="mltp", attn="causal", layers="all"),
        "M4-trainable-bi": dict(pool="trainable", attn="bidirectional"),
        "M5-mltp-bi": dict(pool="mltp", attn="bidirectional", layers="all"),
        "A1-mltp-noW": dict(pool="mltp", attn=attn, layers="all", no_layer_weights=True),
        "A1-mltp-Wdose": dict(pool="mltp", attn=attn, layers="all", **dose),
        "A1-layer-mean": dict(pool="layer-mean", attn=attn, layers="all"),
        "A1-layer-mean-norm": dict(pool="layer-mean-norm", attn=attn, layers="all"),
        "A1-scalar-mix": dict(pool="scalar-mix", attn=attn, layers="all", layer_weight_lr_mult=dose["layer_weight_lr_mult"]),
        "A2-mltp-last4": dict(pool="mltp", attn=attn, layers="last4"),
        "A2-mltp-middle4": dict(pool="mltp", attn=attn, layers="middle4"),
        "A2-mltp-last4-noW": dict(pool="mltp", attn=attn, layers="last4", no_layer_weights=True),
        "A2-mltp-middle4-noW": dict(pool="mltp", attn=attn, layers="middle4", no_layer_weights=True),
        "A2-mltp-middle4-Wdose": dict(pool="mltp", attn=attn, layers="middle4", **dose),
        "A2-layer-mean-norm-middle4": dict(pool="layer-mean-norm", attn=attn, layers="middle4"),
        # M5 differs from M3 twice: bidirectional attention AND each block's masked mean instead of
        # its EOS token (the paper pairs them). This one, causal with the mean, tells the two apart.
        "A3-mltp-mean": dict(pool="mltp", attn="causal", layers="all", layer_token="mean"),
        # One middle block: does "middle 4 beat last 4" need 4 blocks and a head, or one block?
        "A4-mltp-middle1": dict(pool="mltp", attn=attn, layers=middle),
        "A4-trainable-middle1": dict(pool="trainable", attn=attn, block=15),
        "A4-eos-middle1": dict(pool="eos", attn=attn, block=15),
    }


def study_comparisons(reference: str) -> list[tuple[str, str, str]]:
    return [
        ("paper: MLTP vs EOS-last (causal)", "M3-mltp", "M1-eos"),
        ("paper: MLTP vs trainable, causal", "M3-mltp", "M2-trainable"),
        ("paper: MLTP vs trainable, bidirectional", "M5-mltp-bi", "M4-trainable-bi"),
        ("paper: MLTP bidirectional vs EOS-last", "M5-mltp-bi", "M1-eos"),
        ("paper: bidirectional vs causal MLTP", "M5-mltp-bi", "M3-mltp"),
        ("layer weights: on vs off, all blocks", reference, "A1-mltp-noW"),
        ("layer weights: dose vs off, all blocks", "A1-mltp-Wdose", "A1-mltp-noW"),
        ("layer weights: on vs off, middle 4", "A2-mltp-middle4", "A2-mltp-middle4-noW"),
        ("layer weights: dose vs off, middle 4", "A2-mltp-middle4-Wdose", "A2-mltp-middle4-noW"),
        ("layer weights: on vs off, last 4", "A2-mltp-last4", "A2-mltp-last4-noW"),
        ("blocks: all vs last 4", reference, "A2-mltp-last4"),
        ("blocks: all vs middle 4", reference, "A2-mltp-middle4"),
        ("blocks: middle 4 vs last 4", "A2-mltp-middle4", "A2-mltp-last4"),
        ("blocks: middle 4 vs the middle block (MLTP)", "A2-mltp-middle4", "A4-mltp-middle1"),
        ("middle block: MLTP vs EOS", "A4-mltp-middle1", "A4-eos-middle1"),
        ("MLTP over the middle 4 vs the middle block's EOS token", "A2-mltp-middle4", "A4-eos-middle1"),
        ("middle block: trainable vs EOS", "A4-trainable-middle1", "A4-eos-middle1"),
        ("middle block: EOS vs EOS-last", "A4-eos-middle1", "M1-eos"),
        ("head: MLTP vs normalised layer mean, all blocks", reference, "A1-layer-mean-norm"),
        ("head: MLTP vs normalised layer mean, middle 4", "A2-mltp-middle4", "A2-layer-mean-norm-middle4"),
        ("head: MLTP vs scalar mix, all blocks", reference, "A1-scalar-mix"),
        ("head: scalar mix vs normalised layer mean, all blocks", "A1-scalar-mix", "A1-layer-mean-norm"),
        ("head: MLTP vs plain (un-normalised) layer mean, all blocks", reference, "A1-layer-mean"),
        ("M5 apart, per-block token: mean vs EOS (causal)", "A3-mltp-mean", "M3-mltp"),
        ("M5 apart, attention: bidirectional vs causal (mean)", "M5-mltp-bi", "A3-mltp-mean"),
    ]


def check_same_budget(run_dir: Path, run_args: argparse.Namespace) -> None:
    # What must match between a finished run and the sweep that would skip it: every setting
    # (mltp.cli.identity), so a report never averages or compares runs made with different
    # models, budgets or evaluation sets. joint_forward and mini_batch count although they change
    # no model, loss or data: they draw other dropout masks, and configurations compared at one
    # seed share their dropout draws (common random numbers); a report mixing modes would lose that.
    done = json.loads((run_dir / "results.json").read_text())["config"]
    differ = setting_differences(settings_of(done), settings_of(run_config(run_args)), "finished")
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
        plan = []
        for seed, name in [(seed, name) for seed in range(args.seeds) for name in selected]:
            run_args = argparse.Namespace(**{**vars(args), **configs[name], "seed": seed})
            run_args.no_layer_weights = configs[name].get("no_layer_weights", False)
            run_args.layers = configs[name].get("layers", "all")
            # Unless a configuration names them, the tokens follow its attention (causal: EOS).
            run_args.layer_token = configs[name].get("layer_token")
            run_args.tokens = configs[name].get("tokens")
            run_args.block = configs[name].get("block")
            run_args.layer_weight_std = configs[name].get("layer_weight_std", 1.0)
            run_args.layer_weight_lr_mult = configs[name].get("layer_weight_lr_mult", 1.0)
            plan.append((seed, name, out / name / f"seed-{seed}", resolve(run_args, log=lambda m: None)))
        # Every run directory, finished or not, before any work: a killed configuration must not
        # resume under new flags any more than a finished one may be skipped under them.
        for seed, name, run_dir, run_args in plan:
            if (run_dir / "results.json").exists():
                check_same_budget(run_dir, run_args)
            else:
                check_run_dir(run_dir, run_args)
        slowest = 0.0
        for seed, name, run_dir, run_args in plan:
            if (run_dir / "results.json").exists():
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
    comparisons = [c for c in study_comparisons(reference) if c[1] in runs and c[2] in runs]
    variants, intervened = intervention_runs(out, runs)
    runs.update(variants)
    comparisons += intervened
    paths = write_report(
        runs, out, comparisons=comparisons,
        title=f"MLTP ablation study ({args.attn} ablations)",
        # Every command that produced a run in this directory (sessions may differ), in order seen.
        commands=list(dict.fromkeys(same_out(r["command"], out) for rs in runs.values() for r in rs if r.get("command"))),
        sweep_seconds=None if args.report_only else time.perf_counter() - t0,
    )
    print(f"report: {paths['markdown']}")


def same_out(command: str, out: Path) -> str:
    """A run's command with an `--out` that named this folder by another path (a checkout elsewhere)
    spelt as this report names it, so the reproduce line runs from this checkout."""
    words = command.split(" ")
    for i, w in enumerate(words[:-1]):
        if w == "--out" and Path(words[i + 1]).name == out.name and Path(words[i + 1]) != out:
            words[i + 1] = str(out)
    return " ".join(words)


INTERVENTIONS = {"zero": "W set to zero", "shuffled": "W's rows shuffled", "reset": "W reset to its initial value",
                 "other-seed": "W from another seed"}


def other_seed_key(found: dict, seed: int) -> str | None:
    """The variant holding another seed's W: `other-seed`, or in a file written before the donor
    rotated (one `seed-k` variant per other seed), the one the rotation picks (mltp.cli.intervene)."""
    if "other-seed" in found:
        return "other-seed"
    donor = donor_seed(seed, [int(v.split("-")[1]) for v in found if v.startswith("seed-")] + [seed])
    return None if donor is None else f"seed-{donor}"


def intervention_runs(out: Path, runs: dict[str, list[dict]]) -> tuple[dict[str, list[dict]], list[tuple[str, str, str]]]:
    """`run.py intervene`'s variants as pseudo-configurations, `<name> [<variant>]`, one record per
    seed in results.json's shape, and the comparisons of each trained run with them."""
    variants: dict[str, list[dict]] = {}
    for name, records in runs.items():
        for record in records:
            seed = record["config"]["seed"]
            path = out / name / f"seed-{seed}" / "interventions.json"
            if not path.exists():
                continue
            found = json.loads(path.read_text())["variants"]
            pick = {v: v for v in INTERVENTIONS if v in found} | {"other-seed": other_seed_key(found, seed)}
            for variant, key in pick.items():
                if key in found:
                    variants.setdefault(f"{name} [{variant}]", []).append(
                        {**record, "name": f"{record['name']} [{variant}]", "intervention": key,
                         "tasks": found[key]["tasks"], "family_averages": found[key]["family_averages"]})
    comparisons = [(f"intervention: {name} trained vs {label}", name, f"{name} [{variant}]")
                   for name in runs for variant, label in INTERVENTIONS.items() if f"{name} [{variant}]" in variants]
    return variants, comparisons


def run(args: argparse.Namespace) -> None:
    if not (args.list or args.report_only):  # neither needs a device, the model or the data
        args = resolve(args)
    run_ablation(args)

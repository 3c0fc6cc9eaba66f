"""Interventions on trained runs' layer tables: does the learned W matter to the model it trained?

For every finished MLTP run with W in a study directory, without retraining, the same embedder is
scored with its W replaced:
    zero       W = 0: the pooler sees the bare per-block vectors (what A1-noW sees, but with heads
               trained beside a W);
    shuffled   W's rows permuted (a fixed derangement): every block gets another block's row;
    reset      W back at the value the run's seed drew before training: what training taught W,
               taken away without the shock of a table the heads never saw (a zeroed dose of
               std 8 is far from anything the heads trained on);
    other-seed W of the same configuration's run at the next seed (the donor rotates: seed s takes
               the next seed that has weights, the last one the first), so no run donates twice.
Each variant is scored on the same items as the trained run, so the paired difference is W's
effect on that very model. The decoder runs once per text: every variant's pooler reads the same
hidden states (`FanOut`). Results: `<run>/interventions.json`, one record per variant in
results.json's shape, which the study's report compares with the run itself.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

import eval as evaluators
from eval.interventions import next_seed
from mltp.embedder import Embedder
from mltp.hygiene.atomic import atomic_write_json
from mltp.pooling import WEIGHTS_FILE, build_pooler

from .job import environment
from .settings import fail, resolve

FILE = "interventions.json"


class FanOut(nn.Module):
    """Several poolers over one forward: (B, K*D), pooler k's vectors in columns k*D .. (k+1)*D."""

    def __init__(self, poolers: list[nn.Module]):
        super().__init__()
        self.poolers = nn.ModuleList(poolers)
        self.needs_layers = tuple(sorted(set().union(*(p.needs_layers for p in poolers))))

    def forward(self, hidden_states, attention_mask):
        return torch.cat([p(hidden_states, attention_mask) for p in self.poolers], dim=-1)  # (B, K*D)


class Cached:
    """Encodes each (texts, instruction) once through the fan-out; `view(k)` serves pooler k."""

    def __init__(self, embedder: Embedder, width: int):
        self.embedder, self.width, self.cache = embedder, width, {}

    def encode_all(self, texts, instruction=None) -> torch.Tensor:
        key = (tuple(texts), instruction)
        if key not in self.cache:
            self.cache[key] = self.embedder.encode(list(texts), instruction)  # (N, K*D)
        return self.cache[key]

    def view(self, k: int) -> "View":
        return View(self, k)


class View:
    """Pooler k of a `Cached` fan-out, as an encoder the evaluators accept."""

    def __init__(self, cached: Cached, k: int):
        self.cached, self.k = cached, k

    def encode(self, texts, instruction=None):
        w = self.cached.width
        return self.cached.encode_all(texts, instruction)[:, self.k * w:(self.k + 1) * w]  # (N, D)


def derangement(n: int, seed: int) -> list[int]:
    # A permutation that moves every row (n >= 2), drawn from the seed: a shuffle that keeps some
    # rows in place would understate what moving the rows does.
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(n)
        if n < 2 or (order != np.arange(n)).all():
            return order.tolist()


def initial_table(run_dir: Path, pooler: nn.Module, record: dict) -> torch.Tensor:
    """W as the run's seed drew it: the pooler rebuilt under that seed, as the job builds it (the
    decoder is built on the meta device first and draws nothing), checked against the norm that
    training recorded at its start (results.json train.layer_table.norm_start)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(record["config"]["seed"])
        W = build_pooler(pooler.config).layer_weights.detach()  # (S, D)
    recorded = ((record.get("train") or {}).get("layer_table") or {}).get("norm_start")
    drawn = float(W.double().norm())
    # fp32 draws, summed in fp64 both times: agreement to 1e-6 relative or a different draw.
    if recorded is None or not math.isclose(drawn, recorded, rel_tol=1e-6):
        raise ValueError(f"{run_dir}: the seed's initial W has norm {drawn:.6f}, training recorded "
                         f"{recorded}: the pooler is not rebuilt as it was trained")
    return W


def variants_of(run_dir: Path, pooler: nn.Module, record: dict, siblings: dict[int, Path]) -> tuple[dict, int | None]:
    """name -> the W to put in (None: the run's own), and the donor seed of `other-seed`.
    `siblings`: seed -> the same configuration's run."""
    from safetensors.torch import load_file

    W = load_file(str(run_dir / "final" / WEIGHTS_FILE))["layer_weights"]  # (S, D)
    out = {"trained": None, "zero": torch.zeros_like(W), "shuffled": W[derangement(len(W), 0)],
           "reset": initial_table(run_dir, pooler, record)}
    with_weights = [s for s, d in siblings.items() if (d / "final" / WEIGHTS_FILE).exists()]
    donor = next_seed(record["config"]["seed"], with_weights)
    if donor is not None:
        out["other-seed"] = load_file(str(siblings[donor] / "final" / WEIGHTS_FILE))["layer_weights"]
    return out, donor


def intervene(run_dir: Path, siblings: dict[int, Path], *, device: str, data_dir: str, log=print) -> dict:
    record = json.loads((run_dir / "results.json").read_text())
    embedder = Embedder.load(run_dir / "final", device=device, dtype=getattr(torch, record["config"]["dtype"]))
    tables, donor = variants_of(run_dir, embedder.pooler, record, siblings)
    poolers = []
    for name, W in tables.items():
        pooler = copy.deepcopy(embedder.pooler)
        if W is not None:
            with torch.no_grad():
                pooler.layer_weights.copy_(W)
        poolers.append(pooler)
    fan = Embedder(embedder.model, embedder.tokenizer, FanOut(poolers), embedder.config).eval()
    cached = Cached(fan, embedder.model.config.hidden_size)
    suite, tasks = record["config"]["suite"], record["config"].get("tasks")
    out = {"run": str(run_dir), "donor_seed": donor, "variants": {}, "environment": environment(device)}
    for k, name in enumerate(tables):
        results = evaluators.evaluate(cached.view(k), tasks=tasks.split(",") if tasks else suite, data_dir=data_dir,
                                      log=lambda m: None, suite=suite)
        out["variants"][name] = {"family_averages": evaluators.family_averages(results), "tasks": results}
        log(f"{run_dir} [{name}] " + "  ".join(f"{f} {v:.4f}" for f, v in out["variants"][name]["family_averages"].items()))
    # The trained variant re-scores the run itself: it must reproduce results.json, or the
    # comparison would measure the evaluation, not W.
    for task, r in out["variants"]["trained"]["tasks"].items():
        if abs(r["main_score"] - record["tasks"][task]["main_score"]) > 1e-4:
            raise RuntimeError(f"{run_dir}: re-scoring the trained run gives {task} {r['main_score']:.6f}, "
                               f"results.json has {record['tasks'][task]['main_score']:.6f}")
    atomic_write_json(run_dir / FILE, out)
    return out


def finished_runs(out: Path, configs: list[str]) -> dict[str, dict[int, Path]]:
    """{configuration: {seed: run directory}} of the finished runs (seed-N/results.json) under out."""
    return {name: {int(p.parent.name.split("-")[1]): p.parent for p in sorted((out / name).glob("seed-*/results.json"))}
            for name in configs}


def has_w(run_dir: Path) -> bool:
    cfg = json.loads((run_dir / "results.json").read_text())["config"]
    return cfg.get("pool") == "mltp" and not cfg.get("no_layer_weights")


def check_found(out: Path, found: dict[str, dict[int, Path]], only: bool, log=print) -> None:
    """Say what is there, before any slow step; an error when there is nothing to intervene on."""
    missing = [name for name, runs in found.items() if not runs]
    if only and missing:
        fail(f"--only {','.join(missing)}: no finished run (seed-N/results.json) under {out} for "
             f"{'it' if len(missing) == 1 else 'them'}")
    with_w = {name: runs for name, runs in found.items() if runs and has_w(next(iter(runs.values())))}
    n_runs = sum(len(runs) for runs in found.values())
    if not n_runs:
        fail(f"--out {out}: no finished run of the study's configurations (CONFIG/seed-N/results.json) there")
    if not with_w:
        fail(f"--out {out}: {n_runs} finished run(s), none with a layer table W (--pool mltp with layer weights) "
             "to intervene on")
    log(f"found {n_runs} finished run(s) in {sum(1 for r in found.values() if r)} configuration(s) under {out}; "
        f"with W: {', '.join(f'{name} ({len(runs)} seed(s))' for name, runs in with_w.items())}")


def run_interventions(out: Path, configs: list[str], *, device: str, data_dir: str, log=print) -> None:
    found = finished_runs(out, configs)
    for name, runs in found.items():
        for seed, run_dir in runs.items():
            if not has_w(run_dir):
                break  # no W to intervene on: the whole configuration
            if (run_dir / FILE).exists():
                log(f"[skip] {name} seed {seed}: interventions done")
                continue
            if not (run_dir / "final" / WEIGHTS_FILE).exists():
                log(f"[skip] {name} seed {seed}: its trained weights (final/) are not here")
                continue
            intervene(run_dir, runs, device=device, data_dir=data_dir, log=log)


def run(args: argparse.Namespace) -> None:
    from .study import study_configs

    out = Path(args.out or "runs/ablation")
    if not out.is_dir():
        fail(f"--out {out}: no study directory there")
    configs = args.only.split(",") if args.only else list(study_configs(args.attn))
    check_found(out, finished_runs(out, configs), bool(args.only))
    args = resolve(args)
    run_interventions(out, configs, device=args.device, data_dir=args.data_dir)

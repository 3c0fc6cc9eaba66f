"""Probes: the zero-shot quality of every single block, and where a trained MLTP pooler attends.

    python run.py probe --every 3 --out runs/probe-causal       # each block's EOS token and mean, zero-shot
    python run.py probe --pooler runs/<run>/final                # where its latents attend, per block and family

The block probe encodes every text once and scores each probed block's EOS vector and masked mean
(`probe.json`, `probe.svg`); the pooler probe re-scores a saved MLTP embedder while its pooler
records the share of attention each block gets (`pooler_attention.json`, `.svg`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import eval as evaluators
from eval.report import probe_chart
from mltp.hygiene.atomic import atomic_write_json, atomic_write_text
from mltp.formats.checkpoint import load_model
from mltp.embedder import EMBEDDER_FILE, Embedder, EmbedderConfig
from mltp.pooling import CONFIG_FILE as POOLER_CONFIG_FILE, last_token, masked_mean
from mltp.tokenizer import load_tokenizer

from . import flags
from .errors import fail
from .job import Tee, environment
from .settings import resolve


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    flags.add_model(g)
    flags.add_attention(g)
    flags.add_evaluation(p)
    flags.add_device(p, compile=False)
    flags.add_data(p)
    flags.add_out(p, "runs/probe-<attn>, or beside the --pooler folder")
    p.add_argument("--every", type=int, default=1, help="probe every k-th block")
    p.add_argument("--pooler", metavar="DIR", help="instead: where a trained MLTP pooler (a saved embedder, e.g. RUN/final) "
                                                  "attends, per block and family, over the evaluation texts")


class BlockVectors(nn.Module):
    """The per-block probe's pooler: each probed block's EOS vector and its mean vector, unit norm.

    Not one of the study's poolers (its output is (B, 2*S*D), not one (B, D) vector): it exists so
    that `Embedder.encode` batches the probe, and one forward serves every block and both readings.
    """

    def __init__(self, layers: list[int]):
        super().__init__()
        self.needs_layers = tuple(layers)

    def forward(self, hidden_states, attention_mask):
        mask = attention_mask.bool()
        vectors = [F.normalize(reduce(hidden_states[i].float(), mask), dim=-1)  # (B, D) each
                   for reduce in (last_token, masked_mean) for i in self.needs_layers]
        return torch.cat(vectors, dim=-1)  # (B, 2*S*D): every block's EOS vector, then every mean


class LayerCache:
    """Encodes each text set once through an Embedder with `BlockVectors`; `view` serves one block."""

    def __init__(self, embedder: Embedder):
        self.embedder, self.cache = embedder, {}
        self.layers = list(embedder.pooler.needs_layers)

    def vectors(self, texts, instruction) -> torch.Tensor:
        key = (tuple(texts), instruction)
        if key not in self.cache:
            flat = self.embedder.encode(list(texts), instruction)  # (N, 2*S*D)
            # (N, eos|mean, S, D), in fp16: the cache holds every block of every text set at once
            self.cache[key] = flat.view(len(texts), 2, len(self.layers), -1).half()
        return self.cache[key]

    def view(self, mode: int, layer: int) -> "BlockEncoder":
        return BlockEncoder(self, mode, self.layers.index(layer))


class BlockEncoder:
    """The evaluators' encoder for one block's EOS (mode 0) or mean (mode 1) vectors."""

    def __init__(self, cache: LayerCache, mode: int, index: int):
        self.cache, self.mode, self.index = cache, mode, index

    def encode(self, texts, instruction=None) -> torch.Tensor:
        return self.cache.vectors(texts, instruction)[:, self.mode, self.index].float()  # (N, D)


def run_probe(args: argparse.Namespace) -> None:
    out = Path(args.out or Path("runs") / f"probe-{args.attn}")
    log = Tee(out / "log.txt")
    model = load_model(args.model_dir, dtype=getattr(torch, args.dtype), device=args.device)
    L = model.config.num_hidden_layers
    layers = sorted(set(range(args.every, L + 1, args.every)) | {L})
    pooler = BlockVectors(layers)
    embedder = Embedder(model, load_tokenizer(args.model_dir), pooler, EmbedderConfig(model=args.model, causal=args.attn == "causal"))
    cache = LayerCache(embedder)
    tasks = args.tasks.split(",") if args.tasks else args.suite
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


def run(args: argparse.Namespace) -> None:
    args = resolve(args)
    if args.pooler:
        run_pooler_probe(args)
    else:
        run_probe(args)

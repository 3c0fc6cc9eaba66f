"""What one rank holds before any activation, under DDP and under FSDP2, counted from the shapes.

    .venv/bin/python bench/ddp_memory.py --shape mistral-7b --ranks 8 --out bench/results/ddp-memory-mistral-7b

The decoder is built on the meta device (no memory), LoRA applied as run.py applies it, and every
tensor's bytes are counted from its shape and dtype: the frozen base in bf16; the adapter and the
MLTP pooler in fp32 with a gradient and AdamW's two moments each. DDP (mltp.distributed) keeps all
of it on every rank; FSDP2 (`fully_shard` over each decoder block) would keep 1/R of every block's
parameters, gradients and optimizer state per rank, and gather one block's weights at a time.
Activations come on top: with GradCache those of one mini-batch (bench/gradcache_memory.py).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_script", ROOT / "bench" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

from mltp.config import from_hf_config  # noqa: E402
from mltp.lora import apply_lora, lora_parameters  # noqa: E402
from mltp.model import Decoder  # noqa: E402
from mltp.pooling import PoolerConfig, build_pooler  # noqa: E402

GiB = 2**30


def counts(shape: str) -> dict:
    cfg = from_hf_config(bench.SHAPES[shape], source="bench shape")
    with torch.device("meta"):
        model = Decoder(cfg)
        apply_lora(model, bench.LORA)
        pooler = build_pooler(PoolerConfig(kind="mltp", hidden_size=cfg.hidden_size, num_layers=cfg.num_hidden_layers,
                                           layers="all", layer_token="eos"))
    adapter = sum(p.numel() for p in lora_parameters(model))
    base = sum(p.numel() for p in model.parameters()) - adapter
    in_blocks = sum(p.numel() for p in model.layers.parameters()) - adapter
    head = sum(p.numel() for p in pooler.parameters())
    return {"shape": shape, "base": base, "base_in_blocks": in_blocks, "adapter": adapter, "pooler": head,
            "largest_block": max(sum(p.numel() for p in b.parameters()) for b in model.layers)}


def per_rank(c: dict, ranks: int) -> list[dict]:
    trained = c["adapter"] + c["pooler"]
    # bf16 base: 2 bytes a weight; fp32 trained: weight + gradient + AdamW exp_avg + exp_avg_sq = 16.
    ddp = {"plan": "DDP", "base": 2 * c["base"], "trained": 16 * trained}
    outside = c["base"] - c["base_in_blocks"]  # embeddings, final norm: left whole (not sharded)
    fsdp = {"plan": f"FSDP2 over blocks, {ranks} ranks",
            "base": 2 * (outside + c["base_in_blocks"] / ranks + c["largest_block"]),  # + one gathered block
            "trained": 16 * (c["adapter"] / ranks + c["pooler"])}
    for row in (ddp, fsdp):
        row["total"] = row["base"] + row["trained"]
    return [ddp, fsdp]


def table(c: dict, rows: list[dict], command: str) -> str:
    lines = [f"# Memory per rank before activations: {c['shape']} (counted from shapes on the meta device)", "",
             f"Base {c['base'] / 1e9:.2f}B parameters (bf16), LoRA r=16 {c['adapter'] / 1e6:.1f}M, MLTP pooler "
             f"{c['pooler'] / 1e6:.1f}M (fp32, + gradient + AdamW state). Command: `{command}`", "",
             "| plan | base weights GiB | trained state GiB | total GiB |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['plan']} | {r['base'] / GiB:.2f} | {r['trained'] / GiB:.2f} | {r['total'] / GiB:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="mistral-7b", help=f"one of {', '.join(bench.SHAPES)}")
    p.add_argument("--ranks", type=int, default=8)
    p.add_argument("--out", help="STEM: writes STEM.json and STEM.md")
    args = p.parse_args(argv)
    c = counts(args.shape)
    rows = per_rank(c, args.ranks)
    command = "python bench/ddp_memory.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(table(c, rows, command))
    if args.out:
        bench.atomic_write_stem(args.out, {"counts": c, "rows": rows}, table(c, rows, command))
    return rows


if __name__ == "__main__":
    main()

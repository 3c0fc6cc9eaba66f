"""Training-step memory with and without GradCache, at two batch sizes (mltp.gradcache).

    .venv/bin/python bench/gradcache_memory.py --shape smollm2-135m --batches 8,32 --mini-batch 4 \
        --out bench/results/gradcache-memory-cpu-smollm2-135m

One InfoNCE step (queries + positives, LoRA r=16 with dropout 0.1, the MLTP pooler over every
block, backward) on bench.py's random weights and left-padded batches, two ways: the plain step
(every forward's graph alive until the backward) and GradCache (`cached_backward`: mini-batches of
`--mini-batch` texts). Memory is bench.py's `LiveBytes`: the peak of live tensor storage created
during the step, over the weights (which both ways hold alike). Both ways must give one loss.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_script", ROOT / "bench" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

from mltp.gradcache import cached_backward, plain_backward  # noqa: E402
from mltp.lora import apply_lora  # noqa: E402
from mltp.loss import info_nce  # noqa: E402


def step_memory(model, pooler, batch: int, seq: int, mini_batch: int | None, seed: int) -> tuple[int, float, float]:
    """(peak bytes, loss, seconds) of one step on `batch` queries and `batch` positives."""
    g = torch.Generator().manual_seed(seed)
    q_ids, q_mask = bench.make_batch(batch, seq, model.config.vocab_size, g, "cpu")  # (B, T')
    p_ids, p_mask = bench.make_batch(batch, seq, model.config.vocab_size, g, "cpu")
    needs = pooler.needs_layers
    size = mini_batch or batch

    def chunk(ids, mask):  # one forward: decoder states the pooler reads -> (n, D)
        return lambda: pooler(model(ids, mask, causal=True, keep=needs), mask)

    chunks = [chunk(ids[i:i + size], mask[i:i + size]) for ids, mask in ((q_ids, q_mask), (p_ids, p_mask))
              for i in range(0, batch, size)]

    def loss_fn(outputs):
        q, p = torch.cat(outputs).split(batch)  # (2B, D) -> (B, D), (B, D)
        return info_nce(q, p)

    result = {}

    def run():
        torch.manual_seed(seed)
        model.zero_grad(set_to_none=True)
        pooler.zero_grad(set_to_none=True)
        result["loss"] = (cached_backward(chunks, loss_fn, torch.device("cpu")) if mini_batch
                          else plain_backward(chunks, loss_fn)).item()

    t0 = time.perf_counter()
    peak = bench.peak_memory(run, 0, "cpu")
    return peak, result["loss"], time.perf_counter() - t0


def table(rows: list[dict], meta: dict) -> str:
    lines = [f"# GradCache: training-step memory against batch size ({meta['shape']}, CPU, fp32, torch {meta['torch']})", "",
             f"Queries + positives of up to {meta['seq']} tokens, LoRA r=16, MLTP pooler over all blocks; memory = peak of "
             f"live tensor storage during one step (`LiveBytes`), over the weights. Command: `{meta['command']}`", "",
             "| batch | step | peak MiB | loss | seconds |", "|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['step']} | {r['peak_bytes'] / 2**20:,.1f} | {r['loss']:.6f} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="smollm2-135m", help=f"one of {', '.join(bench.SHAPES)}")
    p.add_argument("--batches", default="8,32", help="comma list of batch sizes (queries per step)")
    p.add_argument("--mini-batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--threads", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="STEM: writes STEM.json and STEM.md")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _, cfg = bench.build_pair(bench.SHAPES[args.shape], "none", "cpu", torch.float32, args.seed)
    apply_lora(model, bench.LORA)
    model.train()
    pooler = bench.make_pooler(cfg, "cpu").train()
    rows = []
    for batch in map(int, args.batches.split(",")):
        for name, mini in (("plain", None), (f"GradCache, mini-batch {args.mini_batch}", args.mini_batch)):
            peak, loss, seconds = step_memory(model, pooler, batch, args.seq, mini, args.seed)
            rows.append({"batch": batch, "step": name, "mini_batch": mini, "peak_bytes": peak, "loss": loss, "seconds": seconds})
            bench.progress(f"batch {batch} {name}: {peak / 2**20:,.1f} MiB, loss {loss:.6f}, {seconds:.1f} s")
        plain, cached = rows[-2:]
        if abs(plain["loss"] - cached["loss"]) > 1e-4 * abs(plain["loss"]):
            raise SystemExit(f"batch {batch}: GradCache loss {cached['loss']} differs from the plain step's {plain['loss']}")
    meta = {"shape": args.shape, "seq": args.seq, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "command": "python bench/gradcache_memory.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    print(table(rows, meta))
    if args.out:
        bench.atomic_write_stem(args.out, {"meta": meta, "rows": rows}, table(rows, meta))
    return rows


if __name__ == "__main__":
    main()

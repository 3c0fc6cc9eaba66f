"""Where an encode call's memory peaks: the decoder alone, and decoder + MLTP pooler, mltp vs transformers.

    .venv/bin/python bench/encode_peak.py --shapes smollm2-135m,qwen2-0.5b --batch 8 --seq 256

bench.py's encode memory is decoder + pooler, and both sides feed the same pooler object. This splits
it, on the CPU, with bench.py's `LiveBytes` (live tensor storage created during the call, weights
excluded), and names the operator at which each peak is reached. Same random weights and batch as
bench.py (`build_pair`, `make_batch`, seed 0).
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


class PeakAt(bench.LiveBytes):
    """LiveBytes that also remembers the operator (and its output shapes) that set the peak."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        before = self.peak
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if self.peak > before:
            shapes = [tuple(t.shape) for t in bench.tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            self.at = f"{func.overloadpacket.__name__} -> {', '.join(map(str, shapes))}"
        return out


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="smollm2-135m", help=f"comma list of {', '.join(bench.SHAPES)}")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16")
    p.add_argument("--baseline", choices=("transformers", "none"), default="transformers")
    p.add_argument("--layers", default="all",
                   help="the MLTP pooler's blocks (all, last4, middle4, a list); mltp runs only up to the last of them and "
                        "keeps only their states, as mltp.embedder.Embedder does; transformers returns every state")
    args = p.parse_args(argv)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    rows = []
    for shape in args.shapes.split(","):
        model, hf, cfg = bench.build_pair(bench.SHAPES[shape], args.baseline, "cpu", dtype, 0)
        g = torch.Generator().manual_seed(0)
        ids, mask = bench.make_batch(args.batch, args.seq, cfg.vocab_size, g, "cpu")
        pooler = bench.make_pooler(cfg, "cpu", args.layers)
        needs = pooler.needs_layers
        top = max(needs) if max(needs) < cfg.num_hidden_layers else None

        def mltp_states(m, ids, mask):  # what Embedder.forward asks of the decoder
            if bench.packed.packs_padding(m, ids.device):
                return bench.packed.forward(m, ids, mask, causal=True, upto=top, keep=needs)
            return m(ids, mask, causal=True, upto=top, keep=needs)

        sides = {"mltp": (model, mltp_states)} | ({"transformers": (hf, bench.hf_states)} if hf is not None else {})
        for side, (m, forward) in sides.items():
            for with_pooler in (False, True):
                with torch.no_grad(), PeakAt() as live:
                    states = forward(m, ids, mask)
                    if with_pooler:
                        pooler(states, mask)
                    del states
                rows.append({"shape": shape, "layers": args.layers, "side": side,
                             "call": "decoder + pooler" if with_pooler else "decoder",
                             "peak_bytes": live.peak, "at": live.at})
    print(f"# Encode memory peak above the weights (CPU, live tensor storage, {args.dtype}, "
          f"batch {args.batch} x T <= {args.seq}, MLTP over blocks {args.layers}, torch {torch.__version__})\n")
    print("| shape | side | call | peak | reached at |\n|---|---|---|---:|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['side']} | {r['call']} | {r['peak_bytes'] / 2**20:.1f} MiB | `{r['at']}` |")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

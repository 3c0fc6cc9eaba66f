"""Does expanding K/V for a padded GQA batch pay on CUDA? (the branch in mltp/model.py Attention)

    python bench/sdpa_gqa.py --out bench/results/sdpa-gqa-h100

A padded batch needs a mask; SDPA's flash kernel takes no mask, and (in the torch versions we
read) the memory-efficient kernel takes no `enable_gqa`, so masked GQA may fall to the math kernel.
transformers expands K/V to H heads when a mask is present. This times, at each benchmark shape's
attention (B texts x T tokens, H query heads, K KV heads), forward + backward of:
- `gqa+mask`: what SDPA gets without the expansion (what mltp runs; bench/README.md says why),
- `expand+mask`: K/V repeated to H heads, then SDPA with the mask,
- `gqa, causal, no mask`: the flash path an unpadded batch would get, for scale.
Outputs are compared (the expansion must not change the math) before timing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mltp.hygiene.atomic import atomic_write_stem  # noqa: E402

# (H query heads, K KV heads, head dim) of the three benchmark shapes.
SHAPES = {"smollm2-135m": (9, 3, 64), "qwen2-0.5b": (14, 2, 64), "mistral-7b": (32, 8, 128)}


def padded_mask(B: int, T: int, g: torch.Generator, device) -> torch.Tensor:
    # (B, 1, T, T) bool, left padding, causal among real tokens; pad rows attend to themselves
    # (as mltp.model builds it) so no row is all -inf.
    lengths = torch.randint(T // 4, T + 1, (B,), generator=g).to(device)
    real = torch.arange(T, device=device)[None, :] >= (T - lengths)[:, None]  # (B, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    mask = causal[None] & real[:, None, :]
    mask |= torch.eye(T, dtype=torch.bool, device=device)[None]
    return mask[:, None]


def variants(q, k, v, mask, groups):
    return {
        "gqa+mask": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True),
        "expand+mask": lambda: F.scaled_dot_product_attention(
            q, k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1), attn_mask=mask),
        "gqa, causal, no mask": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
    }


def time_ms(fn, q, k, v, reps: int) -> float:
    def step():
        out = fn()
        out.backward(torch.ones_like(out))
        q.grad = k.grad = v.grad = None

    for _ in range(3):
        step()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", help="path stem: writes STEM.json and STEM.md")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("needs CUDA: the question is which CUDA kernel SDPA picks")
    device, dtype = torch.device("cuda"), torch.bfloat16
    g = torch.Generator().manual_seed(0)
    rows = []
    for name, (H, K, Dh) in SHAPES.items():
        B, T = args.batch, args.seq
        q = torch.randn(B, H, T, Dh, device=device, dtype=dtype, requires_grad=True)
        k = torch.randn(B, K, T, Dh, device=device, dtype=dtype, requires_grad=True)
        v = torch.randn(B, K, T, Dh, device=device, dtype=dtype, requires_grad=True)
        mask = padded_mask(B, T, g, device)
        fns = variants(q, k, v, mask, H // K)
        with torch.no_grad():
            a, b = fns["gqa+mask"]().float(), fns["expand+mask"]().float()
            error = float((a - b).norm() / b.norm())
        if not error < 1e-2:
            raise AssertionError(f"{name}: expansion changed the output (relative error {error:.3g})")
        row = {"shape": name, "B": B, "T": T, "H": H, "K": K, "Dh": Dh, "rel_error": error,
               "ms": {v_name: time_ms(fn, q, k, v, args.reps) for v_name, fn in fns.items()}}
        rows.append(row)
    lines = [f"# SDPA, padded GQA batch: fwd+bwd median ms ({torch.cuda.get_device_name()}, torch {torch.__version__}, bf16)", "",
             "| shape | B x T | H/K | gqa+mask | expand+mask (mltp) | gqa, causal, no mask | expand speed-up |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        ms = r["ms"]
        lines.append(f"| {r['shape']} | {r['B']} x {r['T']} | {r['H']}/{r['K']} | {ms['gqa+mask']:.3f} | "
                     f"{ms['expand+mask']:.3f} | {ms['gqa, causal, no mask']:.3f} | {ms['gqa+mask'] / ms['expand+mask']:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    result = {"rows": rows, "table": text, "command": "python bench/sdpa_gqa.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    if args.out:
        atomic_write_stem(args.out, result, text)
    return result


if __name__ == "__main__":
    main()

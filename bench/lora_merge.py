"""Encoding through a trained LoRA adapter: kept separate vs merged into the base weights.

    .venv/bin/python bench/lora_merge.py --device cpu --threads 1 --out bench/results/lora-merge-cpu
    python bench/lora_merge.py --device cuda --out bench/results/lora-merge-h100

run.py evaluates a trained embedder with its adapter merged (`mltp.lora.merge_lora`; so does
`Embedder.load`). This measures what that buys, in one process on the same texts: two copies of the
same embedder (the model, LoRA r=16 with a random non-zero B, an MLTP pooler), one merged; then
- the largest difference between their vectors (merging must not change them),
- the aten operators each dispatches for one batch (bench.py's `OpCounter`),
- the median seconds to encode the texts, the two copies alternating, order flipped every
  repetition, so both see the same background load.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mltp.hygiene.atomic import atomic_write_stem  # noqa: E402
from mltp.formats.checkpoint import load_model, resolve_model  # noqa: E402
from mltp.embedder import Embedder, EmbedderConfig  # noqa: E402
from mltp.lora import LoRAConfig, apply_lora, lora_layers, merge_lora  # noqa: E402
from mltp.pooling import PoolerConfig, build_pooler  # noqa: E402
from mltp.tokenizer import load_tokenizer  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_script", ROOT / "bench" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)  # its operator count and timer, shared by every benchmark


def texts(n: int) -> list[str]:
    # Mixed lengths (6 to ~50 words), fixed: the batches pad as evaluation batches do.
    return [f"Text {i} is about " + " ".join(["rivers", "proteins", "markets", "songs"][i % 4] for _ in range(4 + i * 7 % 45))
            for i in range(n)]


def build(model_dir: str, device: str) -> Embedder:
    torch.manual_seed(0)
    model = load_model(model_dir, device=device)
    apply_lora(model, LoRAConfig())
    for layer in lora_layers(model).values():
        torch.nn.init.normal_(layer.lora_B, std=0.01)  # a trained adapter is not the B = 0 no-op
    cfg = model.config
    pooler = build_pooler(PoolerConfig(kind="mltp", hidden_size=cfg.hidden_size, num_layers=cfg.num_hidden_layers,
                                       layer_token="eos")).to(device)
    return Embedder(model, load_tokenizer(model_dir), pooler, EmbedderConfig(model=model_dir)).eval()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="checkpoint directory or built-in name")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--texts", type=int, default=64)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    p.add_argument("--out", help="path stem: writes STEM.json and STEM.md")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = str(resolve_model(args.model))
    separate = build(model_dir, args.device)
    merged = copy.deepcopy(separate)
    merge_lora(merged.model)
    sides = {"separate": separate, "merged": merged}
    batch = texts(args.texts)

    vectors = {name: e.encode(batch) for name, e in sides.items()}  # also the warm-up
    max_diff = float((vectors["separate"] - vectors["merged"]).abs().max())
    ids, mask = separate.batch(separate.tokenize(batch[:8]))
    with torch.no_grad():
        ops = bench.count_ops({name: (lambda e=e: e(ids, mask)) for name, e in sides.items()})
    # bench.py's timer: sides alternate, order flipped every repetition, median per side.
    median = bench.time_interleaved({name: (lambda e=e: e.encode(batch)) for name, e in sides.items()},
                                    warmup=0, steps=args.reps, device=torch.device(args.device))

    machine = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} thread(s)"
    lines = [f"# Encoding through a LoRA adapter, separate vs merged ({Path(model_dir).name}, {machine}, torch {torch.__version__})", "",
             f"{args.texts} texts, median of {args.reps} alternating repetitions; operators for one batch of 8 texts.", "",
             "| adapter | seconds | texts/s | ops (computing) | speed-up |", "|---|---:|---:|---:|---:|"]
    for name in sides:
        lines.append(f"| {name} | {median[name]:.3f} | {args.texts / median[name]:.1f} | {ops[name]['ops']:,} ({ops[name]['computing']:,}) | "
                     f"{median['separate'] / median[name]:.2f}x |")
    lines.append("")
    lines.append(f"Largest difference between the two sides' unit vectors: {max_diff:.2g}.")
    text = "\n".join(lines) + "\n"
    print(text)
    result = {"model": model_dir, "device": args.device, "machine": machine, "texts": args.texts, "reps": args.reps,
              "median_seconds": median, "speedup": median["separate"] / median["merged"], "ops": ops,
              "max_abs_diff": max_diff, "table": text,
              "command": "python bench/lora_merge.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    if args.out:
        atomic_write_stem(args.out, result, text)
    return result


if __name__ == "__main__":
    main()

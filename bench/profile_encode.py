"""Where an evaluation encode spends its time: torch.profiler over a task's texts, top operators.

    .venv/bin/python bench/profile_encode.py --task SciFact --layers middle4 --threads 1 \
        --out bench/results/cpu-profile-encode-scifact.md

The default model with an untrained MLTP pooler (training changes no operator or shape), the
task's texts of the chosen suite, every `--every`-th of them from longest to shortest, through
`Embedder.encode`: the evaluators' own path.
"""
from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import mltp
from eval.tasks import build_task
from mltp.embedder import Embedder, EmbedderConfig
from mltp.pooling import PoolerConfig, build_pooler


def task_texts(name: str, data_dir: str | None, suite: str) -> list[str]:
    data = build_task(name, data_dir, suite)
    return sorted({t for _, texts in data.texts() for t in texts}, key=lambda t: (-len(t), t))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="SciFact")
    p.add_argument("--suite", default="study")
    p.add_argument("--data-dir")
    p.add_argument("--layers", default="middle4", help="the MLTP pooler's blocks (the decoder stops at its last)")
    p.add_argument("--every", type=int, default=8, help="profile every k-th text")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=int, default=12, help="operators in the table")
    p.add_argument("--out", help="write the table to this markdown file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    model = mltp.load_model("smollm2-135m")
    cfg = model.config
    pooler = build_pooler(PoolerConfig(kind="mltp", hidden_size=cfg.hidden_size, num_layers=cfg.num_hidden_layers,
                                       layers=args.layers, layer_token="eos", num_latents=128))
    embedder = Embedder(model, mltp.load_tokenizer("smollm2-135m"), pooler, EmbedderConfig(model="smollm2-135m")).eval()
    texts = task_texts(args.task, args.data_dir, args.suite)[::args.every]
    lengths = [len(r) for r in embedder.tokenize(texts)]
    embedder.encode(texts[:2])  # warm-up
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        embedder.encode(texts)
    seconds = time.perf_counter() - start
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops)
    lines = [
        f"# Encode profile: {args.task} ({args.suite} suite), MLTP over {args.layers} ({datetime.now(timezone.utc).isoformat(timespec='seconds')})",
        "",
        f"- {len(texts)} texts (every {args.every}th, longest first), {sum(lengths)} tokens, longest {max(lengths)}, "
        f"mean {sum(lengths) / len(lengths):.0f}; {seconds:.1f} s under the profiler, {sum(lengths) / seconds:.0f} tokens/s",
        f"- torch {torch.__version__}, {args.threads} thread(s), load average before: {' '.join(load)}",
        f"- command: `python bench/profile_encode.py {' '.join(f'--{k.replace(chr(95), chr(45))} {v}' for k, v in vars(args).items() if v is not None)}`",
        "",
        "| operator | self CPU s | share | calls |",
        "|---|---:|---:|---:|",
    ]
    for e in ops[:args.rows]:
        lines.append(f"| {e.key} | {e.self_cpu_time_total / 1e6:.2f} | {e.self_cpu_time_total / total:.1%} | {e.count} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

"""Embed a file of texts with a saved embedder: one row of a float32 .npy per line.

    python run.py encode --model runs/<run>/final --input texts.txt --output vectors.npy

Input: `.txt`, one text a line; or `.jsonl`, one object a line with a string field `text`. An
empty text is an error naming its line: row i of the output is line i of the input, so nothing may
be skipped. The output is an (N, D) float32 `.npy`, written atomically; an existing one is kept
unless `--overwrite`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mltp.hygiene.atomic import atomic_write
from mltp.embedder import EMBEDDER_FILE, Embedder

from .errors import fail
from .settings import BUDGETS

CHUNK = 512  # texts per progress step; each chunk is still sorted by length and batched inside encode()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="RUN/final", help="a saved embedder (the final/ folder of a run)")
    p.add_argument("--input", required=True, metavar="FILE", help="texts to embed: .txt (one a line) or .jsonl (field 'text')")
    p.add_argument("--output", required=True, metavar="FILE.npy", help="where the (N, D) float32 vectors go, row i = input line i")
    p.add_argument("--instruction", help="an instruction for every text (formatted with the embedder's template)")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    p.add_argument("--batch-size", type=int, help="texts per forward (default: 32 on a CPU, 128 on a GPU)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], help="model weights (default: bfloat16 on GPU, float32 on CPU)")


def read_texts(path: Path) -> list[str]:
    if not path.is_file():
        fail(f"--input {path}: no such file")
    if path.suffix not in (".txt", ".jsonl"):
        fail(f"--input {path}: expected a .txt or .jsonl file")
    texts = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if path.suffix == ".jsonl":
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    fail(f"{path} line {n}: not valid JSON ({e.msg})")
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    fail(f"{path} line {n}: field 'text' must be a string")
                line = row["text"]
            if not line.strip():
                fail(f"{path} line {n}: empty text (every line is one output row, so none is skipped)")
            texts.append(line)
    if not texts:
        fail(f"--input {path}: the file holds no text")
    return texts


def progress(done: int, total: int, start: float) -> None:
    width = 30
    filled = width * done // total
    rate = done / max(time.perf_counter() - start, 1e-9)
    sys.stderr.write(f"\rencoding [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} texts, {rate:,.0f}/s")
    sys.stderr.flush()
    if done == total:
        sys.stderr.write("\n")


def check_writable(output: Path) -> None:
    """Before the encoding, not after it: the folder --output goes into must take a new file."""
    if output.is_dir():
        fail(f"--output {output} is a directory; name a file (vectors.npy)")
    folder = next(d for d in output.absolute().parents if d.exists())  # made up to there when written
    if not folder.is_dir():
        fail(f"--output {output}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        fail(f"--output {output}: cannot write in {folder} (permission denied)")


def run(args: argparse.Namespace) -> None:
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        fail(f"--output {output} exists; pass --overwrite to replace it")
    check_writable(output)
    if args.batch_size is not None and args.batch_size < 1:
        fail("--batch-size must be >= 1")
    if not (Path(args.model) / EMBEDDER_FILE).is_file():
        fail(f"--model {args.model} is not a saved embedder (no {EMBEDDER_FILE}): pass a run's final/ folder")
    texts = read_texts(Path(args.input))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = args.dtype or BUDGETS["cuda" if device.type == "cuda" else "cpu"]["dtype"]
    try:
        embedder = Embedder.load(args.model, dtype=getattr(torch, dtype), device=str(device))
    except FileNotFoundError as e:  # the base model it was trained on is gone
        fail(str(e))

    vectors = np.empty((len(texts), embedder.model.config.hidden_size), dtype=np.float32)  # (N, D)
    start = time.perf_counter()
    for lo in range(0, len(texts), CHUNK):
        chunk = texts[lo:lo + CHUNK]
        vectors[lo:lo + len(chunk)] = embedder.encode(chunk, instruction=args.instruction, batch_size=args.batch_size).numpy()
        progress(lo + len(chunk), len(texts), start)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a bare name
            np.save(f, vectors)

    atomic_write(output, write)
    print(f"wrote {output}: {vectors.shape[0]:,} x {vectors.shape[1]} float32")

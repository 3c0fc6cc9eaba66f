"""Write a saved embedder as a sentence-transformers directory.

    python run.py export runs/<run>/final --to my-embedder

The decoder with its LoRA merged, as a Hugging Face checkpoint; the pooler; the wiring and the
prompts (mltp.formats.export). `SentenceTransformer("my-embedder", trust_remote_code=True)` loads it
(extra `st`); its vectors equal `encode`'s.
"""
from __future__ import annotations

import argparse

from mltp.formats.export import export

from .errors import fail


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("embedder", metavar="RUN/final", help="a saved embedder (the final/ folder of a run)")
    p.add_argument("--to", required=True, metavar="DIR", help="the directory to write; SentenceTransformer(DIR, trust_remote_code=True) loads it")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")


def run(args: argparse.Namespace) -> None:
    try:
        export(args.embedder, args.to, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        fail(str(e))

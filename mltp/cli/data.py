"""Make the benchmark data folder from its public sources, every file verified.

    python run.py data                 # into $XDG_CACHE_HOME/mltp/data (~/.cache/mltp/data), where runs look last
    python run.py data --to DIR        # anywhere; then pass --data-dir DIR or set MLTP_DATA_DIR=DIR

What is fetched, from where, and how derived files are made: eval/manifest.json (written from the
data's MANIFEST.md) and eval/derive.py. Run it again after an interruption: verified files are kept.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import eval as evaluators
from eval import fetch as fetcher
from eval.manifest import load, render_markdown
from mltp.hygiene.atomic import atomic_write_text
from .errors import fail


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--to", metavar="DIR", help=f"where to put the data (default: {evaluators.user_data_dir()})")
    p.add_argument("--raw-url", default=fetcher.RAW, help="base URL of raw files: BASE/owner/repo/commit/path")
    p.add_argument("--media-url", default=fetcher.MEDIA, help="base URL of Git LFS content: BASE/owner/repo/commit/path")
    p.add_argument("--archive-url", default=fetcher.ARCHIVE, help="base URL of repository archives: BASE/owner/repo/tar.gz/commit")
    p.add_argument("--keep-downloads", action="store_true", help=f"keep the upstream downloads in DIR/{fetcher.CACHE}")


def fetch_data(target: str | Path, remote: fetcher.Remote = fetcher.Remote(), keep_downloads: bool = False,
               log=print) -> Path:
    """Make (or complete) the data directory at target; exit 2 naming the file when anything fails."""
    target = Path(target).expanduser()
    entries = load()
    log(f"benchmark data -> {target}: {len(entries)} files from their public sources (eval/manifest.json)")
    try:
        status = fetcher.fetch(target, entries, remote=remote, log=log, keep_cache=keep_downloads)
    except fetcher.FetchError as e:
        fail(f"data: {e} (files already verified are kept: run the same command again to go on)")
    except OSError as e:
        fail(f"data: cannot write under {target}: {e}")
    if not (target / "MANIFEST.md").exists():
        atomic_write_text(target / "MANIFEST.md", render_markdown(entries))
    counts = Counter(status.values())
    log(f"benchmark data ready at {target}: {counts['made']} made, {counts['kept']} already there and verified")
    log(f"each file's licence is in the licence column of {target / 'MANIFEST.md'} (some are non-commercial or research-only)")
    return target


def run(args: argparse.Namespace) -> None:
    target = args.to or evaluators.user_data_dir()
    remote = fetcher.Remote(raw=args.raw_url.rstrip("/"), media=args.media_url.rstrip("/"),
                            archive=args.archive_url.rstrip("/"))
    fetch_data(target, remote, keep_downloads=args.keep_downloads)
    if Path(target).expanduser() != evaluators.user_data_dir():
        print(f"pass --data-dir {target} (or set MLTP_DATA_DIR={target}) to use it", file=sys.stderr)

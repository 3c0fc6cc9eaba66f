#!/usr/bin/env python
"""Write eval/manifest.json from the data's MANIFEST.md and the recipes in eval/recipes.py.

    python scripts/manifest.py [DATA_DIR]          # write eval/manifest.json
    python scripts/manifest.py [DATA_DIR] --check  # exit 1 if eval/manifest.json is out of date

DATA_DIR defaults to $MLTP_DATA_DIR, else ../shared/data.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.manifest import MANIFEST_JSON, Entry, Upstream, parse_markdown, to_json  # noqa: E402
from eval.recipes import RECIPES  # noqa: E402
from mltp.hygiene.atomic import atomic_write_text  # noqa: E402


def entry_for(row) -> Entry:
    name = row.file.removesuffix(".gz")
    recipe = RECIPES.get(name)
    if recipe is None:
        spec = row.source.split()[0]
        try:
            upstream = Upstream.parse(spec)
        except ValueError:
            raise ValueError(f"MANIFEST.md: {row.file} is derived ({row.source[:60]}...) but eval/recipes.py has no recipe")
        gunzip = upstream.path.endswith(".gz") and not name.endswith(".gz")
        recipe = dict(derivation="gunzip" if gunzip else "copy", inputs=[spec])
    for spec in recipe["inputs"]:
        if not spec.startswith("data:") and Upstream.parse(spec).repo not in row.source:
            raise ValueError(f"recipe for {row.file}: upstream {spec} is not the one MANIFEST.md names")
    return Entry(file=row.file, sha256=row.sha256, size=row.size, derivation=recipe["derivation"],
                 inputs=tuple(recipe["inputs"]), licence=row.licence, family=row.family, dataset=row.dataset,
                 split=row.split, rows=row.rows, note=row.source, faithful=row.faithful, options=dict(recipe.get("options", {})))


def build(markdown: str) -> list[Entry]:
    rows = parse_markdown(markdown)
    files = {r.file for r in rows}
    unused = sorted(set(RECIPES) - {f.removesuffix(".gz") for f in files})
    if unused:
        raise ValueError(f"eval/recipes.py has recipes for files MANIFEST.md does not list: {unused}")
    entries = [entry_for(r) for r in rows]
    for e in entries:
        missing = [f for f in e.local_inputs() if f not in files]
        if missing:
            raise ValueError(f"recipe for {e.file} reads {missing}, which MANIFEST.md does not list")
    # Files made from other files of the manifest come after every upstream file.
    return sorted(entries, key=lambda e: bool(e.local_inputs()))


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--check"]
    data_dir = Path(args[0] if args else os.environ.get("MLTP_DATA_DIR", ROOT.parent / "shared" / "data"))
    text = to_json(build((data_dir / "MANIFEST.md").read_text()))
    if "--check" in argv:
        if MANIFEST_JSON.read_text() != text:
            print(f"{MANIFEST_JSON} is out of date with {data_dir / 'MANIFEST.md'}: run scripts/manifest.py", file=sys.stderr)
            return 1
        print(f"{MANIFEST_JSON.name} matches {data_dir / 'MANIFEST.md'}")
        return 0
    atomic_write_text(MANIFEST_JSON, text)
    print(f"wrote {MANIFEST_JSON}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`run.py intervene`'s variants as pseudo-configurations of the report, read from the data.

Each trained run's `interventions.json` holds one record per variant, all scored on the run's own
items: "trained" (the run re-scored), and whatever the intervene command made: "zero", "shuffled",
a reset to W's initial value, "seed-k" (W from the same configuration's run at seed k), ...
Every variant found becomes `<configuration> [<variant>]`, with one record per seed in
results.json's shape, and is compared with the trained run. Nothing here lists the variants, so a
new one appears in the report as soon as a run has it; DESCRIPTIONS only words the known ones.

"seed-k" variants are folded into one, "other-seed", whose donor rotates: seed s takes the next
seed of the configuration that was run (the last takes the first), so no seed's W is the donor
twice (the registration of cpu-study2-240steps names this rule). A run whose rotating donor was
not scored takes the lowest other seed it has; each record's "intervention" names the donor used.
"""
from __future__ import annotations

import json
from pathlib import Path

OTHER_SEED = "other-seed"
DESCRIPTIONS = {"zero": "W set to zero", "shuffled": "W's rows shuffled", OTHER_SEED: "W from another seed",
                "reset": "W reset to its initial value", "init": "W reset to its initial value"}


def next_seed(seed: int, seeds: list[int]) -> int | None:
    """The seed after `seed` among `seeds`, cyclically (the last one's is the first); None alone."""
    ring = sorted(set(seeds) | {seed})
    return ring[(ring.index(seed) + 1) % len(ring)] if len(ring) > 1 else None


def donor(seed: int, seeds: list[int], found: list[str]) -> str | None:
    """The "seed-k" variant a run at `seed` is compared with: the next seed run, cyclically, else the lowest found."""
    following = next_seed(seed, seeds) if seed in seeds else None
    others = sorted((v for v in found if v.startswith("seed-")), key=lambda v: int(v.split("-")[1]))
    if following is not None and f"seed-{following}" in others:
        return f"seed-{following}"
    return others[0] if others else None


def variants_of(record: dict, found: dict, seeds: list[int]) -> dict[str, str]:
    """{variant name in the report: key in interventions.json} for one run."""
    keys = {v: v for v in found if v != "trained" and not v.startswith("seed-")}
    other = donor(record["config"].get("seed"), seeds, list(found))
    if other:
        keys[OTHER_SEED] = other
    return keys


def intervention_runs(out: Path, runs: dict[str, list[dict]]) -> tuple[dict[str, list[dict]], list[tuple[str, str, str]]]:
    """(pseudo-configurations {"<name> [<variant>]": [record per seed]}, comparisons (label, trained, variant))."""
    variants: dict[str, list[dict]] = {}
    for name, records in runs.items():
        seeds = [r["config"].get("seed") for r in records]
        for record in records:
            path = Path(out) / name / f"seed-{record['config'].get('seed')}" / "interventions.json"
            if not path.exists():
                continue
            found = json.loads(path.read_text(encoding="utf-8"))["variants"]
            for variant, key in variants_of(record, found, seeds).items():
                variants.setdefault(f"{name} [{variant}]", []).append(
                    {**record, "name": f"{record['name']} [{variant}]", "intervention": key,
                     "tasks": found[key]["tasks"], "family_averages": found[key]["family_averages"]})
    comparisons = []
    for pseudo in variants:
        name, variant = pseudo[:-1].split(" [", 1)
        comparisons.append((f"intervention: {name} trained vs {DESCRIPTIONS.get(variant, variant)}", name, pseudo))
    return variants, comparisons

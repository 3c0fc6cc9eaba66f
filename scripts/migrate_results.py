"""Upgrade run records made by earlier versions of mltp to carry their settings record.

    python scripts/migrate_results.py results/                      # every run below these folders
    python scripts/migrate_results.py results/cpu-study2-240steps   # e.g. runs copied in from an older checkout

A run now stores the settings that change its numbers (mltp.hygiene.identity) in config.json,
each checkpoint's trainer_state.json and results.json, and a resumed or skipped run is compared
against that record alone. Earlier versions stored only the resolved flags (`config`); their
settings were read out of it, with the values below standing in for flags added after a run was
made. This script writes that reading down, once, in every record that lacks it:
- results.json: a "settings" entry beside "config" (nothing else changes);
- config.json: {"settings": ..., "config": <the old file>};
- checkpoints/*/trainer_state.json: its "settings" completed the same way.
A record that has its settings is left as it is, so the script can run again on a folder that
keeps receiving runs made by an older checkout. Scores, histories and reports are never touched.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mltp.cli.settings import run_settings  # noqa: E402
from mltp.hygiene.atomic import atomic_write_json, atomic_write_text  # noqa: E402

# A flag added after runs were recorded, and the value that reproduces those runs.
ASSUMED_WHEN_ABSENT: dict[str, object] = {
    "layer_weight_std": 1.0, "layer_weight_lr_mult": 1.0, "block": None,  # the official W, the last block
    "mini_batch": None, "ranks": 1,  # one process, no GradCache
    "train_data": None, "train_data_mode": "join",  # the built-in mixture alone
    "joint_forward": False,  # three forwards a step: the only way before joint_forward existed
}


def settings_of(config: dict) -> dict:
    """The settings an earlier version read out of a run's resolved flags."""
    return run_settings({**config, **{k: v for k, v in ASSUMED_WHEN_ABSENT.items() if k not in config}})


def with_settings(record: dict, settings: dict) -> dict:
    """The record with "settings" placed before "config", every other entry as it was."""
    out = {}
    for key, value in record.items():
        if key == "config":
            out["settings"] = settings
        out[key] = value
    return out if "settings" in out else {**record, "settings": settings}


def migrate_results(path: Path) -> bool:
    record = json.loads(path.read_text())
    if "settings" in record:
        return False
    # As mltp.cli.job writes it: two-space indent, strict JSON, a final newline.
    atomic_write_text(path, json.dumps(with_settings(record, settings_of(record["config"])), indent=2, allow_nan=False) + "\n")
    return True


def migrate_config(path: Path) -> bool:
    record = json.loads(path.read_text())
    if "settings" in record:
        return False
    atomic_write_json(path, {"settings": settings_of(record), "config": record})
    return True


def migrate_checkpoint(path: Path, config: dict | None) -> bool:
    state = json.loads(path.read_text())
    recorded = state.get("settings")
    if recorded is None and config is None:
        raise ValueError(f"{path}: no settings, and no config.json or results.json beside its run to read them from")
    settings = settings_of(recorded) if recorded is not None else settings_of(config)
    if settings == recorded:
        return False
    atomic_write_json(path, {**state, "settings": settings})
    return True


def run_config_of(run_dir: Path) -> dict | None:
    """The run's resolved flags, from whichever record holds them."""
    if (run_dir / "results.json").exists():
        return json.loads((run_dir / "results.json").read_text())["config"]
    if (run_dir / "config.json").exists():
        record = json.loads((run_dir / "config.json").read_text())
        return record["config"] if "settings" in record else record
    return None


def run_dirs(folder: Path) -> list[Path]:
    """Every run directory at or below folder: one holding results.json, config.json or checkpoints."""
    found = {p.parent for name in ("results.json", "config.json") for p in folder.rglob(name)}
    found |= {p.parent.parent for p in folder.rglob("checkpoints/latest")}
    # A run's config.json, not a checkpoint's or an exported model's (those hold a decoder's config).
    return sorted(d for d in found if (d / "log.txt").exists() or (d / "results.json").exists())


def migrate(folder: Path, log=print) -> int:
    changed = 0
    for run_dir in run_dirs(folder):
        config = run_config_of(run_dir)
        done = []
        if (run_dir / "results.json").exists() and migrate_results(run_dir / "results.json"):
            done.append("results.json")
        if (run_dir / "config.json").exists() and migrate_config(run_dir / "config.json"):
            done.append("config.json")
        for state in sorted(run_dir.glob("checkpoints/step-*/trainer_state.json")):
            if migrate_checkpoint(state, config):
                done.append(str(state.relative_to(run_dir)))
        if done:
            log(f"{run_dir}: {', '.join(done)}")
            changed += len(done)
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", metavar="FOLDER", type=Path)
    args = p.parse_args(argv)
    for folder in args.folders:
        if not folder.is_dir():
            p.error(f"{folder}: not a folder")
    changed = sum(migrate(folder) for folder in args.folders)
    print(f"{changed} record(s) upgraded")
    return 0


if __name__ == "__main__":
    sys.exit(main())

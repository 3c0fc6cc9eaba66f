"""A run directory's identity: the settings that change its numbers.

A run directory is resumed (an unfinished one) or skipped (a finished one) only under the
settings it was made with; anything else would report one model's scores under another's flags.
The settings are every key of the resolved run config (what results.json and config.json record)
except the few below that do not change the numbers, so a new flag is covered the day it is added.
"""
from __future__ import annotations

import json
from pathlib import Path

from mltp.train import setting_differences

# Where things are and how fast they run, not what is computed; and the sweep's and probe's own
# arguments, which choose runs rather than shape one.
NOT_SETTINGS = frozenset({
    "command", "argv", "out", "data_dir", "model_dir", "device", "compile", "gradient_checkpointing",
    "seeds", "only", "list", "time_limit", "report_only", "no_report", "every", "pooler",
    "fetch_data", "to", "input", "output", "overwrite", "instruction",
})

# A setting added after runs were recorded, and the value that reproduces those runs: a record
# without it then matches that value; a missing setting otherwise counts as None and so never
# matches a value.
ASSUMED_WHEN_ABSENT: dict[str, object] = {
    "layer_weight_std": 1.0, "layer_weight_lr_mult": 1.0, "block": None,  # the official W, the last block
    "mini_batch": None, "ranks": 1,  # one process, no GradCache
    "train_data": None, "train_data_mode": "join",  # the built-in mixture alone
}


def run_config(args) -> dict:
    """The resolved arguments as recorded in config.json and results.json (the data check's
    verdicts go to results.json apart: they say "cached" the second time)."""
    return {k: v for k, v in vars(args).items() if k not in ("command", "argv", "data_verdicts")}


def settings_of(config: dict) -> dict:
    out = {k: v for k, v in config.items() if k not in NOT_SETTINGS}
    return {**{k: v for k, v in ASSUMED_WHEN_ABSENT.items() if k not in out}, **out}


def recorded_settings(run_dir: Path) -> tuple[str, Path, dict] | None:
    """(how far the run got, the file that says so, its settings) for a run directory in use."""
    pointer = run_dir / "checkpoints" / "latest"
    state = run_dir / "checkpoints" / pointer.read_text().strip() / "trainer_state.json" if pointer.exists() else None
    for label, path, key in (("finished", run_dir / "results.json", "config"),
                             ("checkpoint", state, "settings"),
                             ("started", run_dir / "config.json", None)):
        if path is None or not path.exists():
            continue
        try:
            record = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path} is not valid JSON ({e}): delete {run_dir} (or pass another --out) to start afresh") from None
        config = record.get(key) if key else record
        if config is not None:
            return label, path, settings_of(config)
    return None


def differences(run_dir: Path, args) -> tuple[str, Path, list[str]] | None:
    """How the settings recorded in run_dir differ from args, or None for a fresh directory."""
    found = recorded_settings(run_dir)
    if found is None:
        return None
    label, path, recorded = found
    return label, path, setting_differences(recorded, settings_of(run_config(args)), label)

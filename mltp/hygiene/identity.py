"""A run directory's identity: the settings that change its numbers, recorded once, compared once.

A run writes its settings record (a flat dict; mltp.cli.settings.run_settings says which values it
holds) into config.json when it starts, into each checkpoint's trainer_state.json, and into
results.json when it ends. A run directory is resumed (unfinished) or skipped (finished) only
under the settings it was made with, or a report would show one model's scores under another's
flags: `check_run_dir` compares the record of how far the run got with the settings asked, and
names every difference. Nothing else compares settings.

Records made before runs stored this record (their settings were read out of the resolved config)
are refused, naming `scripts/migrate_results.py`, which upgrades them once.
"""
from __future__ import annotations

import json
from pathlib import Path

SETTINGS_KEY = "settings"
MIGRATE = "python scripts/migrate_results.py"  # upgrades run records made by earlier versions


class SettingsMismatch(ValueError):
    """A run directory made under other settings than the ones asked."""


def differences(recorded: dict, asked: dict, recorded_as: str) -> list[str]:
    """'name: <recorded_as> X, asked Y' for every setting on which the two disagree (a setting
    missing on one side counts as None, never as a match)."""
    asked = json.loads(json.dumps(asked))  # compare as stored: tuples are lists in JSON
    return [f"{k}: {recorded_as} {recorded.get(k)!r}, asked {asked.get(k)!r}"
            for k in dict.fromkeys([*recorded, *asked]) if recorded.get(k) != asked.get(k)]


def latest_state(run_dir: Path) -> Path | None:
    """The trainer_state.json of the checkpoint `checkpoints/latest` names, if any."""
    pointer = run_dir / "checkpoints" / "latest"
    return run_dir / "checkpoints" / pointer.read_text().strip() / "trainer_state.json" if pointer.exists() else None


def recorded_settings(run_dir: Path) -> tuple[str, Path, dict] | None:
    """(how far the run got, the file that says so, its settings) for a run directory in use."""
    for state, path in (("finished", run_dir / "results.json"), ("checkpoint", latest_state(run_dir)),
                        ("started", run_dir / "config.json")):
        if path is None or not path.exists():
            continue
        try:
            record = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path} is not valid JSON ({e}): delete {run_dir} (or pass another --out) to start afresh") from None
        if not isinstance(record.get(SETTINGS_KEY), dict):
            raise ValueError(f"{path} holds no settings record: it was made by an earlier version of mltp; "
                             f"upgrade it with `{MIGRATE} {run_dir}`")
        return state, path, record[SETTINGS_KEY]
    return None


STATES = {"finished": "a finished run", "checkpoint": "an unfinished run", "started": "a started run"}

# What only a run directory holds (mltp.train, mltp.cli.job): its history, checkpoints or record.
RUN_MARKERS = ("train_history.jsonl", "checkpoints", "results.json")


def is_run_dir(path: Path) -> bool:
    return any((path / name).exists() for name in RUN_MARKERS)


def check_run_dir(run_dir: Path, settings: dict) -> str | None:
    """How far the run in run_dir got (None: a fresh directory), if it was made with `settings`;
    otherwise SettingsMismatch naming every difference and the file that records them."""
    found = recorded_settings(run_dir)
    if found is None:
        return None
    state, path, recorded = found
    differ = differences(recorded, settings, state)
    if differ:
        raise SettingsMismatch(f"{run_dir} holds {STATES[state]} made with other settings ({'; '.join(differ)}; "
                               f"recorded in {path})")
    return state

"""Each task's scores in MTEB's result layout, beside results.json, for the tools that read MTEB
results (mteb.results.TaskResult.from_disk, the leaderboard's loaders).

    <run>/mteb/<model>/<revision>/<MTEB task name>.json    one TaskResult per task

The items are this project's (eval/tasks.py: the quick and study suites score seeded subsets, and
some datasets are rebuilt), so `dataset_revision` names the suite instead of a hub revision, and
each score dict carries `mltp_suite` and `mltp_note`: a reader who sets them beside a leaderboard
sees that they are not the same items. Pure json: mteb is not needed to write them.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .tasks import TASKS

BOOKKEEPING = {"n_items", "n_texts", "seconds", "family", "split", "note", "suite", "instruction", "per_item"}


def task_result(name: str, scores: dict) -> dict:
    """One task's scores (an eval.evaluate entry) as an MTEB TaskResult dict."""
    metrics = {k: v for k, v in scores.items()
               if k not in BOOKKEEPING and isinstance(v, (int, float)) and not isinstance(v, bool)}
    suite = scores.get("suite", "full")
    return {
        "dataset_revision": f"mltp-{suite}", "task_name": TASKS[name].mteb_name, "mteb_version": None,
        "evaluation_time": scores.get("seconds"), "kg_co2_emissions": None,
        "scores": {scores.get("split", "test"): [{
            **metrics, "main_score": scores["main_score"], "hf_subset": "default", "languages": ["eng-Latn"],
            "mltp_suite": suite, "mltp_note": scores.get("note", ""),
        }]},
    }


def write_mteb_results(run_dir: str | os.PathLike, tasks: dict[str, dict], model_name: str,
                       revision: str = "no_revision_available") -> Path:
    """Write every task of `tasks` (results.json's "tasks") under run_dir/mteb; returns the folder."""
    folder = Path(run_dir) / "mteb" / model_name.replace("/", "__") / revision
    folder.mkdir(parents=True, exist_ok=True)
    for name, scores in tasks.items():
        result = task_result(name, scores)
        _atomic_json(folder / f"{result['task_name']}.json", result)
    return folder


def _atomic_json(path: Path, obj) -> None:
    # eval/ imports nothing of mltp (mltp.hygiene.atomic is the same move): a reader never sees half a file.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2, allow_nan=False) + "\n")
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

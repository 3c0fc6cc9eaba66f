"""eval.mteb_results: a run's scores in MTEB's result layout, read back by mteb's own TaskResult."""
import json
from pathlib import Path

import pytest

from eval.mteb_results import write_mteb_results
from eval.tasks import TASKS

RESULTS = Path(__file__).resolve().parents[1] / "results" / "cpu-main-job" / "results.json"


@pytest.fixture
def written(tmp_path):
    tasks = json.loads(RESULTS.read_text())["tasks"]
    return tasks, write_mteb_results(tmp_path, tasks, model_name="mltp/cpu-main-job")


def test_one_file_per_task_under_mtebs_names(written):
    tasks, folder = written
    assert folder.parts[-3:] == ("mteb", "mltp__cpu-main-job", "no_revision_available")
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{TASKS[n].mteb_name}.json" for n in tasks)


def test_mteb_reads_each_tasks_scores_back(written):
    mteb = pytest.importorskip("mteb", reason="reading them back needs the `mteb` extra")
    tasks, folder = written
    for name, scores in tasks.items():
        result = mteb.TaskResult.from_disk(folder / f"{TASKS[name].mteb_name}.json")
        mteb.get_task(result.task_name)  # a KeyError here: a name MTEB does not know
        (entry,) = result.scores["test"]
        assert entry["main_score"] == scores["main_score"] and entry["mltp_suite"] == scores["suite"]
        assert result.get_score() == pytest.approx(scores["main_score"], rel=1e-12)

"""eval stands alone: importing it (and its report and statistics) loads neither torch nor mltp."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def loaded_after(code: str) -> set[str]:
    probe = code + "; import sys; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_eval_loads_neither_torch_nor_mltp():
    mods = loaded_after("import eval")
    assert "torch" not in mods and not any(m == "mltp" or m.startswith("mltp.") for m in mods)
    assert "numpy" not in mods  # nothing until a name is used


def test_the_report_and_task_registry_load_neither_torch_nor_mltp():
    mods = loaded_after("import eval, eval.tasks, eval.report, eval.crossed, eval.fetch; eval.TASKS")
    assert "torch" not in mods and not any(m == "mltp" or m.startswith("mltp.") for m in mods)

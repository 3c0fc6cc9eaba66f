"""Shared test fixtures: where the benchmark data lives.

The data is never copied into this repository (see ../shared/data/MANIFEST.md). Tests that read
it ask for the `data_dir` fixture, which looks for it exactly as a run does
(mltp.cli.settings.data_dir_candidates: $MLTP_DATA_DIR, ../shared/data beside the checkout, the
user data folder) and skips, saying where it looked, when none holds it (a fresh clone; `python
run.py data` fetches it); CI always has ../shared beside the clone, so there they run.
"""
from pathlib import Path

import pytest

from mltp.cli.settings import data_dir_candidates, find_data_dir

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def benchmark_data_or_skip() -> Path:
    """The folder a run would use when given no --data-dir, else a skip naming where it looked."""
    candidates = data_dir_candidates()
    path = find_data_dir(candidates)
    if path is None:
        where = "; ".join(f"{name}: {p}" for name, p in candidates)
        pytest.skip(f"benchmark data not found ({where}): set MLTP_DATA_DIR, or fetch it: python run.py data")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return benchmark_data_or_skip()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES

"""Shared test fixtures: where the benchmark data lives.

The data is never copied into this repository (see ../shared/data/MANIFEST.md). Tests that read
it skip, saying why, when it is absent (a fresh clone; `python run.py data` fetches it); CI
always has ../shared beside the clone, so there they run.
"""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def _data_dir() -> Path:
    return Path(os.environ.get("MLTP_DATA_DIR", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = _data_dir()
    if not (path / "MANIFEST.md").exists():
        pytest.skip(f"benchmark data not found at {path} (set MLTP_DATA_DIR, or fetch it: python run.py data --to DIR)")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES

"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ARTIFACTS_ROOT = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture
def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    """An empty directory ``artifacts/<test name>/`` for the test's logs and outputs.

    Unlike ``tmp_path`` it sits in the repository (CI uploads ``artifacts/``)
    and keeps only the last run of each test.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid).strip("_")
    path = ARTIFACTS_ROOT / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path

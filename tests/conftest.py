"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# No wall-clock deadlines: the machines are shared and noisy. In CI the examples
# are derandomized so a run is reproducible; by hand they explore new inputs.
settings.register_profile("dev", deadline=None)
settings.register_profile(
    "ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

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

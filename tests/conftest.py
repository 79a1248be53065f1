"""Test-wide setup: a scratch Airflow home, no example DAGs, and the paths of the shared Baseten reference."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before anything imports airflow: a private AIRFLOW_HOME so tests never touch ~/airflow.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="baseten-tests-airflow-"))
os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_HOME))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "reference" / "baseten"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference/baseten`` beside the checkout; tests that need it skip where it is absent."""
    if not (REFERENCE_DIR / "inference-openapi.json").is_file():
        pytest.skip(f"Baseten reference specs not found at {REFERENCE_DIR}")
    return REFERENCE_DIR

"""Baseten's OpenAPI specs, loaded once per session from ``../shared/reference/baseten`` (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
from openapi_contract import Spec


@pytest.fixture(scope="session")
def inference_spec(reference_dir: Path) -> Spec:
    return Spec(reference_dir / "inference-openapi.json")


@pytest.fixture(scope="session")
def management_spec(reference_dir: Path) -> Spec:
    return Spec(reference_dir / "management-openapi.json")

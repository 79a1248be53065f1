"""``operators.baseten`` imports an operator's module only when its name is used (DAG-parse cost)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import airflow_provider_baseten.operators.baseten as baseten

HEAVY = ("async_batch", "_async_manifest", "embeddings", "scoring", "_batch_journal", "_batch_run", "lifecycle", "chat")


def _modules_after(statement: str, prefix: str = "airflow_provider_baseten.operators.") -> set[str]:
    """The modules under ``prefix`` (named without it) that a fresh interpreter has loaded after ``statement``."""
    code = (
        f"import sys; {statement}; print(' '.join(n[{len(prefix)}:] for n in sys.modules if n.startswith({prefix!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return set(out.stdout.split())


def test_importing_one_operator_loads_only_its_own_modules() -> None:
    loaded = _modules_after("from airflow_provider_baseten.operators.baseten import BasetenPredictOperator")
    assert "predict" in loaded
    assert not loaded & set(HEAVY), f"parse-time imports of unused operators: {sorted(loaded & set(HEAVY))}"


def test_all_lists_every_lazy_name() -> None:
    assert sorted(baseten.__all__) == sorted(baseten._MODULES)


@pytest.mark.parametrize("name", baseten.__all__)
def test_every_exported_name_resolves_to_its_defining_class(name: str) -> None:
    value = getattr(baseten, name)
    assert value.__name__ == name
    assert value.__module__ == f"airflow_provider_baseten.operators.{baseten._MODULES[name]}"
    assert name in dir(baseten)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="BasetenNoSuchOperator"):
        baseten.BasetenNoSuchOperator


@pytest.mark.parametrize(
    "module",
    [
        "airflow_provider_baseten.operators.wake",
        "airflow_provider_baseten.operators.async_predict",
        "airflow_provider_baseten.operators.async_batch",
        "airflow_provider_baseten.sensors.baseten",
        "airflow_provider_baseten.triggers.baseten",
    ],
)
def test_a_module_that_needs_only_statuses_builds_no_payload_models(module: str) -> None:
    """The pydantic payload models (``hooks.models``) load when a task first runs, not when its DAG is parsed."""
    loaded = _modules_after(f"import {module}", prefix="airflow_provider_baseten.hooks.")
    assert "models" not in loaded

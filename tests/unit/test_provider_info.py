"""Provider registration: the entry point, Airflow's own schemas, importable class paths and the connection form."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
from typing import Any

import pytest

from airflow_provider_baseten import __version__
from airflow_provider_baseten.get_provider_info import CONN_FIELDS, get_provider_info
from airflow_provider_baseten.hooks.connection import KNOWN_EXTRAS

DISTRIBUTION = "airflow-provider-baseten"
SECRET_FIELDS = {"proxy", "headers"}


@pytest.fixture(scope="module")
def info() -> dict[str, Any]:
    return get_provider_info()


@pytest.fixture(scope="module")
def connection_type(info: dict[str, Any]) -> dict[str, Any]:
    (conn,) = [conn for conn in info["connection-types"] if conn["connection-type"] == "baseten"]
    return conn


def test_package_name_is_the_distribution_name(info: dict[str, Any]) -> None:
    dist = importlib.metadata.distribution(DISTRIBUTION)
    assert info["package-name"] == dist.metadata["Name"] == DISTRIBUTION


def test_version_matches_the_distribution(info: dict[str, Any]) -> None:
    assert info["versions"][0] == __version__ == importlib.metadata.version(DISTRIBUTION)


def test_entry_point_resolves_to_get_provider_info(info: dict[str, Any]) -> None:
    points = [
        point
        for point in importlib.metadata.entry_points(group="apache_airflow_provider")
        if point.dist is not None and point.dist.name == DISTRIBUTION
    ]
    assert len(points) == 1
    assert points[0].value == "airflow_provider_baseten.get_provider_info:get_provider_info"
    assert points[0].load()() == info


def test_matches_airflow_provider_info_schema(info: dict[str, Any]) -> None:
    from airflow.providers_manager import _create_provider_info_schema_validator

    errors = [error.message for error in _create_provider_info_schema_validator().iter_errors(info)]
    assert errors == []


def _listed_class_paths(info: dict[str, Any]) -> list[str]:
    paths = [conn["hook-class-name"] for conn in info["connection-types"]]
    paths += info.get("extra-links", [])
    return paths


def _listed_modules(info: dict[str, Any]) -> list[str]:
    return [
        module
        for kind in ("hooks", "operators", "sensors", "triggers")
        for entry in info[kind]
        for module in entry["python-modules"]
    ]


@pytest.mark.parametrize("path", _listed_class_paths(get_provider_info()))
def test_listed_class_is_importable(path: str) -> None:
    module, _, name = path.rpartition(".")
    if module.endswith(".pydantic_ai"):
        pytest.importorskip("airflow.providers.common.ai", reason="the common-ai extra is not installed")
    assert isinstance(getattr(importlib.import_module(module), name), type)


@pytest.mark.parametrize("module", _listed_modules(get_provider_info()))
def test_listed_module_is_importable(module: str) -> None:
    importlib.import_module(module)


def test_connection_type(connection_type: dict[str, Any]) -> None:
    from airflow_provider_baseten.hooks.baseten import BasetenHook

    assert connection_type["connection-type"] == BasetenHook.conn_type == "baseten"
    assert connection_type["hook-class-name"] == f"{BasetenHook.__module__}.{BasetenHook.__name__}"
    assert connection_type["hook-name"] == BasetenHook.hook_name


def test_conn_fields_are_the_parsed_extras(connection_type: dict[str, Any]) -> None:
    assert connection_type["conn-fields"] is CONN_FIELDS
    assert set(CONN_FIELDS) == set(KNOWN_EXTRAS)


@pytest.mark.parametrize("name", sorted(CONN_FIELDS))
def test_conn_field_is_described(name: str) -> None:
    field = CONN_FIELDS[name]
    assert field["label"].strip()
    assert len(field["description"]) > 10
    assert field["schema"]["type"]
    assert (field["schema"].get("format") == "password") is (name in SECRET_FIELDS)


def test_ui_field_behaviour(connection_type: dict[str, Any]) -> None:
    from airflow.providers_manager import _create_customized_form_field_behaviours_schema_validator

    behaviour = connection_type["ui-field-behaviour"]
    assert behaviour["relabeling"]["password"] == "API Key"
    assert "host" in behaviour["relabeling"]
    assert {"schema", "login"} <= set(behaviour["hidden-fields"])
    assert not {"password", "host", "port"} & set(behaviour["hidden-fields"])
    python_style = {key.replace("-", "_"): value for key, value in behaviour.items()}
    validator = _create_customized_form_field_behaviours_schema_validator()
    assert [error.message for error in validator.iter_errors(python_style)] == []


def test_providers_manager_registers_the_hook() -> None:
    try:  # Airflow 3.2+: hooks are the task SDK's business
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime as Manager
    except ImportError:
        from airflow.providers_manager import ProvidersManager as Manager

    manager = Manager()
    assert DISTRIBUTION in manager.providers
    hook = manager.hooks["baseten"]
    assert hook is not None
    assert hook.hook_class_name == "airflow_provider_baseten.hooks.baseten.BasetenHook"
    assert hook.connection_testable


FAB_MODULES = (
    "wtforms",
    "wtforms.csrf",
    "wtforms.fields",
    "wtforms.fields.simple",
    "wtforms.validators",
    "flask_babel",
    "flask_appbuilder",
    "flask_appbuilder.fieldwidgets",
)


def test_api_server_shows_the_connection_form(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the UI's connection form is built from: conn-fields (3.2+) or the hook's widgets with FAB mocked (3.1)."""
    services = pytest.importorskip("airflow.api_fastapi.core_api.services.ui.connections")
    from airflow.providers_manager import ProvidersManager

    instances = getattr(type(ProvidersManager), "_instances", None)
    if isinstance(instances, dict) and ProvidersManager in instances:
        # Airflow 3.1's singleton metaclass ignores the _instance patch inside hook_meta_data: start afresh, as the
        # api-server's first form request does, or the widgets imported earlier without the FAB mocks are reused.
        monkeypatch.delitem(instances, ProvidersManager)
    before = {name: sys.modules.get(name) for name in FAB_MODULES}
    try:
        metas = services.HookMetaService.hook_meta_data.__wrapped__()  # uncached
    finally:
        for name, module in before.items():  # Airflow 3.1 leaves MagicMocks in sys.modules for a missing FAB
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    (meta,) = [m for m in metas if m.connection_type == "baseten"]
    assert meta.hook_class_name == "airflow_provider_baseten.hooks.baseten.BasetenHook"
    assert meta.standard_fields.password.title == "API Key"
    assert meta.standard_fields.login.hidden
    assert not meta.standard_fields.host.hidden
    fields = {name: field if isinstance(field, dict) else field.dump() for name, field in meta.extra_fields.items()}
    assert set(fields) == set(CONN_FIELDS)
    for name, field in fields.items():
        assert field["schema"]["title"] == CONN_FIELDS[name]["label"]
        assert field["description"] == CONN_FIELDS[name]["description"]
        assert (field["schema"].get("format") == "password") is (name in SECRET_FIELDS)


def test_get_provider_info_imports_nothing_heavy() -> None:
    """The providers manager calls it in every Airflow process: it must not import Airflow, httpx or pydantic."""
    code = (
        "import sys, airflow_provider_baseten.get_provider_info as m; m.get_provider_info(); "
        "print(sorted(n for n in ('airflow', 'httpx', 'pydantic', 'aiohttp') if n in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"

"""The connection form: ``get_ui_field_behaviour`` and the Airflow 3.1 widget path (FAB mocked, as Airflow does)."""

from __future__ import annotations

import sys
from typing import Any
from unittest.mock import MagicMock

import pytest

from airflow_provider_baseten.get_provider_info import CONN_FIELDS
from airflow_provider_baseten.hooks.baseten import BasetenHook


def test_ui_field_behaviour() -> None:
    behaviour = BasetenHook.get_ui_field_behaviour()
    assert set(behaviour) == {"hidden_fields", "relabeling", "placeholders"}
    assert behaviour["relabeling"]["password"] == "API Key"
    assert "Gateway" in behaviour["relabeling"]["host"]
    assert {"schema", "login", "extra"} <= set(behaviour["hidden_fields"])
    assert "password" not in behaviour["hidden_fields"]
    assert "host" not in behaviour["hidden_fields"]


def test_hook_identity() -> None:
    assert (BasetenHook.conn_type, BasetenHook.conn_name_attr, BasetenHook.default_conn_name) == (
        "baseten",
        "baseten_conn_id",
        "baseten_default",
    )
    assert BasetenHook.hook_name == "Baseten"


def test_connection_form_widgets_under_airflow_fab_mocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow 3.1's API server calls get_connection_form_widgets with wtforms/FAB replaced by its own mocks."""
    services = pytest.importorskip("airflow.api_fastapi.core_api.services.ui.connections")
    meta: Any = services.HookMetaService
    for name in ("wtforms", "flask_babel", "flask_appbuilder", "flask_appbuilder.fieldwidgets"):
        monkeypatch.setitem(sys.modules, name, MagicMock())
    monkeypatch.setattr(sys.modules["wtforms"], "StringField", meta.MockStringField)
    monkeypatch.setattr(sys.modules["wtforms"], "PasswordField", meta.MockPasswordField)
    monkeypatch.setattr(sys.modules["flask_babel"], "lazy_gettext", lambda text: text)
    widgets_module = sys.modules["flask_appbuilder.fieldwidgets"]
    monkeypatch.setattr(widgets_module, "BS3TextFieldWidget", meta.MockAnyWidget)
    monkeypatch.setattr(widgets_module, "BS3PasswordFieldWidget", meta.MockAnyWidget)

    widgets = BasetenHook.get_connection_form_widgets()

    assert set(widgets) == set(CONN_FIELDS)
    for name, widget in widgets.items():
        param = widget.param.dump()
        assert param["schema"]["title"] == CONN_FIELDS[name]["label"]
        assert param["description"] == CONN_FIELDS[name]["description"]
        secret = CONN_FIELDS[name]["schema"].get("format") == "password"
        assert (param["schema"].get("format") == "password") is secret
        assert widget.field_class in (meta.MockStringField, meta.MockPasswordField)

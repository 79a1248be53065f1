"""Extra links to Baseten's dashboard: built from the operator, published early, the async one gated on request_id."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_baseten.operators.links import (
    REQUEST_ID_XCOM_KEY,
    BasetenAsyncRequestLink,
    BasetenChainLink,
    BasetenModelLink,
)


class FakeTI:
    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


TI_KEY: Any = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1, try_number=1)


@pytest.mark.parametrize(
    ("link", "operator", "expected"),
    [
        (BasetenModelLink(), SimpleNamespace(model_id="abc123"), "https://app.baseten.co/models/abc123/overview"),
        (BasetenChainLink(), SimpleNamespace(chain_id="ch42"), "https://app.baseten.co/chains/ch42/overview"),
        (BasetenModelLink(), SimpleNamespace(model_id="{{ params.m }}"), ""),  # unrendered: no broken link
        (BasetenModelLink(), SimpleNamespace(model_id=None), ""),
        (BasetenModelLink(), SimpleNamespace(chain_id="ch42"), ""),
        (BasetenChainLink(), SimpleNamespace(model_id="abc123"), ""),
        (BasetenModelLink(), SimpleNamespace(model_id="a/../b"), ""),
    ],
)
def test_dashboard_links_come_from_operator_attributes(link: Any, operator: Any, expected: str) -> None:
    assert link.get_link(operator, ti_key=TI_KEY) == expected


def test_link_names_and_xcom_keys_are_stable() -> None:
    assert BasetenModelLink().name == "Baseten model"
    assert BasetenChainLink().name == "Baseten chain"
    assert BasetenAsyncRequestLink().name == "Baseten async request"
    assert BasetenModelLink().xcom_key == "_link_BasetenModelLink"


def test_persist_publishes_the_link_for_the_ui() -> None:
    ti = FakeTI()
    url = BasetenModelLink.persist({"ti": ti}, SimpleNamespace(model_id="abc123"))  # type: ignore[arg-type]
    assert url == "https://app.baseten.co/models/abc123/overview"
    assert ti.xcoms == {"_link_BasetenModelLink": url}


def test_persist_pushes_nothing_without_a_valid_id() -> None:
    ti = FakeTI()
    assert BasetenChainLink.persist({"ti": ti}, SimpleNamespace(chain_id=None)) == ""  # type: ignore[arg-type]
    assert ti.xcoms == {}


def test_async_request_link_is_empty_until_a_request_was_recorded() -> None:
    operator: Any = SimpleNamespace(model_id="abc123", chain_id=None, request_id=None)
    assert BasetenAsyncRequestLink().get_link(operator, ti_key=TI_KEY) == ""

    operator.request_id = "req123"
    assert BasetenAsyncRequestLink().get_link(operator, ti_key=TI_KEY) == (
        "https://app.baseten.co/models/abc123/overview"
    )


def test_async_request_link_reads_no_xcom(mocker) -> None:
    """A missing XCom makes Airflow log an error-level "XCom not found": the link never asks for one."""
    get_value = mocker.patch("airflow.providers.common.compat.sdk.XCom.get_value", return_value="req123")
    operator: Any = SimpleNamespace(model_id="abc123", chain_id=None, request_id=None)
    assert BasetenAsyncRequestLink().get_link(operator, ti_key=TI_KEY) == ""
    get_value.assert_not_called()


def test_async_request_link_for_a_chain() -> None:
    operator: Any = SimpleNamespace(model_id=None, chain_id="ch42", request_id="req123")
    assert BasetenAsyncRequestLink().get_link(operator, ti_key=TI_KEY) == "https://app.baseten.co/chains/ch42/overview"


def test_async_request_link_persist_records_the_request_and_the_link() -> None:
    ti = FakeTI()
    url = BasetenAsyncRequestLink.persist(
        {"ti": ti},  # type: ignore[arg-type]
        SimpleNamespace(model_id="abc123", chain_id=None),
        "req123",
    )
    assert url == "https://app.baseten.co/models/abc123/overview"
    assert ti.xcoms == {REQUEST_ID_XCOM_KEY: "req123", "_link_BasetenAsyncRequestLink": url}


def test_links_are_registered_in_provider_info() -> None:
    from airflow_provider_baseten.get_provider_info import get_provider_info

    registered = get_provider_info()["extra-links"]
    for cls in (BasetenModelLink, BasetenChainLink, BasetenAsyncRequestLink):
        assert f"airflow_provider_baseten.operators.baseten.{cls.__name__}" in registered

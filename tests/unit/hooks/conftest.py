"""Fixtures for the hook-layer tests: a ``baseten`` connection in the environment, recorded sleeps and respx.

respx runs with ``using="httpx"``: it patches ``Client``/``AsyncClient._transport_for_url``, so it intercepts the
sync client and the shared async client on aiohttp's transport alike (the default ``httpcore`` mocker would miss
the latter, which never touches httpcore).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import respx
from hook_testing import conn_json, fake_baseten

from airflow_provider_baseten.hooks.baseten import BasetenHook


@pytest.fixture
def set_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set ``baseten_default`` (or ``conn_id``) from keyword fields, e.g. ``set_conn(host="127.0.0.1:8765")``."""

    def _set(conn_id: str = "baseten_default", **fields: Any) -> None:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn_json(**fields))

    return _set


@pytest.fixture
def conn(set_conn: Callable[..., None]) -> None:
    """A plain connection to Baseten's own hosts with the test key."""
    set_conn()


class Sleeps(list):
    """Records requested waits instead of sleeping (sync and async)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_hook(sleeps: Sleeps) -> Callable[..., BasetenHook]:
    """Build hooks whose retry waits are recorded in ``sleeps`` and never slept."""

    def _make(conn_id: str = "baseten_default", **kwargs: Any) -> BasetenHook:
        kwargs.setdefault("customer_request_id", "")
        return BasetenHook(conn_id, sleep=sleeps, async_sleep=sleeps.asleep, **kwargs)

    return _make


@pytest.fixture
def hook(conn: None, make_hook: Callable[..., BasetenHook]) -> Iterator[BasetenHook]:
    h = make_hook()
    yield h
    h.close()


@pytest.fixture
def mock_http() -> Iterator[respx.MockRouter]:
    """respx on httpx's client layer: every request must match a route; nothing reaches a network."""
    with respx.mock(using="httpx", assert_all_called=False, assert_all_mocked=True) as router:
        yield router


@pytest.fixture
def baseten_api(mock_http: respx.MockRouter) -> respx.MockRouter:
    """Every request answered by :func:`hook_testing.fake_baseten`; inspect ``baseten_api.calls``."""
    mock_http.route().mock(side_effect=fake_baseten)
    return mock_http

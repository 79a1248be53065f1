"""Fixtures shared by the unit tests. Being a conftest in a folder without ``__init__.py``, this also puts tests/unit on
``sys.path`` (pytest's default 'prepend' import mode), so test modules can ``from airflow_testing import ...``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import respx
from airflow_testing import FakeClock


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(using="httpx", assert_all_called=False) as router:
        yield router


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def fresh_sync_poll_budgets() -> Iterator[None]:
    """The worker-side poll budgets are per process and connection: each test starts with fresh ones."""
    from airflow_provider_baseten.hooks.ratelimit import reset_sync_buckets

    reset_sync_buckets()
    yield
    reset_sync_buckets()

"""Shared fakes for the operator, sensor and trigger unit tests (imported as ``airflow_testing``: tests/unit/conftest.py
puts this folder on ``sys.path``)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

T0 = 1_700_000_000.0
KEY = "unit-test-key-123"


class FakeClock:
    """Epoch clock that only moves when someone sleeps on it (sync or async)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


def set_conn(monkeypatch: pytest.MonkeyPatch, **extra: Any) -> None:
    """``baseten_default`` as an env connection with the unit-test key; ``extra`` overrides no retries and a huge
    poll budget (the shared token bucket runs on the real clock and must never make a test wait)."""
    extra = {"max_retries": 0, "status_rate_limit": 1_000_000, **extra}
    conn = {"conn_type": "baseten", "password": KEY, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_BASETEN_DEFAULT", json.dumps(conn))


# An async request's status record (GET /async_request/{id}), and responses that serve it.
def state(status: str, request_id: str = "req1", **extra: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "model_id": "abc123",
        "deployment_id": "dep1",
        "status": status,
        "webhook_status": "NO_WEBHOOK_PROVIDED",
        "created_at": "2023-11-14T22:13:20Z",
        "status_at": "2023-11-14T22:14:00Z",
        "errors": [],
        **extra,
    }


def statuses(*names: str, request_id: str = "req1") -> list[httpx.Response]:
    return [httpx.Response(200, json=state(name, request_id)) for name in names]

"""Stand-ins for the task context an operator reads (``context["ti"]``, ``context["task_state_store"]``), shared by
the unit and integration tests (tests/ is on ``sys.path``: tests/conftest.py sits in a folder without ``__init__``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any


class FakeTI:
    def __init__(self, start_date: datetime | None = None) -> None:
        self.xcom: dict[str, Any] = {}
        self.start_date = start_date
        self.stats_tags: dict[str, str] = {}
        self.try_number = 1

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


class FakeTaskStateStore:
    """``context["task_state_store"]``: survives retries of one task instance (it is keyed by the TI, not the try)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")  # as the SDK's store does
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class DagXComTI:
    """A TI whose XComs live in one dict for the whole DAG run, keyed ``(task_id, key)``: ``xcom_pull`` reads what
    another task pushed (a setup/teardown pair)."""

    dag_id, run_id, map_index = "dag", "run1", -1

    def __init__(self, xcoms: dict[tuple[str, str], Any], task_id: str, try_number: int = 1) -> None:
        self.xcoms, self.task_id, self.try_number = xcoms, task_id, try_number

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[(self.task_id, key)] = value

    def xcom_pull(self, task_ids: str, key: str) -> Any:
        return self.xcoms.get((task_ids, key))

"""Every request the emulator answered, for tests ("exactly one POST to async_predict") and ``/_emulator/journal``.

The journal is a bounded deque of small tuples (cheap at thousands of requests a second); the counters keep
counting past its bound. Admin routes (``/_emulator/...``) are not journaled.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple


class JournalEntry(NamedTuple):
    """One answered request. ``status`` is 0 when the connection was reset instead of answered.

    ``model_ran`` says the request reached the model: predict, run_remote, sync routes and chat ran it; an async
    submit queued work that will run it.
    """

    time: float
    """Wall-clock epoch seconds when the answer was sent."""
    method: str
    host: str
    path: str
    status: int
    model_ran: bool
    route: str
    """The route key (``predict``, ``async_predict``, ``async_status``, ``management``, ...; see ``faults.ROUTES``)."""
    inputs: int = 0
    """Inputs the request carried (the texts of a BEI ``embeddings``/``rerank``/``classify`` request), else 0."""
    customer_request_id: str | None = None
    """The ``x-baseten-customer-request-id`` header the client sent, if any."""


class Journal:
    """List-like (``len``, iteration, indexing) record of answered requests, oldest first."""

    def __init__(self, maxlen: int = 100_000) -> None:
        self._entries: deque[JournalEntry] = deque(maxlen=maxlen)
        self.total = 0
        self.model_runs = 0
        self.by_route: dict[str, int] = {}
        self.by_status: dict[int, int] = {}

    def record(self, entry: JournalEntry) -> None:
        self._entries.append(entry)
        self.total += 1
        self.model_runs += entry.model_ran
        self.by_route[entry.route] = self.by_route.get(entry.route, 0) + 1
        self.by_status[entry.status] = self.by_status.get(entry.status, 0) + 1

    def entries(self) -> list[JournalEntry]:
        """A snapshot (the server thread keeps appending)."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[JournalEntry]:
        return iter(self.entries())

    def __getitem__(self, index: int) -> JournalEntry:
        return self.entries()[index]

    def filter(
        self,
        *,
        method: str | None = None,
        path_suffix: str | None = None,
        host: str | None = None,
        status: int | None = None,
        route: str | None = None,
        model_ran: bool | None = None,
    ) -> list[JournalEntry]:
        """Entries matching every given criterion (``method`` and ``host`` ignore case)."""
        return [
            entry
            for entry in self.entries()
            if (method is None or entry.method == method.upper())
            and (path_suffix is None or entry.path.endswith(path_suffix))
            and (host is None or entry.host.lower() == host.lower())
            and (status is None or entry.status == status)
            and (route is None or entry.route == route)
            and (model_ran is None or entry.model_ran == model_ran)
        ]

    def count(self, **criteria: Any) -> int:
        """How many entries match, e.g. ``count(method="POST", path_suffix="/async_predict")``."""
        return len(self.filter(**criteria))

    def clear(self) -> None:
        self._entries.clear()
        self.total = self.model_runs = 0
        self.by_route.clear()
        self.by_status.clear()

    def counters(self) -> dict[str, Any]:
        """Totals since the last reset (not bounded by the journal's length)."""
        return {
            "requests": self.total,
            "model_runs": self.model_runs,
            "by_route": dict(self.by_route),
            "by_status": {str(status): count for status, count in sorted(self.by_status.items())},
        }

    def as_json(self, entries: list[JournalEntry]) -> list[dict[str, Any]]:
        return [entry._asdict() for entry in entries]

"""A retry allowance shared by every request of one batch, so a failure storm cannot multiply the load.

Each request still follows its own retry rule (:mod:`airflow_provider_baseten.hooks.retries`); the budget only says
whether the batch may afford one more retry: at most ``max(minimum, fraction * requests)`` retries, counted over the
requests sent so far (Baseten's performance client uses 5 %). Thread- and task-safe (a lock, no awaits).
"""

from __future__ import annotations

import threading
from typing import Any

from tenacity import RetryCallState
from tenacity.retry import retry_base

from airflow_provider_baseten.hooks.retries import ALWAYS_RETRIED_STATUSES


class RetryBudget:
    """``RetryBudget(fraction=0.05, minimum=10)``: pass one object to every call of a batch (``retry_budget=``)."""

    def __init__(self, fraction: float = 0.05, minimum: int = 10) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"RetryBudget fraction must be between 0 and 1, got {fraction!r}")
        if minimum < 0:
            raise ValueError(f"RetryBudget minimum must be at least 0, got {minimum!r}")
        self.fraction = fraction
        self.minimum = minimum
        self.requests = 0
        self.retries = 0
        self.refused = 0
        self._lock = threading.Lock()

    @property
    def allowance(self) -> int:
        """How many retries the batch may have made by now."""
        return max(self.minimum, int(self.fraction * self.requests))

    def record_request(self) -> None:
        """Count one logical request (its first attempt); retries are counted by :meth:`try_spend`."""
        with self._lock:
            self.requests += 1

    def try_spend(self) -> bool:
        """Take one retry if the budget has one left (``True``); otherwise count the refusal and return ``False``."""
        with self._lock:
            if self.retries < self.allowance:
                self.retries += 1
                return True
            self.refused += 1
            return False

    def gate(self, retry: Any) -> retry_base:
        """A tenacity ``retry`` that retries only what ``retry`` retries and the budget affords.

        Rate-limit answers (429, 529) do not spend it: Baseten refused them cheaply and said when to come back, and
        each request's own retry limit and backoff bound them.
        """
        budget = self

        class _Gated(retry_base):  # type: ignore[misc]
            def __call__(self, state: RetryCallState) -> bool:
                if not retry(state):
                    return False
                exc = state.outcome.exception() if state.outcome else None
                if getattr(exc, "status_code", None) in ALWAYS_RETRIED_STATUSES:
                    return True
                return budget.try_spend()

        return _Gated()

    def __repr__(self) -> str:
        return f"RetryBudget(retries={self.retries}/{self.allowance}, requests={self.requests}, refused={self.refused})"

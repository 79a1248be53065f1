"""Baseten's documented limits: per-route request rates (429 beyond), the org async queue, payload sizes.

Rates are counted per route for the whole emulator (Baseten counts per organization) on the wall clock: they
protect a server, so they do not speed up with the emulated clock. The lower of Baseten's documented figures are
the defaults (status and cancel 20 req/s, not the 100 of the newest page), so a client that passes here passes there.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from airflow_provider_baseten.hooks.models import ASYNC_PAYLOAD_LIMIT_BYTES

RetryAfterMode = Literal["header", "body", "both", "none"]


@dataclass
class Limits:
    """Limits the emulator enforces; ``None`` turns a rate limit off."""

    status_per_second: float | None = 20.0
    cancel_per_second: float | None = 20.0
    queue_status_per_second: float | None = 20.0
    submit_per_second: float | None = 200.0
    management_per_second: float | None = 100.0
    activate_per_minute: float | None = 20.0
    model_apis_per_minute: float | None = None
    org_queue_limit: int = 50_000
    """``QUEUED`` + ``IN_PROGRESS`` async requests per organization, across deployments; submits beyond get 429
    (``rate_limited``, retry hint ``org_queue_retry_after`` seconds, placed as ``retry_after`` says)."""
    org_queue_retry_after: float = 1.0
    async_payload_bytes: int = ASYNC_PAYLOAD_LIMIT_BYTES
    edge_payload_bytes: int = 100 * 1024 * 1024
    retry_after: RetryAfterMode = "header"
    """Where a rate-limit 429 says when to retry: ``Retry-After`` header, ``retry_after`` body field, both, none."""

    def buckets(self) -> dict[tuple[str, ...], tuple[float, float]]:
        """``routes -> (rate per second, burst)`` for every limited group of routes (the routes share one budget)."""
        groups: dict[tuple[str, ...], tuple[float | None, float | None]] = {
            ("async_status",): (self.status_per_second, None),
            ("async_cancel",): (self.cancel_per_second, None),
            ("async_queue_status",): (self.queue_status_per_second, None),
            ("async_predict", "async_run_remote"): (self.submit_per_second, None),
            ("management",): (self.management_per_second, None),
            ("activate",): _per_minute(self.activate_per_minute),
            ("chat",): _per_minute(self.model_apis_per_minute),
        }
        return {
            routes: (rate, burst if burst is not None else max(1.0, rate))
            for routes, (rate, burst) in groups.items()
            if rate
        }


def retry_after_seconds(wait: float) -> str:
    """A ``Retry-After`` header value: whole seconds, rounded up."""
    return str(max(0, math.ceil(wait)))


def retry_hint(mode: RetryAfterMode, wait: float) -> tuple[dict[str, str] | None, dict[str, Any]]:
    """``(headers, body fields)`` telling a 429'd client to retry in ``wait`` seconds, the way ``mode`` says."""
    headers = {"Retry-After": retry_after_seconds(wait)} if mode in ("header", "both") else None
    extra = {"retry_after": max(1, math.ceil(wait))} if mode in ("body", "both") else {}
    return headers, extra


def _per_minute(limit: float | None) -> tuple[float | None, float | None]:
    return (limit / 60.0, limit) if limit else (None, None)


class RouteBucket:
    """A token bucket that never waits: the emulator answers 429 (with the wait as ``Retry-After``) where a client
    would queue. ``rate`` tokens a second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._clock = clock
        self._updated = clock()

    def try_acquire(self) -> float:
        """Take a free token and return ``0.0``; otherwise take nothing and return the seconds until one is free."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


class RateLimiter:
    """One token bucket per limited group of routes; an unlimited route costs a dict lookup."""

    def __init__(self, limits: Limits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._by_route: dict[str, RouteBucket] = {}
        for routes, (rate, burst) in limits.buckets().items():
            bucket = RouteBucket(rate, burst, clock=clock)
            self._by_route.update(dict.fromkeys(routes, bucket))

    def check(self, route: str) -> float | None:
        """``None`` if the request may go on, else the seconds until it could (answered as 429)."""
        bucket = self._by_route.get(route)
        if bucket is None:
            return None
        wait = bucket.try_acquire()
        return wait if wait > 0 else None

"""The status-poll budget: a token bucket whose rate adapts to Baseten's 429s (AIMD), in an async and a sync twin.

Baseten answers 429 past 20 status requests per second and key. Every status, queue-depth and cancel attempt of a
process (retries included) takes a token from one budget per connection: the async twin is shared by every trigger
of a triggerer's event loop, the sync twin by every worker-side wait and poke of a process (thread-safe).

The budget starts at the connection's ``status_rate_limit``. A 429 halves the rate (multiplicative decrease, at most
once per round of requests: a 429 for a request sent before the last decrease does not shrink it again) and no token
is handed out before its ``Retry-After`` passes; tokens granted earlier but not yet used are re-queued behind it.
The rate then grows back additively (``max_rate / 30`` per second, so from half to full in about 15 s). Several
processes on one key thus converge under Baseten's limit with no coordination, as TCP flows share a link.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

__all__ = ["AsyncTokenBucket", "TokenBucket", "budget_feedback", "shared_sync_bucket", "status_burst"]

#: Rate factor on a 429 (multiplicative decrease).
DECREASE = 0.5
#: The rate never drops below ``max_rate / MIN_RATE_DIVISOR``, so a wait stays bounded.
MIN_RATE_DIVISOR = 16.0
#: Seconds for additive increase to regain ``max_rate`` from zero.
RECOVERY_S = 30.0
#: A ``Retry-After`` longer than this blocks the budget only this long (a bad header must not stall every poll).
MAX_BLOCK_S = 120.0


class _AdaptiveBucket:
    """The arithmetic both twins share. Reservation-based: ``_reserve`` takes a token now (the count may go
    negative: tokens promised to waiters) and returns how long the caller must wait before using it."""

    def __init__(self, rate: float, burst: float | None, clock: Callable[[], float]) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.max_rate = float(rate)
        self.burst = burst if burst is not None else max(1.0, rate)
        self.min_rate = self.max_rate / MIN_RATE_DIVISOR
        self.recovery = self.max_rate / RECOVERY_S
        self._clock = clock
        self._tokens = self.burst
        self._updated = clock()
        self._base_rate = self.max_rate
        self._recover_from = -math.inf
        self._blocked_until = -math.inf
        self._decreased_at = -math.inf
        #: Bumped by every 429: a waiter whose reservation is from an older generation queues again.
        self.generation = 0
        self._mutex = threading.Lock()

    @property
    def rate(self) -> float:
        """The current rate (tokens per second), between ``min_rate`` and ``max_rate``."""
        return self._rate_at(self._clock())

    def now(self) -> float:
        return self._clock()

    def _rate_at(self, now: float) -> float:
        return min(self.max_rate, self._base_rate + self.recovery * max(0.0, now - self._recover_from))

    def _refill(self, now: float) -> None:
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self._rate_at(now))
            self._updated = now

    def _reserve(self) -> tuple[float, int]:
        with self._mutex:
            now = self._clock()
            self._refill(now)
            self._tokens -= 1
            wait = max(0.0, self._updated - now) + max(0.0, -self._tokens) / self._rate_at(now)
            return wait, self.generation

    def rate_limited(self, retry_after: float | None = None, *, sent_at: float | None = None) -> None:
        """Baseten answered 429: halve the rate (once per round) and hand out no token before ``retry_after``."""
        with self._mutex:
            now = self._clock()
            self._refill(now)
            block = min(MAX_BLOCK_S, retry_after) if retry_after else 0.0
            self._blocked_until = max(self._blocked_until, now + block)
            if sent_at is None or sent_at > self._decreased_at:
                self._base_rate = max(self.min_rate, self._rate_at(now) * DECREASE)
                self._decreased_at = now
            self._recover_from = self._blocked_until
            # Promised tokens are void (their waiters queue again); one is free when the block ends, no burst.
            self._tokens = min(max(self._tokens, 0.0), 1.0)
            self._updated = max(self._updated, self._blocked_until)
            self.generation += 1


class AsyncTokenBucket(_AdaptiveBucket):
    """``await bucket.acquire()`` returns once a token is free; at most ``rate`` tokens a second, bursts of ``burst``.

    Waiters are served in arrival order (each reserves its slot on arrival), so no poller starves.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        super().__init__(rate, burst, clock)
        self._sleep = sleep

    async def acquire(self) -> float:
        """Wait for a token; returns the clock reading at which it was granted (pass it to :meth:`rate_limited`)."""
        while True:
            wait, generation = self._reserve()
            if wait > 0:
                await self._sleep(wait)
            if generation == self.generation or wait == 0:
                return self._clock()


class TokenBucket(_AdaptiveBucket):
    """The sync twin of :class:`AsyncTokenBucket` (worker-side waits and pokes); safe to share between threads."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        super().__init__(rate, burst, clock)
        self._sleep = sleep

    def acquire(self) -> float:
        """Block until a token is free; returns the clock reading at which it was granted."""
        while True:
            wait, generation = self._reserve()
            if wait > 0:
                self._sleep(wait)
            if generation == self.generation or wait == 0:
                return self._clock()


_SYNC_BUCKETS: dict[object, TokenBucket] = {}
_SYNC_LOCK = threading.Lock()


def shared_sync_bucket(
    key: object,
    rate: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> TokenBucket:
    """The one sync budget of this process for ``key`` (the connection settings), created on first use."""
    with _SYNC_LOCK:
        bucket = _SYNC_BUCKETS.get(key)
        if bucket is None:
            bucket = _SYNC_BUCKETS[key] = TokenBucket(rate, burst=status_burst(rate), clock=clock, sleep=sleep)
        return bucket


def reset_sync_buckets() -> None:
    """Forget every sync budget of this process (tests)."""
    with _SYNC_LOCK:
        _SYNC_BUCKETS.clear()


def status_burst(rate: float) -> float:
    """A fifth of a second's budget: a whole second's worth released at once after a busy spell can land inside
    Baseten's own one-second window and draw 429s."""
    return max(1.0, rate / 5)


@contextlib.contextmanager
def budget_feedback(budget: _AdaptiveBucket | None, granted: float | None) -> Iterator[None]:
    """Around one budgeted attempt: a 429 it meets shrinks ``budget`` (``granted``: when its token was granted)."""
    from airflow_provider_baseten.exceptions import BasetenRateLimitError

    try:
        yield
    except BasetenRateLimitError as err:
        if budget is not None and err.status_code == 429:
            budget.rate_limited(err.retry_after, sent_at=granted)
        raise

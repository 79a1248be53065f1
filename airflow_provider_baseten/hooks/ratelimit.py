"""The status-poll budget: a token bucket whose rate adapts to Baseten's 429s, in an async and a sync twin.

Baseten answers 429 past 20 status requests per second and key. Every status, queue-depth and cancel attempt of a
process (retries included) takes a token from one budget per connection: the async twin is shared by every trigger
of a triggerer's event loop, the sync twin by every worker-side wait and poke of a process (thread-safe).

The budget starts at the connection's ``status_rate_limit``. A 429 halves the rate (multiplicative decrease, at most
once per round of requests: a 429 for a request sent before the last decrease does not shrink it again) and no token
is handed out before its ``Retry-After`` passes; tokens granted earlier but not yet used are re-queued behind it.
The rate at that 429 (or the rate really used over ``USED_WINDOW_S``, if lower) is the ceiling. The rate then grows
back additively (``max_rate / 30`` per second) to ``AIM`` (0.7) of the ceiling and stays there: it probes upwards
(``max_rate / 300`` per second) only after ``FORGET_S`` (an hour) without a 429. Each later 429 sets a lower ceiling.

Why no probe while a 429 is remembered: the only signal is a 429, and a limit with a burst (Baseten's, and the
emulator's 20-token bucket) answers one only once the sum of the clients' rates has stayed above the limit long
enough to spend that burst (a sum of 20.7 req/s takes about 30 s), so every probe that meets the limit first runs
above it for tens of seconds. Simulated (``benchmarks/triggerer_convergence``: three processes, 36 triggers, 16
seeds, spreads 12/12/12, 6/12/18 and 2/12/22), a probe that stopped at 0.85 x the ceiling after a 5-minute hold
met the limit every cycle: 5 s peaks of 21-22 req/s in 10-14 of 16 seeds, 13-25 x 429s in 25 minutes; without it
0-7 seeds pass 20 and 0-1 x 429s, for 0.5-1.8 req/s less aggregate throughput (one process alone: unchanged).
The costs: a process whose peers went away regains its full rate only after the quiet hour; and 429s are the only
signal, so a process that never met one (its demand grew after the others' 429s) keeps its rate, and the sum can
settle just under the limit, where 5 s windows jitter past it (the seeds that still pass 20).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator

__all__ = ["AsyncTokenBucket", "TokenBucket", "budget_feedback", "shared_sync_bucket", "status_burst"]

#: Rate factor on a 429 (multiplicative decrease).
DECREASE = 0.5
#: The rate never drops below ``max_rate / MIN_RATE_DIVISOR``, so a wait stays bounded.
MIN_RATE_DIVISOR = 16.0
#: Seconds for additive increase to regain ``max_rate`` from zero (the climb back to the aim after a 429).
RECOVERY_S = 30.0
#: After a 429 the rate climbs back to this share of the rate it had when the 429 came (the ceiling) and stays
#: there: a probe upwards is what brings the next 429s, after tens of seconds above the limit.
AIM = 0.7
#: The ceiling is forgotten after this many seconds without a 429, and the rate probes upwards ...
FORGET_S = 3600.0
#: ... this slowly (seconds to gain ``max_rate`` from zero): a process whose peers went away regains its full rate,
#: at the cost of one probe past the limit per quiet period.
PROBE_S = 300.0
#: The rate a process really used (tokens granted over this many seconds) caps the ceiling a 429 sets: a process
#: that polls less than its budget allows must not aim at the budget. Long enough to smooth over poll jitter
#: (a 2 s window read the burst before a 429 as the rate, and aimed too high).
USED_WINDOW_S = 10.0
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
        self._updated = self._created = clock()
        self.probe = self.max_rate / PROBE_S
        self._base_rate = self.max_rate
        #: The rate the climb after a 429 aims at and stays at (``AIM`` x the ceiling) until ``FORGET_S`` after it.
        self._aim = self.max_rate
        self._throttled_at = -math.inf
        self._recover_from = -math.inf
        self._blocked_until = -math.inf
        self._decreased_at = -math.inf
        #: When recent tokens were granted (the last ``USED_WINDOW_S``, voided ones too: an upper
        #: bound): the rate really used.
        self._grants: deque[float] = deque()
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
        """Climb from the base to the aim and stay; past the quiet hour the aim rises at the probe's pace."""
        climbed = self._base_rate + self.recovery * max(0.0, now - self._recover_from)
        aim = self._aim + self.probe * max(0.0, now - self._throttled_at - FORGET_S)
        return min(self.max_rate, climbed, aim)

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
            grants = self._grants
            grants.append(now + wait)
            # Only the last USED_WINDOW_S is ever read: without this, a triggerer's budget kept every grant of
            # its life (15 a second, about 100 MB a week).
            while grants[0] < now - USED_WINDOW_S:
                grants.popleft()
            return wait, self.generation

    def _used_rate(self, now: float) -> float | None:
        """Tokens per second granted over the last ``USED_WINDOW_S`` (since the last block ended, if later);
        ``None`` when that span or the count is too small to tell."""
        start = max(now - USED_WINDOW_S, self._recover_from, self._created)
        grants = self._grants
        while grants and grants[0] < now - USED_WINDOW_S:
            grants.popleft()
        span = now - start
        used = sum(1 for t in grants if start <= t <= now)
        return used / span if span >= USED_WINDOW_S / 4 and used >= 2 else None

    def rate_limited(self, retry_after: float | None = None, *, sent_at: float | None = None) -> None:
        """Baseten answered 429: halve the rate (once per round), aim the climb back below the rate it had (no probe
        past that aim for ``FORGET_S``), and hand out no token before ``retry_after``."""
        with self._mutex:
            now = self._clock()
            self._refill(now)
            block = min(MAX_BLOCK_S, retry_after) if retry_after else 0.0
            self._blocked_until = max(self._blocked_until, now + block)
            if sent_at is None or sent_at > self._decreased_at:
                used = self._used_rate(now)
                ceiling = self._rate_at(now) if used is None else min(self._rate_at(now), used)
                self._base_rate = max(self.min_rate, ceiling * DECREASE)
                self._aim = max(self._base_rate, ceiling * AIM)
                self._decreased_at = now
            self._throttled_at = now
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

    # --- grouped grants (branch asyncgrid: the batch trigger's reads per wake-up) --------------------------------

    async def acquire_many(self, count: int) -> float:
        """Wait once for ``count`` tokens (one sleep, not ``count``); the clock reading at which they were granted.

        The tokens are reserved together in arrival order, as ``count`` calls of :meth:`acquire` would be, and used
        together: keep ``count`` within :attr:`burst` so the group lands inside what the bucket releases anyway.
        """
        while True:
            wait, generation = 0.0, self.generation
            for _ in range(max(1, count)):
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
    limit: float | None = None,
) -> TokenBucket:
    """The one sync budget of this process for ``key`` (the connection settings), created on first use.

    ``limit``: the server's requests per second; the burst is cut so that ``rate + burst`` (the most any one
    second can hold) stays within it (at least one token: a bucket needs one).
    """
    burst = status_burst(rate) if limit is None else max(1.0, min(status_burst(rate), limit - rate))
    with _SYNC_LOCK:
        bucket = _SYNC_BUCKETS.get(key)
        if bucket is None:
            bucket = _SYNC_BUCKETS[key] = TokenBucket(rate, burst=burst, clock=clock, sleep=sleep)
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

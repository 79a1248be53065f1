"""Emulated time: a clock that runs faster than the wall (or only when told) and the timers that fire on it.

Everything time-based in the emulator (cold starts, scale to zero, a model "working" for N seconds, queue expiry,
status retention) is a timer on :class:`Scheduler`, keyed by *emulated* epoch seconds. With a :class:`ScaledClock`
a driver task fires timers as the scaled time reaches them; with a :class:`ManualClock` time stands still until
:meth:`Scheduler.advance` steps it, firing every timer on the way in order, so tests never sleep on the wall clock.
Both clocks can jump ahead (``Emulator.advance``), e.g. past a one-hour retention.

Compression keeps the order of events a client sees: what a client waits through (cold starts, model work,
queueing) runs ``time_scale`` times faster, but state a client is expected to catch with its own wall-clock polling
(a deployment that is up before it scales to zero, a finished request's status within its retention) stays visible
for at least ``min(delay, visible_floor)`` wall seconds, as it would on Baseten (see :meth:`Scheduler.hold`).

All scheduler methods run on the emulator's event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Event-loop turns given to woken coroutines after each timer during :meth:`Scheduler.advance`.
_SETTLE_TURNS = 25


class Stopped(Exception):
    """Raised in coroutines sleeping on a scheduler that was cleared (the emulator is stopping or resetting)."""


class Clock:
    """Emulated epoch seconds. Subclasses decide how it moves; :meth:`jump_to` only ever moves it forward."""

    #: Emulated seconds per wall second (informational for a manual clock: it is used to scale wall-time budgets).
    time_scale: float = 1.0
    #: Whether time moves by itself (a manual clock only moves through ``advance``).
    running: bool = True

    def now(self) -> float:
        raise NotImplementedError

    def jump_to(self, when: float) -> None:
        raise NotImplementedError

    def to_wall(self, seconds: float) -> float | None:
        """Wall seconds that ``seconds`` of emulated time take; ``None`` for a manual clock (it does not run)."""
        raise NotImplementedError


class ScaledClock(Clock):
    """Runs ``time_scale`` emulated seconds per wall second from ``start`` (default: the wall time now).

    ``monotonic`` is the wall clock it follows (tests inject a fake one).
    """

    def __init__(
        self,
        time_scale: float = 1.0,
        *,
        start: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = float(time_scale)
        self._start = time.time() if start is None else start
        self._monotonic = monotonic
        self._mono0 = monotonic()
        self._offset = 0.0

    def now(self) -> float:
        return self._start + (self._monotonic() - self._mono0) * self.time_scale + self._offset

    def jump_to(self, when: float) -> None:
        self._offset += max(0.0, when - self.now())

    def to_wall(self, seconds: float) -> float | None:
        return max(0.0, seconds) / self.time_scale


class ManualClock(Clock):
    """Stands still until :meth:`jump_to` (through ``Emulator.advance``) moves it."""

    running = False

    def __init__(self, *, start: float | None = None, time_scale: float = 1.0) -> None:
        self._now = time.time() if start is None else start
        self.time_scale = float(time_scale)

    def now(self) -> float:
        return self._now

    def jump_to(self, when: float) -> None:
        self._now = max(self._now, when)

    def to_wall(self, seconds: float) -> float | None:
        return None


@dataclass(order=True)
class Timer:
    """A callback due at an emulated time; :meth:`cancel` makes it a no-op."""

    when: float
    seq: int
    callback: Callable[[], object] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


#: Wall seconds that state a client polls for stays visible at least (capped by its own emulated duration): above
#: the default poll intervals of every waiter (wake 10 s, async predict 30 s +/- 25 %, sensor ``poke_interval`` 60 s).
VISIBLE_FLOOR_SECONDS = 120.0


class Scheduler:
    """Timers on emulated time, fired in order on the event loop (by :meth:`drive` or :meth:`advance`).

    ``visible_floor``: wall seconds for :meth:`hold` (0: pure compression).
    """

    def __init__(self, clock: Clock, *, visible_floor: float = 0.0) -> None:
        self.clock = clock
        self.visible_floor = max(0.0, visible_floor)
        self._heap: list[Timer] = []
        self._sleepers: set[asyncio.Future[None]] = set()
        self._seq = itertools.count()
        self._changed: asyncio.Event | None = None

    def now(self) -> float:
        return self.clock.now()

    def hold(self, seconds: float) -> float:
        """Emulated seconds that state meant to last ``seconds`` stays visible to a client polling on the wall clock.

        On a running clock: ``seconds``, but never less than ``min(seconds, visible_floor)`` wall seconds, so a
        900 s scale-down delay at time scale 200 lasts 120 wall seconds (not 4.5) and at time scale 1 exactly 900.
        A manual clock moves only when a test says so: no floor.
        """
        if not self.clock.running:
            return seconds
        return max(seconds, min(seconds, self.visible_floor) * self.clock.time_scale)

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        timer = Timer(when, next(self._seq), callback)
        if not self._heap or timer < self._heap[0]:
            self._wake_driver()
        heapq.heappush(self._heap, timer)
        return timer

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        return self.call_at(self.now() + max(0.0, delay), callback)

    async def sleep(self, delay: float) -> None:
        """Wait ``delay`` emulated seconds (returns at once for ``delay <= 0``)."""
        if delay <= 0:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self.call_later(delay, lambda: resolve(future, None))
        self._sleepers.add(future)
        try:
            await future
        finally:
            timer.cancel()
            self._sleepers.discard(future)

    def next_due(self) -> float | None:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].when if self._heap else None

    def run_due(self) -> int:
        """Fire every timer due by now, in order; returns how many fired."""
        fired = 0
        now = self.now()
        while self._heap and self._heap[0].when <= now:
            timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            fired += 1
            try:
                timer.callback()
            except Exception:
                log.exception("Emulator timer %r failed", timer.callback)
        return fired

    def _wake_driver(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def drive(self) -> None:
        """Fire timers as a running clock reaches them (a manual clock only moves through :meth:`advance`)."""
        self._changed = asyncio.Event()
        while True:
            self.run_due()
            due = self.next_due()
            wait = None if due is None else self.clock.to_wall(due - self.now())
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=wait)

    async def advance(self, seconds: float) -> None:
        """Move emulated time forward by ``seconds``, firing due timers one at a time at their own times.

        After each timer the woken coroutines get a few loop turns, so a chain such as "cold start ends, the parked
        request runs, the model sleeps 5 s" unfolds within one call.
        """
        target = self.now() + max(0.0, seconds)
        while True:
            due = self.next_due()
            if due is None or due > target:
                break
            self.clock.jump_to(due)
            self.run_due()
            await settle()
        self.clock.jump_to(target)
        self.run_due()
        await settle()
        self._wake_driver()

    def clear(self) -> None:
        """Drop every timer; coroutines in :meth:`sleep` get :class:`Stopped`."""
        for timer in self._heap:
            timer.cancel()
        self._heap.clear()
        for future in list(self._sleepers):
            if not future.done():
                future.set_exception(Stopped())


def resolve(future: asyncio.Future[T], value: T) -> None:
    """Set ``future``'s result unless it is already done (a timer and an event may race to it)."""
    if not future.done():
        future.set_result(value)


async def settle(turns: int = _SETTLE_TURNS) -> None:
    """Give other tasks on this loop ``turns`` chances to run (work woken by a timer finishes its CPU-bound part)."""
    for _ in range(turns):
        await asyncio.sleep(0)

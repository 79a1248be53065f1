"""An event loop on virtual time, for tests of many concurrent waiters (imported as ``virtual_time``).

Whenever the loop would wait for its next timer, its clock jumps to that timer instead: every ``asyncio.sleep``,
``asyncio.timeout`` and poll budget wait happens in order and at once, and no wall-clock time passes.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self._now = start
        self._in_threads = 0
        real_select = self._selector.select  # type: ignore[attr-defined]

        def select(timeout: float | None = None) -> Any:
            events = real_select(0)
            if events or timeout == 0:
                return events
            if timeout is None or self._in_threads:
                # Only real I/O can wake the loop, or a thread is working for it (a connection lookup): time stands
                # still until it reports back, so it never looks slow in virtual time.
                return real_select(None)
            # Jump exactly to the next timer: "now + timeout" can round below it at epoch magnitudes.
            scheduled = self._scheduled  # type: ignore[attr-defined]
            self._now = max(self._now + timeout, scheduled[0].when() if scheduled else self._now)
            self._now = math.nextafter(self._now, math.inf)  # the loop runs timers strictly before "now"
            return events

        self._selector.select = select  # type: ignore[attr-defined]

    def time(self) -> float:
        return self._now

    def run_in_executor(self, executor: Any, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:  # type: ignore[override]
        future = super().run_in_executor(executor, func, *args)
        self._in_threads += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _future: asyncio.Future[Any]) -> None:
        self._in_threads -= 1


def run_virtual(main: Callable[[VirtualTimeLoop], Awaitable[T]], *, start: float = 0.0) -> T:
    """Run ``main(loop)`` to the end on a fresh virtual-time loop (its ``loop.time`` starts at ``start``)."""
    loop = VirtualTimeLoop(start)
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def max_in_window(times: list[float], window: float) -> int:
    """The most events in any half-open window ``[t, t + window)`` (a sliding window, like a server's limit)."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best

"""Two drivers for an I/O-free waiting loop, so each loop is written once for the worker and the triggerer.

A step generator yields :class:`Sleep` (answered with ``None``) or :class:`Read`; the driver answers a read with
what ``reads[read.key](read.time_left)`` returned or the ``Exception`` it raised, and returns what the generator
returns. ``time_left`` bounds the read: the async driver cancels it then (``TimeoutError``), a sync read passes it
to the hook, whose request timeouts and retries end by then. ``CancelledError`` is not an ``Exception``: a triggerer
that cancels the wait stops it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["READ", "OneReadWatch", "Read", "Sleep", "adrive", "drive", "time_left"]

R = TypeVar("R")
#: What a :class:`OneReadWatch` reads on each poll (a deployment record, an environment record, ...).
RecordT = TypeVar("RecordT")
#: The key of a :class:`OneReadWatch`'s one read.
READ = "read"


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Read:
    """Ask the driver for ``reads[key]``; ``time_left``: seconds until the wait's deadline (``None``: no deadline)."""

    key: str
    time_left: float | None = None


def time_left(deadline: float | None, now: float) -> float | None:
    """Seconds until ``deadline`` (never negative), or ``None`` without one."""
    return None if deadline is None else max(0.0, deadline - now)


async def _drive(
    steps: Generator[Any, Any, R],
    read: Callable[[str, float | None], Awaitable[object]],
    sleep: Callable[[float], Awaitable[object]],
) -> R:
    """The one loop behind :func:`drive` and :func:`adrive`."""
    reply: Any = None
    while True:
        try:
            op = steps.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        reply = None
        if isinstance(op, Sleep):
            await sleep(op.seconds)
            continue
        try:
            reply = await read(op.key, op.time_left)
        except Exception as exc:
            reply = exc


def drive(
    steps: Generator[Any, Any, R],
    reads: Mapping[str, Callable[[float | None], object]],
    sleep: Callable[[float], object],
) -> R:
    """Run ``steps`` with blocking reads and sleeps (the worker); no event loop is involved."""

    async def read(key: str, left: float | None) -> object:
        return reads[key](left)

    async def blocking_sleep(seconds: float) -> None:
        sleep(seconds)

    # Nothing in the loop suspends, so one send() runs the coroutine to its end.
    coro = _drive(steps, read, blocking_sleep)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("unreachable: the sync reads and sleep never suspend")


async def adrive(
    steps: Generator[Any, Any, R],
    reads: Mapping[str, Callable[[], Awaitable[object]]],
    sleep: Callable[[float], Awaitable[object]],
) -> R:
    """Run ``steps`` with awaited reads and sleeps (the triggerer); a read is cancelled when its time is up."""

    async def read(key: str, left: float | None) -> object:
        async with asyncio.timeout(left):
            return await reads[key]()

    return await _drive(steps, read, sleep)


class OneReadWatch(Generic[RecordT]):
    """A wait whose loop, :meth:`_steps`, reads one kind of record (``Read(READ)``): run on a worker or a triggerer.

    Subclasses write :meth:`_steps` once; :meth:`run` and :meth:`arun` drive it the two ways.
    """

    def _steps(self, clock: Callable[[], float]) -> Generator[Read | Sleep, RecordT | Exception | None, dict[str, Any]]:
        raise NotImplementedError

    def run(
        self,
        read: Callable[[float | None], RecordT],
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = time.sleep,
    ) -> dict[str, Any]:
        """Wait on this thread (an operator on a worker); returns the terminal event.

        ``read(time_left)`` must end within ``time_left`` seconds (the hook's ``time_left=`` does that).
        """
        return drive(self._steps(clock), {READ: read}, sleep)

    async def arun(
        self,
        read: Callable[[], Awaitable[RecordT]],
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> dict[str, Any]:
        """Wait on the event loop (a trigger); returns the terminal event. ``CancelledError`` propagates."""
        return await adrive(self._steps(clock), {READ: read}, sleep)

"""Two drivers for an I/O-free waiting loop, so each loop is written once for the worker and the triggerer.

A step generator yields :class:`Sleep` (answered with ``None``) or :class:`Read`; the driver answers a read with
what ``reads[read.key](read.time_left)`` returned or the ``Exception`` it raised, and returns what the generator
returns. ``time_left`` bounds the read: the async driver cancels it then (``TimeoutError``), a sync read passes it
to the hook, whose request timeouts and retries end by then. ``CancelledError`` is not an ``Exception``: a triggerer
that cancels the wait stops it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Read", "Sleep", "adrive", "drive", "time_left"]

R = TypeVar("R")


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


def drive(
    steps: Generator[Any, Any, R],
    reads: Mapping[str, Callable[[float | None], object]],
    sleep: Callable[[float], object],
) -> R:
    """Run ``steps`` with blocking reads and sleeps (the worker)."""
    reply: Any = None
    while True:
        try:
            op = steps.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        reply = None
        if isinstance(op, Sleep):
            sleep(op.seconds)
            continue
        try:
            reply = reads[op.key](op.time_left)
        except Exception as exc:
            reply = exc


async def adrive(
    steps: Generator[Any, Any, R],
    reads: Mapping[str, Callable[[], Awaitable[object]]],
    sleep: Callable[[float], Awaitable[object]],
) -> R:
    """Run ``steps`` with awaited reads and sleeps (the triggerer); a read is cancelled when its time is up."""
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
            async with asyncio.timeout(op.time_left):
                reply = await reads[op.key]()
        except Exception as exc:
            reply = exc

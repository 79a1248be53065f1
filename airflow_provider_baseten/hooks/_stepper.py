"""Two drivers for an I/O-free waiting loop, so each loop is written once for the worker and the triggerer.

A step generator yields :class:`Sleep` (answered with ``None``) or a read key (a ``str``); the driver answers a key
with what ``reads[key]()`` returned or the ``Exception`` it raised, and returns what the generator returns.
``CancelledError`` is not an ``Exception``: a triggerer that cancels the wait stops it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Sleep", "adrive", "drive"]

R = TypeVar("R")


@dataclass(frozen=True)
class Sleep:
    seconds: float


def drive(
    steps: Generator[Any, Any, R], reads: Mapping[str, Callable[[], object]], sleep: Callable[[float], object]
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
            reply = reads[op]()
        except Exception as exc:
            reply = exc


async def adrive(
    steps: Generator[Any, Any, R],
    reads: Mapping[str, Callable[[], Awaitable[object]]],
    sleep: Callable[[float], Awaitable[object]],
) -> R:
    """Run ``steps`` with awaited reads and sleeps (the triggerer)."""
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
            reply = await reads[op]()
        except Exception as exc:
            reply = exc

"""``asyncio.run`` for an operator on a worker, where a signal's exception must end the run, never vanish.

Airflow delivers ``execution_timeout`` as ``AirflowTaskTimeout`` raised by a SIGALRM handler: at whatever
bytecode the main thread is on. Inside a task's step that exception ends the task, but inside a plain event-loop
callback (a ``call_soon`` flush, a transport's ``data_received``, a future's done callback) asyncio logs
"Exception in callback" and carries on, so the timeout is lost and the try runs on with its requests in flight.

:func:`run_to_end` closes that hole. While the loop runs on the main thread, each Python signal handler (except
SIGINT, which asyncio already turns into a cancel) is wrapped: an exception the handler raises is kept and the
main task is cancelled, so every ``finally`` runs (in-flight items are settled, the journal is flushed), and the
exception is raised once the loop has ended. A handler that raises nothing (Airflow's SIGTERM handler only calls
``on_kill``) behaves as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any, TypeVar

__all__ = ["run_to_end"]

T = TypeVar("T")

Handler = Callable[[int, FrameType | None], Any]


def run_to_end(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` like ``asyncio.run``; an exception from a signal handler cancels it and is raised after."""
    if threading.current_thread() is not threading.main_thread():
        return asyncio.run(main)  # signal handlers only ever run on the main thread
    return asyncio.run(_guarded(main))


async def _guarded(main: Coroutine[Any, Any, T]) -> T:
    caught: list[BaseException] = []
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert task is not None

    def keep(exc: BaseException) -> None:
        if not caught:
            caught.append(exc)
            loop.call_soon_threadsafe(task.cancel)

    with _signal_exceptions_to(keep):
        try:
            result = await main
        except asyncio.CancelledError:
            if caught:
                raise caught[0] from None
            raise
    if caught:  # the cancel was absorbed on the way out (a finally that waits under suppress): raise it anyway
        raise caught[0]
    return result


@contextlib.contextmanager
def _signal_exceptions_to(keep: Callable[[BaseException], None]) -> Iterator[None]:
    """Wrap every Python-level signal handler but SIGINT's so that what it raises goes to ``keep`` instead."""
    wrapped: dict[signal.Signals, tuple[Handler, Handler]] = {}
    for signum in signal.valid_signals():
        handler = signal.getsignal(signum)
        if signum == signal.SIGINT or not callable(handler):
            continue
        guard = _guarding(handler, keep)
        signal.signal(signum, guard)
        wrapped[signum] = (handler, guard)
    try:
        yield
    finally:
        for signum, (original, guard) in wrapped.items():
            if signal.getsignal(signum) is guard:  # not replaced meanwhile by someone else: put the original back
                signal.signal(signum, original)


def _guarding(original: Handler, keep: Callable[[BaseException], None]) -> Handler:
    def guard(number: int, frame: FrameType | None) -> None:
        try:
            original(number, frame)
        except BaseException as exc:  # AirflowTaskTimeout is not an Exception
            keep(exc)

    return guard

"""run_to_end: an exception a signal handler raises (execution_timeout's) ends the run wherever it lands."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_baseten.operators._event_loop import run_to_end


class WorkerDied(BaseException):
    """Not an ``Exception``: like ``AirflowTaskTimeout`` or ``SystemExit`` landing wherever the worker is."""


@contextlib.contextmanager
def on_sigusr1(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """SIGUSR1 handled by ``handler`` inside the block; the previous handler put back after it."""
    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


@pytest.fixture
def sigusr1_raises() -> Iterator[list[int]]:
    """SIGUSR1's handler raises ``WorkerDied``, as Airflow's SIGALRM handler raises ``AirflowTaskTimeout``."""
    delivered: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        delivered.append(signum)
        raise WorkerDied

    with on_sigusr1(handler):
        yield delivered


async def _signal_in_a_callback_then_tick(ticks: list[int], cleanup: list[str]) -> str:
    """A plain loop callback (not a task step) gets the signal, then the task goes on for 50 ticks."""
    asyncio.get_running_loop().call_soon(signal.raise_signal, signal.SIGUSR1)
    try:
        for tick in range(50):
            await asyncio.sleep(0)
            ticks.append(tick)
        return "ran to the end"
    finally:
        cleanup.append("finally ran")


def test_a_signal_exception_in_a_loop_callback_ends_the_run(sigusr1_raises: list[int]) -> None:
    ticks: list[int] = []
    cleanup: list[str] = []
    with pytest.raises(WorkerDied):
        run_to_end(_signal_in_a_callback_then_tick(ticks, cleanup))
    assert sigusr1_raises == [signal.SIGUSR1]
    assert cleanup == ["finally ran"]
    assert len(ticks) < 5  # cancelled within a tick or two, not after the task's own 50


def test_plain_asyncio_run_loses_it_which_is_the_hole(sigusr1_raises: list[int]) -> None:
    """Why run_to_end exists: asyncio logs the callback's exception and the task runs to its end."""
    ticks: list[int] = []
    assert asyncio.run(_signal_in_a_callback_then_tick(ticks, [])) == "ran to the end"
    assert sigusr1_raises == [signal.SIGUSR1]
    assert len(ticks) == 50


def test_an_absorbed_cancel_still_raises_the_signal_exception(sigusr1_raises: list[int]) -> None:
    async def main() -> str:
        with contextlib.suppress(asyncio.CancelledError):  # cleanup that must not be cut short
            await asyncio.sleep(0)
            signal.raise_signal(signal.SIGUSR1)
            await asyncio.sleep(0)
        return "done"

    with pytest.raises(WorkerDied):
        run_to_end(main())


def test_a_handler_that_raises_nothing_changes_nothing_and_handlers_are_put_back() -> None:
    calls: list[int] = []

    def on_kill_like(signum: int, _frame: Any) -> None:
        calls.append(signum)  # Airflow's SIGTERM handler: calls on_kill, raises nothing

    async def main() -> str:
        signal.raise_signal(signal.SIGUSR1)
        await asyncio.sleep(0)
        return "result"

    with on_sigusr1(on_kill_like):
        assert run_to_end(main()) == "result"
        assert calls == [signal.SIGUSR1]
        assert signal.getsignal(signal.SIGUSR1) is on_kill_like


def test_off_the_main_thread_it_is_asyncio_run() -> None:
    async def main() -> str:
        return "from a thread"

    results: list[str] = []
    thread = threading.Thread(target=lambda: results.append(run_to_end(main())))
    thread.start()
    thread.join()
    assert results == ["from a thread"]

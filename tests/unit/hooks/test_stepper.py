"""The two step drivers: the same generator gets the same replies on a worker (drive) and a triggerer (adrive)."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

from airflow_provider_baseten.hooks._stepper import Read, Sleep, adrive, drive


def steps() -> Generator[Read | Sleep, Any, list[Any]]:
    """Read, sleep, read again with no time left; the generator returns every reply it got."""
    seen: list[Any] = [(yield Read("a", 5.0))]
    seen.append((yield Sleep(2.0)))
    seen.append((yield Read("b", 0.0)))
    return seen


def test_drive_answers_reads_and_sleeps_and_hands_errors_back() -> None:
    lefts: list[float | None] = []
    sleeps: list[float] = []

    def a(left: float | None) -> object:
        lefts.append(left)
        return "A"

    def fail(left: float | None) -> object:
        lefts.append(left)
        raise ValueError("boom")

    seen = drive(steps(), {"a": a, "b": fail}, sleeps.append)

    assert seen[:2] == ["A", None]
    assert isinstance(seen[2], ValueError)
    assert lefts == [5.0, 0.0]
    assert sleeps == [2.0]


def test_adrive_gives_the_same_replies_and_cancels_a_read_at_its_time_left() -> None:
    sleeps: list[float] = []

    async def a() -> object:
        return "A"

    async def never() -> object:
        await asyncio.Event().wait()  # never set: only the read's time_left (0 s) ends it
        return "never"

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    seen = asyncio.run(adrive(steps(), {"a": a, "b": never}, record_sleep))

    assert seen[:2] == ["A", None]
    assert isinstance(seen[2], TimeoutError)
    assert sleeps == [2.0]

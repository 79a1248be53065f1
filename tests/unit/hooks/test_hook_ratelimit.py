"""The status-poll token bucket, on an injected clock whose sleep advances it (no wall-clock waits)."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_baseten.hooks.baseten import shared_status_bucket
from airflow_provider_baseten.hooks.connection import ClientSettings
from airflow_provider_baseten.hooks.ratelimit import AsyncTokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def bucket(clock: FakeClock, rate: float, burst: float | None = None) -> AsyncTokenBucket:
    return AsyncTokenBucket(rate, burst, clock=clock, sleep=clock.sleep)


async def test_burst_passes_without_waiting(clock: FakeClock) -> None:
    b = bucket(clock, rate=10, burst=3)
    for _ in range(3):
        await b.acquire()
    assert clock.sleeps == []


async def test_beyond_the_burst_waits_for_one_token(clock: FakeClock) -> None:
    b = bucket(clock, rate=10, burst=2)
    for _ in range(3):
        await b.acquire()
    assert clock.sleeps == [pytest.approx(0.1)]


async def test_sustained_rate(clock: FakeClock) -> None:
    b = bucket(clock, rate=20)
    start = clock.now
    for _ in range(20 + 40):
        await b.acquire()
    assert clock.now - start == pytest.approx(2.0)  # 20 burst, then 40 tokens at 20/s


async def test_idle_time_refills_up_to_the_burst_only(clock: FakeClock) -> None:
    b = bucket(clock, rate=10, burst=2)
    await b.acquire()
    await b.acquire()
    clock.now += 60
    for _ in range(2):
        await b.acquire()
    assert clock.sleeps == []
    await b.acquire()
    assert clock.sleeps == [pytest.approx(0.1)]


def test_default_burst_is_the_rate_and_at_least_one(clock: FakeClock) -> None:
    assert bucket(clock, rate=15).burst == 15
    assert bucket(clock, rate=0.5).burst == 1


@pytest.mark.parametrize("rate", [0, -1])
def test_rate_must_be_positive(clock: FakeClock, rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        bucket(clock, rate=rate)


async def test_concurrent_waiters_are_all_served_at_the_rate(clock: FakeClock) -> None:
    b = bucket(clock, rate=10, burst=1)
    order: list[int] = []

    async def poll(i: int) -> None:
        await b.acquire()
        order.append(i)

    await asyncio.gather(*(poll(i) for i in range(5)))
    assert order == [0, 1, 2, 3, 4]  # arrival order: nobody starves
    assert sum(clock.sleeps) == pytest.approx(0.4)


async def test_shared_status_bucket_is_per_settings_and_uses_their_rate() -> None:
    a = ClientSettings(api_key="k1", status_rate_limit=7)
    assert shared_status_bucket(a) is shared_status_bucket(ClientSettings(api_key="k1", status_rate_limit=7))
    assert shared_status_bucket(a).rate == 7
    assert shared_status_bucket(a) is not shared_status_bucket(ClientSettings(api_key="k2", status_rate_limit=7))

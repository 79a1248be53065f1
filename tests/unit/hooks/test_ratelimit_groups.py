"""``AsyncTokenBucket.acquire_many``: one wait for a group of tokens (the batch trigger's reads per wake-up)."""

from __future__ import annotations

import pytest

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


async def test_a_group_waits_once_for_its_last_token() -> None:
    clock = FakeClock()
    bucket = AsyncTokenBucket(10, 3, clock=clock, sleep=clock.sleep)
    assert await bucket.acquire_many(3) == 100.0  # the burst: no wait
    granted = await bucket.acquire_many(3)
    assert clock.sleeps == pytest.approx([0.3])  # one sleep until the third token, not three
    assert granted == pytest.approx(100.3)
    await bucket.acquire()
    assert clock.sleeps[1:] == pytest.approx([0.1])  # the group's tokens are spent: the next waits its turn


async def test_a_429_during_the_wait_queues_the_group_again() -> None:
    clock = FakeClock()
    bucket = AsyncTokenBucket(10, 1, clock=clock, sleep=clock.sleep)
    await bucket.acquire()
    real_sleep = clock.sleep

    async def sleep_then_429(seconds: float) -> None:
        await real_sleep(seconds)
        if len(clock.sleeps) == 1:
            bucket.rate_limited(2.0)  # another poll met a 429 meanwhile: the reserved tokens are void

    bucket._sleep = sleep_then_429
    granted = await bucket.acquire_many(2)
    assert len(clock.sleeps) == 2  # waited again behind the Retry-After
    assert granted >= 100.2 + 2.0

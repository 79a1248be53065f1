"""The emulated clocks and the scheduler that fires timers on them."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from airflow_provider_baseten.emulator import Emulator
from airflow_provider_baseten.emulator.clock import ManualClock, ScaledClock, Scheduler, Stopped


async def test_manual_clock_fires_timers_in_order_at_their_own_times():
    scheduler = Scheduler(ManualClock(start=1000.0))
    fired: list[tuple[str, float]] = []
    for name, delay in [("b", 20), ("a", 10), ("c", 30)]:
        scheduler.call_later(delay, lambda name=name: fired.append((name, scheduler.now())))

    await scheduler.advance(25)

    assert fired == [("a", 1010.0), ("b", 1020.0)]
    assert scheduler.now() == 1025.0


async def test_sleep_wakes_on_advance_and_chains_unfold_within_one_advance():
    scheduler = Scheduler(ManualClock(start=0.0))
    steps: list[float] = []

    async def worker():
        await scheduler.sleep(5)
        steps.append(scheduler.now())
        await scheduler.sleep(5)  # registered while advance() settles: still fires within it
        steps.append(scheduler.now())

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    await scheduler.advance(10)

    assert steps == [5.0, 10.0]
    assert task.done()


async def test_cancelled_timers_do_not_fire_and_clear_stops_sleepers():
    scheduler = Scheduler(ManualClock(start=0.0))
    fired = []
    scheduler.call_later(1, lambda: fired.append(1)).cancel()
    sleeper = asyncio.create_task(scheduler.sleep(100))
    await asyncio.sleep(0)

    await scheduler.advance(5)
    scheduler.clear()

    assert fired == []
    with pytest.raises(Stopped):
        await sleeper


async def test_scaled_clock_runs_faster_than_the_wall_and_can_jump():
    clock = ScaledClock(1000.0, start=0.0)
    scheduler = Scheduler(clock)
    driver = asyncio.create_task(scheduler.drive())
    try:
        started = time.monotonic()
        await asyncio.wait_for(scheduler.sleep(50), timeout=5)  # 50 ms of wall time
        assert time.monotonic() - started < 2
        before = clock.now()
        clock.jump_to(before + 3600)
        assert clock.now() >= before + 3600
        clock.jump_to(0)  # never backwards
        assert clock.now() >= before + 3600
    finally:
        driver.cancel()


def test_scaled_clock_rejects_a_non_positive_scale():
    with pytest.raises(ValueError, match="time_scale"):
        ScaledClock(0)


@pytest.mark.integration
def test_stop_releases_parked_requests_at_once():
    emulator = Emulator(manual_clock=True).start()
    result: dict = {}

    def parked():
        result["status"] = httpx.post(
            f"{emulator.url}/production/predict",
            headers={"Host": "model-coldstart01.api.baseten.co", "Authorization": "Api-Key emulator-demo-key"},
            json={"text": "x"},
            timeout=10,
        ).status_code

    thread = threading.Thread(target=parked, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while emulator.status("coldstart01") != "WAKING_UP" and time.monotonic() < deadline:
        time.sleep(0.002)
    started = time.monotonic()
    emulator.stop()
    thread.join(10)

    assert time.monotonic() - started < 1.5
    assert result["status"] in (500, 503)

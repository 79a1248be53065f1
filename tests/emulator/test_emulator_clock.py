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


# --- compression that keeps what a client sees (an injected wall clock: no sleeps) -----------------------------


class FakeWall:
    """The wall clock a :class:`ScaledClock` follows, stepped by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def running_scheduler(time_scale: float, visible_floor: float) -> tuple[Scheduler, FakeWall]:
    wall = FakeWall()
    return Scheduler(ScaledClock(time_scale, start=0.0, monotonic=wall), visible_floor=visible_floor), wall


def test_hold_keeps_compressed_state_visible_for_a_wall_clock_floor():
    fast, _ = running_scheduler(200, 120)
    real_time, _ = running_scheduler(1, 120)

    assert fast.hold(900) == 120 * 200  # 120 wall seconds, not 4.5
    assert fast.hold(60) == 60 * 200  # never longer than it lasts on Baseten: 60 wall seconds
    assert real_time.hold(900) == 900  # at time scale 1 the emulator is Baseten's timing exactly
    assert running_scheduler(200, 0)[0].hold(900) == 900  # floor 0: pure compression
    assert Scheduler(ManualClock(start=0.0, time_scale=200), visible_floor=120).hold(900) == 900


def _cold_deployment(scheduler: Scheduler):
    from airflow_provider_baseten.emulator.lifecycle import DeploymentRuntime
    from airflow_provider_baseten.emulator.world import DeploymentSpec, ModelSpec

    spec = DeploymentSpec("cold1", status="SCALED_TO_ZERO", cold_start_seconds=180, scale_down_delay=900)
    return DeploymentRuntime(ModelSpec("cold01", deployments=[spec]), spec, scheduler, created_at=0.0)


def _poll_statuses(scheduler: Scheduler, wall: FakeWall, read, interval: float, reads: int) -> list[str]:
    """What a client reading every ``interval`` wall seconds sees (timers fire every 10 ms, as the driver does)."""
    seen = []
    for _ in range(reads):
        for _ in range(round(interval * 100)):
            wall.now += 0.01
            scheduler.run_due()
        seen.append(read())
    return seen


@pytest.mark.parametrize(
    ("visible_floor", "expected"),
    [
        # the wake operator's default 10 s poll at time scale 200: ACTIVE for 120 wall s, then scaled to zero
        (120.0, ["ACTIVE"] * 12 + ["SCALED_TO_ZERO"] * 2),
        # pure compression: up 0.9 s after the wake and down 4.5 s later, before the first read (issue 16)
        (0.0, ["SCALED_TO_ZERO"] * 14),
    ],
)
def test_a_woken_deployment_stays_up_long_enough_for_a_default_interval_poll(visible_floor, expected):
    scheduler, wall = running_scheduler(200, visible_floor)
    deployment = _cold_deployment(scheduler)

    deployment.wake()
    seen = _poll_statuses(scheduler, wall, lambda: deployment.status.value, interval=10, reads=14)

    assert seen == expected


def test_traffic_restarts_the_floored_scale_down_delay():
    scheduler, wall = running_scheduler(200, 120)
    deployment = _cold_deployment(scheduler)
    deployment.wake()
    _poll_statuses(scheduler, wall, lambda: None, interval=100, reads=1)
    deployment.touch()  # a request 100 wall seconds after the wake

    read = lambda: deployment.status.value  # noqa: E731
    at_200 = _poll_statuses(scheduler, wall, read, interval=100, reads=1)
    at_230 = _poll_statuses(scheduler, wall, read, interval=30, reads=1)

    assert (at_200, at_230) == (["ACTIVE"], ["SCALED_TO_ZERO"])  # 120 wall s after the request, not after the wake


async def test_a_finished_status_outlives_a_sensor_poke_at_time_scale_200():
    from airflow_provider_baseten.emulator.async_queue import AsyncQueue
    from airflow_provider_baseten.emulator.lifecycle import DeploymentRuntime
    from airflow_provider_baseten.emulator.webhooks import WebhookSender
    from airflow_provider_baseten.emulator.world import DeploymentSpec, ModelSpec
    from airflow_provider_baseten.hooks.models import AsyncPredictRequest

    scheduler, wall = running_scheduler(200, 120)
    spec = DeploymentSpec("echo1", min_replicas=1)
    deployment = DeploymentRuntime(ModelSpec("echo01", deployments=[spec]), spec, scheduler, created_at=0.0)
    webhooks = WebhookSender([], timeout=1.0, deliver_external=False)
    queue = AsyncQueue(scheduler, webhooks)  # Baseten's one-hour retention: 18 wall seconds at time scale 200
    try:
        record = queue.submit(deployment, AsyncPredictRequest(model_input={"text": "hi"}))
        for _ in range(50):
            await asyncio.sleep(0)
        assert record.status.value == "SUCCEEDED"

        seen = _poll_statuses(scheduler, wall, lambda: record.request_id in queue.records, interval=60, reads=3)
    finally:
        queue.close()
        await webhooks.aclose()

    assert seen == [True, False, False]  # a 60 s poke sees it once; gone after the 120 s floor

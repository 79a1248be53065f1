"""BasetenDeploymentReadyTrigger: serialization, the polling state machine, one terminal event, and the full
defer -> trigger.run() -> execute_complete cycle, on an injected clock (no wall-clock sleeps).

The trigger polls on the hot path (aiohttp), so Baseten is a real loopback server (:mod:`status_server`).
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from airflow_testing import KEY, T0, FakeClock, set_conn
from status_server import StatusServer
from virtual_time import VirtualTimeLoop, run_virtual

from airflow_provider_baseten.exceptions import BasetenDeploymentError
from airflow_provider_baseten.hooks.readiness import ReadinessWatch, deployment_from_event, format_duration
from airflow_provider_baseten.triggers.deployment import CLASSPATH, BasetenDeploymentReadyTrigger

STATUS_URL = "https://api.baseten.co/v1/models/abc123/deployments/production"
WAKE_URL = "https://model-abc123.api.baseten.co/production/wake"


def record(status: str, **extra: Any) -> dict[str, Any]:
    return {"id": "dep1", "model_id": "abc123", "status": status, **extra}


def statuses(*names: str) -> list[httpx.Response]:
    return [httpx.Response(200, json=record(name)) for name in names]


@pytest.fixture(autouse=True)
def baseten_conn(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch)


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StatusServer]:
    async with StatusServer(monkeypatch) as loopback:
        yield loopback
    loopback.check()


def make_trigger(clock: FakeClock, **kwargs: Any) -> BasetenDeploymentReadyTrigger:
    defaults: dict[str, Any] = {
        "model_id": "abc123",
        "woke_at": T0,
        "deadline": T0 + 1200,
        "poll_interval": 10,
        "last_status": "SCALED_TO_ZERO",
    }
    return BasetenDeploymentReadyTrigger(**{**defaults, **kwargs}, clock=clock.time, sleep=clock.asleep)


async def run_to_end(trigger: BasetenDeploymentReadyTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


# --- serialization ---------------------------------------------------------------------------------------------


def test_serialize_round_trips_json_primitives_only(clock: FakeClock) -> None:
    trigger = make_trigger(
        clock, environment="staging", poll_interval=2.5, stale_read_grace=12, activated=True, baseten_conn_id="bt"
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_baseten.triggers.baseten.BasetenDeploymentReadyTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs  # JSON primitives: no key, no client, no callable
    assert "clock" not in kwargs
    assert "sleep" not in kwargs
    rebuilt = BasetenDeploymentReadyTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert kwargs == {
        "model_id": "abc123",
        "deadline": T0 + 1200,
        "woke_at": T0,
        "baseten_conn_id": "bt",
        "environment": "staging",
        "deployment_id": None,
        "regional": False,
        "poll_interval": 2.5,
        "stale_read_grace": 12.0,
        "last_status": "SCALED_TO_ZERO",
        "activated": True,
    }


def test_classpath_resolves_to_this_class() -> None:
    module = importlib.import_module(CLASSPATH.rsplit(".", 1)[0])  # an ImportError fails: triggerers load this
    assert getattr(module, CLASSPATH.rsplit(".", 1)[1]) is BasetenDeploymentReadyTrigger


def test_only_the_new_optional_kwargs_have_defaults() -> None:
    """The minimal kwargs an older serialized trigger carries still build a trigger."""
    trigger = BasetenDeploymentReadyTrigger(model_id="abc123", deadline=T0, woke_at=T0)
    assert trigger.baseten_conn_id == "baseten_default"
    assert trigger.last_status is None


# --- polling ---------------------------------------------------------------------------------------------------


async def test_cold_start_succeeds_with_one_event_and_timed_transitions(server: StatusServer, clock: FakeClock) -> None:
    route = server.get(STATUS_URL).mock(
        side_effect=statuses("SCALED_TO_ZERO", "WAKING_UP", "WAKING_UP", "LOADING_MODEL", "ACTIVE")
    )
    events = await run_to_end(make_trigger(clock))
    assert len(events) == 1
    event = events[0]
    assert event["status"] == "success"
    assert event["deployment"]["status"] == "ACTIVE"
    assert [(t["from"], t["to"], t["after_s"]) for t in event["transitions"]] == [
        ("SCALED_TO_ZERO", "WAKING_UP", 10.0),
        ("WAKING_UP", "LOADING_MODEL", 30.0),
        ("LOADING_MODEL", "ACTIVE", 40.0),
    ]
    assert route.call_count == 5
    assert clock.sleeps == [10, 10, 10, 10]


async def test_trigger_only_reads(server: StatusServer, clock: FakeClock) -> None:
    server.get(STATUS_URL).mock(side_effect=statuses("WAKING_UP", "ACTIVE"))
    wake = server.post(WAKE_URL).respond(202)
    await run_to_end(make_trigger(clock))
    assert not wake.called
    assert {call.method for call in server.calls} == {"GET"}


async def test_deadline_is_checked_before_the_first_read(server: StatusServer, clock: FakeClock) -> None:
    route = server.get(STATUS_URL).respond(200, json=record("ACTIVE"))
    clock.now = T0 + 1200
    events = await run_to_end(make_trigger(clock))
    assert [event["status"] for event in events] == ["timeout"]
    assert not route.called


async def test_deadline_cuts_the_last_sleep_short(server: StatusServer, clock: FakeClock) -> None:
    server.get(STATUS_URL).respond(200, json=record("WAKING_UP"))
    events = await run_to_end(make_trigger(clock, deadline=T0 + 25, poll_interval=10))
    assert events[0]["status"] == "timeout"
    assert clock.sleeps == [10, 10, 5]
    assert "did not become ACTIVE within 25 s" in events[0]["message"]
    assert "last status WAKING_UP" in events[0]["message"]


@pytest.mark.parametrize("status", ["BUILD_FAILED", "BUILD_STOPPED", "DEPLOY_FAILED", "FAILED"])
async def test_failed_statuses_end_at_once(server: StatusServer, clock: FakeClock, status: str) -> None:
    route = server.get(STATUS_URL).respond(200, json=record(status))
    events = await run_to_end(make_trigger(clock))
    assert events[0]["status"] == "failed"
    assert status in events[0]["message"]
    assert route.call_count == 1


async def test_inactive_fails_fast_unless_just_activated(server: StatusServer, clock: FakeClock) -> None:
    server.get(STATUS_URL).respond(200, json=record("INACTIVE"))
    events = await run_to_end(make_trigger(clock, last_status="ACTIVE"))
    assert events[0]["status"] == "failed"
    assert "activate_if_inactive=True" in events[0]["message"]


async def test_inactive_right_after_an_activation_is_stale(server: StatusServer, clock: FakeClock) -> None:
    server.get(STATUS_URL).mock(side_effect=statuses("INACTIVE", "INACTIVE", "WAKING_UP", "ACTIVE"))
    events = await run_to_end(make_trigger(clock, activated=True, last_status="INACTIVE", stale_read_grace=30))
    assert events[0]["status"] == "success"


async def test_inactive_past_the_grace_after_an_activation_fails(server: StatusServer, clock: FakeClock) -> None:
    server.get(STATUS_URL).respond(200, json=record("INACTIVE"))
    events = await run_to_end(make_trigger(clock, activated=True, last_status="INACTIVE", stale_read_grace=15))
    assert events[0]["status"] == "failed"
    assert "activation did not take" in events[0]["message"]
    assert clock.now - T0 == 20  # reads at 0, 10 (within grace), 20 (past it)


async def test_scaled_to_zero_is_stale_within_the_grace_then_fails(server: StatusServer, clock: FakeClock) -> None:
    server.get(STATUS_URL).respond(200, json=record("SCALED_TO_ZERO"))
    events = await run_to_end(make_trigger(clock, stale_read_grace=30))
    assert events[0]["status"] == "failed"
    assert "the wake did not take" in events[0]["message"]
    assert clock.now - T0 == 40


async def test_unhealthy_keeps_waiting_and_the_timeout_says_so(server: StatusServer, clock: FakeClock) -> None:
    server.get(STATUS_URL).respond(200, json=record("UNHEALTHY"))
    events = await run_to_end(make_trigger(clock, deadline=T0 + 60))
    assert events[0]["status"] == "timeout"
    assert "UNHEALTHY" in events[0]["message"]


async def test_unhealthy_can_recover(server: StatusServer, clock: FakeClock) -> None:
    server.get(STATUS_URL).mock(side_effect=statuses("UNHEALTHY", "UNHEALTHY", "ACTIVE"))
    events = await run_to_end(make_trigger(clock))
    assert events[0]["status"] == "success"


async def test_unknown_status_keeps_waiting(server: StatusServer, clock: FakeClock) -> None:
    server.get(STATUS_URL).mock(side_effect=statuses("SOMETHING_NEW", "ACTIVE"))
    events = await run_to_end(make_trigger(clock))
    assert events[0]["status"] == "success"


@pytest.mark.parametrize(
    "blip",
    [
        httpx.Response(503),
        httpx.Response(502),
        httpx.Response(500),
        httpx.Response(429, headers={"retry-after": "1"}),
        httpx.RemoteProtocolError("hung up"),
    ],
    ids=["503", "502", "500", "429", "hang-up"],
)
async def test_one_transient_blip_never_fails(
    server: StatusServer, clock: FakeClock, blip: httpx.Response | Exception
) -> None:
    server.get(STATUS_URL).mock(side_effect=[*statuses("WAKING_UP"), blip, *statuses("ACTIVE")])
    events = await run_to_end(make_trigger(clock))
    assert [event["status"] for event in events] == ["success"]


async def test_transient_errors_past_the_budget_end_with_error(server: StatusServer, clock: FakeClock) -> None:
    route = server.get(STATUS_URL).respond(503)
    events = await run_to_end(make_trigger(clock))
    assert events[0]["status"] == "error"
    assert "in a row" in events[0]["message"]
    assert route.call_count == ReadinessWatch.max_consecutive_errors + 1


async def test_the_hook_retries_a_blip_within_one_poll(server: StatusServer, clock: FakeClock) -> None:
    server.connect(max_retries=3)
    route = server.get(STATUS_URL).mock(side_effect=[httpx.Response(503), *statuses("ACTIVE")])
    events = await run_to_end(make_trigger(clock))
    assert events[0]["status"] == "success"
    assert route.call_count == 2
    assert clock.sleeps  # the hook's backoff ran on the injected sleep
    assert clock.sleeps[0] < 10


@pytest.mark.parametrize("status_code", [401, 403, 404])
async def test_non_transient_errors_end_at_once(server: StatusServer, clock: FakeClock, status_code: int) -> None:
    # The server echoes the key it was sent, so the redaction is what keeps it out of the event.
    route = server.get(STATUS_URL).respond(status_code, json={"error": f"nope for {KEY}", "detail": KEY})
    events = await run_to_end(make_trigger(clock))
    assert events[0]["status"] == "error"
    assert route.call_count == 1
    assert "nope for ***" in events[0]["message"]
    assert KEY not in json.dumps(events)


async def test_missing_connection_is_an_error_event(
    server: StatusServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = await run_to_end(make_trigger(clock, baseten_conn_id="no_such_conn"))
    assert events[0]["status"] == "error"


async def test_invalid_target_is_an_error_event(clock: FakeClock) -> None:
    events = await run_to_end(make_trigger(clock, model_id="bad/id"))
    assert [event["status"] for event in events] == ["error"]


async def test_named_environment_reads_its_current_deployment(server: StatusServer, clock: FakeClock) -> None:
    env_url = "https://api.baseten.co/v1/models/abc123/environments/staging"
    server.get(env_url).respond(200, json={"name": "staging", "current_deployment": record("ACTIVE")})
    events = await run_to_end(make_trigger(clock, environment="staging"))
    assert events[0]["status"] == "success"
    assert events[0]["deployment"]["id"] == "dep1"


async def test_cancellation_propagates(server: StatusServer, clock: FakeClock) -> None:
    server.get(STATUS_URL).respond(200, json=record("WAKING_UP"))

    async def cancelled_sleep(_seconds: float) -> None:
        raise asyncio.CancelledError

    trigger = BasetenDeploymentReadyTrigger(
        model_id="abc123", woke_at=T0, deadline=T0 + 100, clock=clock.time, sleep=cancelled_sleep
    )
    events: list[Any] = []

    async def consume() -> None:
        async for event in trigger.run():
            events.append(event)

    with pytest.raises(asyncio.CancelledError):
        await consume()
    assert events == []


async def test_cancellation_during_a_read_propagates(server: StatusServer, clock: FakeClock) -> None:
    """A triggerer that cancels the trigger while a read is in flight stops it: no event, no swallowed cancel."""
    reading, release = asyncio.Event(), asyncio.Event()

    async def held(_request: httpx.Request) -> httpx.Response:
        reading.set()
        await release.wait()
        return httpx.Response(200, json=record("ACTIVE"))

    server.get(STATUS_URL).mock(side_effect=held)
    events: list[Any] = []

    async def consume() -> None:
        async for event in make_trigger(clock).run():
            events.append(event)

    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(reading.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    assert events == []


# --- event validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        None,
        "success",
        {},
        {"status": "SUCCEEDED"},
        {"status": None},
        {"status": "success"},  # success without a record
        {"status": "failed", "message": "BUILD_FAILED"},
        {"status": "timeout", "message": "late"},
        {"status": "error", "message": "boom"},
    ],
)
def test_only_an_explicit_success_is_green(event: Any) -> None:
    with pytest.raises(BasetenDeploymentError):
        deployment_from_event(event)


def test_success_event_passes() -> None:
    event = {"status": "success", "deployment": record("ACTIVE"), "transitions": []}
    assert deployment_from_event(event) is event


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0 s"), (2.4, "2 s"), (59.6, "1 min 0 s"), (190, "3 min 10 s"), (3725, "1 h 2 min")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# --- the full cycle --------------------------------------------------------------------------------------------


async def test_defer_trigger_resume_cycle(server: StatusServer, clock: FakeClock) -> None:
    from airflow.providers.common.compat.sdk import TaskDeferred

    from airflow_provider_baseten.operators.wake import BasetenWakeOperator

    status = server.get(STATUS_URL).mock(
        side_effect=statuses("SCALED_TO_ZERO", "SCALED_TO_ZERO", "WAKING_UP", "LOADING_MODEL", "ACTIVE")
    )
    wake = server.post(WAKE_URL).respond(202)
    op = BasetenWakeOperator(task_id="wake", model_id="abc123", deferrable=True, poll_interval=15, timeout=600)
    op._now = clock.time  # type: ignore[method-assign]
    ti = _FakeTI()
    deferred: TaskDeferred | None = None
    try:
        await asyncio.to_thread(op.execute, {"ti": ti})  # the worker's sync client, off the server's event loop
    except TaskDeferred as exc:
        deferred = exc
    assert deferred is not None, "a SCALED_TO_ZERO deployment must defer"
    assert wake.call_count == 1
    assert status.call_count == 1  # only the read before the wake happened on the worker
    assert deferred.method_name == "execute_complete"

    classpath, kwargs = deferred.trigger.serialize()
    assert classpath == CLASSPATH
    assert kwargs["deadline"] == T0 + 600
    assert kwargs["woke_at"] == T0
    assert kwargs["last_status"] == "SCALED_TO_ZERO"
    assert deferred.timeout is not None
    assert deferred.timeout.total_seconds() > 600

    # The triggerer rebuilds the trigger from its kwargs (tests add the clock).
    trigger = BasetenDeploymentReadyTrigger(**kwargs, clock=clock.time, sleep=clock.asleep)
    events = await run_to_end(trigger)
    assert len(events) == 1

    result = op.execute_complete({"ti": ti}, events[0])
    assert result["status"] == "ACTIVE"
    assert wake.call_count == 1  # the trigger never woke again
    assert clock.now - T0 == 45


async def test_defer_cycle_failure_raises_in_execute_complete(server: StatusServer, clock: FakeClock) -> None:
    from airflow.providers.common.compat.sdk import TaskDeferred

    from airflow_provider_baseten.operators.wake import BasetenWakeOperator

    server.get(STATUS_URL).mock(side_effect=statuses("SCALED_TO_ZERO", "WAKING_UP", "DEPLOY_FAILED"))
    server.post(WAKE_URL).respond(202)
    op = BasetenWakeOperator(task_id="wake", model_id="abc123", deferrable=True, poll_interval=5)
    op._now = clock.time  # type: ignore[method-assign]
    with pytest.raises(TaskDeferred) as caught:
        await asyncio.to_thread(op.execute, {"ti": _FakeTI()})
    _, kwargs = caught.value.trigger.serialize()
    events = await run_to_end(BasetenDeploymentReadyTrigger(**kwargs, clock=clock.time, sleep=clock.asleep))
    with pytest.raises(BasetenDeploymentError, match="DEPLOY_FAILED"):
        op.execute_complete({"ti": _FakeTI()}, events[0])


class _FakeTI:
    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


# --- deadlines and messages --------------------------------------------------------------------------------------


def test_a_slow_read_with_little_time_left_ends_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A status read that would take 12 s with 0.3 s left ends at the deadline, as a timeout (virtual time)."""

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(12)
        return httpx.Response(200, json=record("ACTIVE"))

    async def main(loop: VirtualTimeLoop) -> tuple[list[dict[str, Any]], float]:
        async with StatusServer(monkeypatch) as server:
            server.get(STATUS_URL).mock(side_effect=[*statuses("WAKING_UP"), slow])
            trigger = BasetenDeploymentReadyTrigger(
                model_id="abc123", woke_at=T0, deadline=T0 + 10.3, poll_interval=10, clock=loop.time
            )
            events = await run_to_end(trigger)
            server.check()
            return events, loop.time()

    events, ended = run_virtual(main, start=T0)
    assert [event["status"] for event in events] == ["timeout"]
    assert ended == pytest.approx(T0 + 10.3)
    assert "(1 status read; last status WAKING_UP)" in events[0]["message"]  # the cut-off read is not counted


async def test_scaled_down_again_between_reads_is_reported_as_seen(server: StatusServer, clock: FakeClock) -> None:
    server.get(STATUS_URL).mock(side_effect=statuses("WAKING_UP", "SCALED_TO_ZERO", "SCALED_TO_ZERO", "SCALED_TO_ZERO"))
    [event] = await run_to_end(make_trigger(clock, stale_read_grace=20))
    assert event["status"] == "failed"
    assert "SCALED_TO_ZERO again 30 s after the wake at 2023-11-14 22:13:20 UTC" in event["message"]
    assert "statuses seen: WAKING_UP, SCALED_TO_ZERO" in event["message"]
    assert "lower poll_interval (now 10 s)" in event["message"]

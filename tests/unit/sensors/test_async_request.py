"""BasetenAsyncRequestSensor: poke mode through the shared status mapping, the deferrable path (one read, then the
trigger), the full defer -> trigger.run() -> execute_complete cycle, timeouts and kills. Injected clocks only."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
import respx
from airflow.providers.common.compat.sdk import AirflowSensorTimeout, PokeReturnValue, TaskDeferred
from airflow_testing import T0, FakeClock, set_conn

from airflow_provider_baseten.exceptions import BasetenAsyncRequestError, BasetenConfigError
from airflow_provider_baseten.hooks import async_requests
from airflow_provider_baseten.hooks.baseten import BasetenHook
from airflow_provider_baseten.sensors.async_request import BasetenAsyncRequestSensor
from airflow_provider_baseten.triggers.async_request import BasetenAsyncRequestTrigger

HOST = "https://model-abc123.api.baseten.co"
STATUS_URL = f"{HOST}/async_request/req1"


class FakeTI:
    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}
        self.start_date = None

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def state(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": "req1",
        "model_id": "abc123",
        "deployment_id": "dep1",
        "status": status,
        "webhook_status": "SUCCEEDED",
        "created_at": "2023-11-14T22:13:20Z",
        "status_at": "2023-11-14T22:14:00Z",
        "errors": [],
        **extra,
    }


def statuses(*names: str) -> list[httpx.Response]:
    return [httpx.Response(200, json=state(name)) for name in names]


@pytest.fixture(autouse=True)
def baseten_conn(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch)
    monkeypatch.setattr(async_requests.random, "random", lambda: 0.5)


def make_sensor(clock: FakeClock, **kwargs: Any) -> BasetenAsyncRequestSensor:
    defaults: dict[str, Any] = {
        "task_id": "wait",
        "model_id": "abc123",
        "request_id": "req1",
        "poke_interval": 10,
        "timeout": 600,
        "deferrable": False,
    }
    sensor = BasetenAsyncRequestSensor(**{**defaults, **kwargs})
    sensor._clock = clock.time
    sensor.__dict__["hook"] = BasetenHook("baseten_default", customer_request_id="", sleep=clock.sleep)
    return sensor


def context(ti: FakeTI | None = None) -> dict[str, Any]:
    return {"ti": ti or FakeTI()}


def manifest(status: str) -> dict[str, Any]:
    record = state(status)
    keys = ("request_id", "model_id", "deployment_id", "status", "webhook_status", "created_at", "status_at", "errors")
    return {key: record[key] for key in keys}


# --- poke mode ---------------------------------------------------------------------------------------------------


def test_poke_returns_false_while_pending_and_the_manifest_at_success(api: respx.MockRouter, clock: FakeClock) -> None:
    api.get(STATUS_URL).mock(side_effect=statuses("QUEUED", "IN_PROGRESS", "SUCCEEDED"))
    sensor = make_sensor(clock)
    ctx = context()
    sensor._watch = sensor._new_watch(ctx)
    assert sensor.poke(ctx) is False
    assert sensor.poke(ctx) is False
    done = sensor.poke(ctx)
    assert isinstance(done, PokeReturnValue)
    assert done.is_done
    assert done.xcom_value == manifest("SUCCEEDED")


@pytest.mark.parametrize(
    ("answer", "fail_on_webhook_failure", "outcome"),
    [
        (httpx.Response(200, json=state("SUCCEEDED")), True, "success"),
        (httpx.Response(200, json=state("FAILED")), True, "ended FAILED"),
        (httpx.Response(200, json=state("EXPIRED")), True, "ended EXPIRED"),
        (httpx.Response(200, json=state("CANCELED")), True, "ended CANCELED"),
        (httpx.Response(200, json=state("WEBHOOK_FAILED")), True, "could not deliver"),
        (httpx.Response(200, json=state("WEBHOOK_FAILED")), False, "success"),
        (httpx.Response(404, json={"error": "not found"}), True, "no longer known"),
        (httpx.Response(200, json=state("ARCHIVED")), True, "does not know"),
    ],
    ids=["SUCCEEDED", "FAILED", "EXPIRED", "CANCELED", "WEBHOOK_FAILED", "WEBHOOK_FAILED-accepted", "404", "unknown"],
)
def test_every_status_maps_like_the_operator(
    api: respx.MockRouter, clock: FakeClock, answer: httpx.Response, fail_on_webhook_failure: bool, outcome: str
) -> None:
    api.get(STATUS_URL).mock(side_effect=[answer])
    sensor = make_sensor(clock, fail_on_webhook_failure=fail_on_webhook_failure)
    if outcome == "success":
        assert sensor.execute(context())["request_id"] == "req1"
    else:
        with pytest.raises(BasetenAsyncRequestError, match=outcome):
            sensor.execute(context())


def test_a_blip_during_pokes_is_not_a_failure(api: respx.MockRouter, clock: FakeClock) -> None:
    api.get(STATUS_URL).mock(side_effect=[*statuses("QUEUED"), httpx.Response(502), *statuses("SUCCEEDED")])
    sensor = make_sensor(clock)
    ctx = context()
    sensor._watch = sensor._new_watch(ctx)
    assert sensor.poke(ctx) is False
    assert sensor.poke(ctx) is False
    assert sensor.poke(ctx)


def test_request_id_is_validated_after_rendering(api: respx.MockRouter, clock: FakeClock) -> None:
    sensor = make_sensor(clock, request_id="{{ ti.xcom_pull('submit', key='request_id') }}")
    sensor.request_id = "../../v1/users"  # as rendered: never reaches a URL
    with pytest.raises(BasetenConfigError):
        sensor.execute(context())
    assert not api.calls


def test_request_id_goes_to_xcom_for_the_link(api: respx.MockRouter, clock: FakeClock) -> None:
    api.get(STATUS_URL).respond(200, json=state("SUCCEEDED"))
    ti = FakeTI()
    make_sensor(clock).execute(context(ti))
    assert ti.xcom["request_id"] == "req1"


def test_output_uri_in_the_manifest(api: respx.MockRouter, clock: FakeClock) -> None:
    api.get(STATUS_URL).respond(200, json=state("SUCCEEDED"))
    assert make_sensor(clock, output_uri="gs://b/o.json").execute(context())["output_uri"] == "gs://b/o.json"


# --- deferrable ------------------------------------------------------------------------------------------------


def test_deferrable_reads_once_and_does_not_defer_when_done(api: respx.MockRouter, clock: FakeClock) -> None:
    route = api.get(STATUS_URL).respond(200, json=state("SUCCEEDED"))
    assert make_sensor(clock, deferrable=True).execute(context()) == manifest("SUCCEEDED")
    assert route.call_count == 1


def test_deferrable_defers_with_the_sensor_timeout_as_deadline(api: respx.MockRouter, clock: FakeClock) -> None:
    api.get(STATUS_URL).respond(200, json=state("QUEUED"))
    with pytest.raises(TaskDeferred) as deferred:
        make_sensor(clock, deferrable=True, timeout=900).execute(context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, BasetenAsyncRequestTrigger)
    assert trigger.deadline == T0 + 900
    assert trigger.poll_interval == 10
    assert trigger.cancel_on_kill is False  # the sensor only watches
    assert deferred.value.timeout == timedelta(seconds=900 + async_requests.DEFER_BACKSTOP_MARGIN_S)


async def test_full_cycle_defer_trigger_execute_complete(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    """The worker (sync client, on a thread) and the trigger (hot path, on the loop) against one loopback server."""
    import asyncio

    from status_server import StatusServer

    async with StatusServer(monkeypatch) as server:
        server.get(STATUS_URL).mock(side_effect=statuses("QUEUED", "IN_PROGRESS", "SUCCEEDED"))
        try:
            await asyncio.to_thread(make_sensor(clock, deferrable=True).execute, context())
            raised = None
        except TaskDeferred as deferral:
            raised = deferral
        assert raised is not None
        _, kwargs = raised.trigger.serialize()
        trigger = BasetenAsyncRequestTrigger(**kwargs, clock=clock.time, sleep=clock.asleep)
        events = [event.payload async for event in trigger.run()]
        server.check()
    assert len(events) == 1
    result = getattr(make_sensor(clock, deferrable=True), raised.method_name)(context(), event=events[0])
    assert result == manifest("SUCCEEDED")
    assert {call.method for call in server.calls} == {"GET"}
    assert len(server.calls) == 3


def test_timeout_event_is_a_sensor_timeout_and_cancels_nothing(api: respx.MockRouter, clock: FakeClock) -> None:
    event = {"status": "timeout", "request_id": "req1", "message": "deadline", "manifest": manifest("QUEUED")}
    with pytest.raises(AirflowSensorTimeout):
        make_sensor(clock, deferrable=True).execute_complete(context(), event=event)
    assert not api.calls


@pytest.mark.parametrize("event", [None, {"status": "SUCCEEDED", "request_id": "req1", "manifest": {}}])
def test_execute_complete_rejects_events_off_the_allow_list(clock: FakeClock, event: Any) -> None:
    with pytest.raises(BasetenAsyncRequestError):
        make_sensor(clock).execute_complete(context(), event=event)


# --- kill ----------------------------------------------------------------------------------------------------------


def test_on_kill_leaves_the_request_alone_by_default(api: respx.MockRouter, clock: FakeClock) -> None:
    make_sensor(clock).on_kill()
    assert not api.calls


def test_on_kill_cancels_when_asked(api: respx.MockRouter, clock: FakeClock) -> None:
    delete = api.delete(STATUS_URL).respond(200, json={"request_id": "req1", "canceled": True})
    make_sensor(clock, cancel_on_kill=True).on_kill()
    assert delete.call_count == 1

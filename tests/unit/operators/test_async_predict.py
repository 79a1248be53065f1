"""BasetenAsyncPredictOperator: validation before sending, submit and XCom, the status read after submit, the wait
on the worker and the full defer -> trigger.run() -> execute_complete cycle, timeouts and kills, and re-attaching
through the task state store (Airflow 3.3+) or the documented degradation below it. Injected clocks only."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from airflow.providers.common.compat.sdk import TaskDeferred
from airflow_testing import KEY, T0, FakeClock, set_conn, state, statuses
from task_context import FakeTaskStateStore, FakeTI

from airflow_provider_baseten.exceptions import (
    BasetenAPIError,
    BasetenAsyncRequestError,
    BasetenConfigError,
    BasetenConnectionError,
    BasetenPayloadTooLargeError,
)
from airflow_provider_baseten.hooks import async_requests
from airflow_provider_baseten.hooks.async_requests import BasetenAsyncRequestTimeoutError
from airflow_provider_baseten.hooks.baseten import BasetenHook
from airflow_provider_baseten.operators import async_predict
from airflow_provider_baseten.operators.async_predict import DONE_KEY, BasetenAsyncPredictOperator
from airflow_provider_baseten.triggers.async_request import BasetenAsyncRequestTrigger

HOST = "https://model-abc123.api.baseten.co"
SUBMIT_URL = f"{HOST}/production/async_predict"
needs_task_state_store = pytest.mark.skipif(
    not async_predict.REATTACH_SUPPORTED, reason="the task state store (re-attach) needs Airflow 3.3+"
)


class RecordingLog:
    """Stands in for the operator's structlog logger: ``%s`` formatting, extra keywords (the SDK's mixin) ignored."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _record(self, level: str, msg: str, *args: Any, **kwargs: Any) -> None:
        self.lines.append((level, msg % args if args else msg))

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._record("debug", msg, *args)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._record("info", msg, *args)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._record("warning", msg, *args)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._record("error", msg, *args)

    @property
    def messages(self) -> list[str]:
        return [line for _, line in self.lines]


class WorkerCrash(BaseException):
    """The worker process dies (not an exception any task code would catch)."""


def manifest(status: str, request_id: str = "req1") -> dict[str, Any]:
    record = state(status, request_id)
    return {
        key: record[key]
        for key in (
            "request_id",
            "model_id",
            "deployment_id",
            "status",
            "webhook_status",
            "created_at",
            "status_at",
            "errors",
        )
    }


@pytest.fixture(autouse=True)
def baseten_conn(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch)
    monkeypatch.setattr(async_requests.random, "random", lambda: 0.5)
    monkeypatch.setattr(BasetenAsyncPredictOperator, "_notice_logged", False)


@pytest.fixture(autouse=True)
def logs(monkeypatch: pytest.MonkeyPatch) -> RecordingLog:
    recorder = RecordingLog()
    monkeypatch.setattr(BasetenAsyncPredictOperator, "log", property(lambda self: recorder))
    return recorder


def make_op(clock: FakeClock, **kwargs: Any) -> BasetenAsyncPredictOperator:
    defaults: dict[str, Any] = {
        "task_id": "score",
        "model_id": "abc123",
        "model_input": {"text": "great"},
        "poll_interval": 10,
        "deferrable": False,
    }
    op = BasetenAsyncPredictOperator(**{**defaults, **kwargs})
    op._clock = clock.time
    op._sleep = clock.sleep
    op.__dict__["hook"] = BasetenHook("baseten_default", customer_request_id="", sleep=clock.sleep)
    return op


def context(store: FakeTaskStateStore | None = None, ti: FakeTI | None = None) -> dict[str, Any]:
    ctx: dict[str, Any] = {"ti": ti or FakeTI()}
    if store is not None:
        ctx["task_state_store"] = store
    return ctx


def stored_request(request_id: str) -> FakeTaskStateStore:
    """The store as an earlier try left it, after submitting ``request_id``."""
    store = FakeTaskStateStore()
    store.set(BasetenAsyncPredictOperator.external_id_key, request_id)
    return store


def submit_route(api: respx.MockRouter, *request_ids: str) -> respx.Route:
    ids = request_ids or ("req1",)
    return api.post(SUBMIT_URL).mock(side_effect=[httpx.Response(201, json={"request_id": i}) for i in ids])


def status_route(api: respx.MockRouter, *names: str, request_id: str = "req1") -> respx.Route:
    return api.get(f"{HOST}/async_request/{request_id}").mock(side_effect=statuses(*names, request_id=request_id))


# --- validation before sending ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"webhook_endpoint": "http://example.com/hook"},
        {"priority": 3},
        {"max_time_in_queue_seconds": 5},
        {"max_time_in_queue_seconds": 300_000},
        {"inference_retry_config": {"max_attempts": 11}},
        {"inference_retry_config": {"unknown": 1}},
        {"poll_interval": 0},
        {"timeout": -1},
        {"model_id": "bad/id"},
    ],
)
def test_literal_arguments_are_validated_at_parse_time(clock: FakeClock, kwargs: dict[str, Any]) -> None:
    with pytest.raises(BasetenConfigError):
        make_op(clock, **kwargs)


def test_localhost_webhook_is_allowed_for_development(clock: FakeClock) -> None:
    make_op(clock, webhook_endpoint="http://localhost:8000/hook")


def test_templated_webhook_is_validated_after_rendering_and_nothing_is_sent(
    api: respx.MockRouter, clock: FakeClock
) -> None:
    op = make_op(clock, webhook_endpoint="{{ params.hook }}")
    op.webhook_endpoint = "http://example.com/hook"  # as rendered
    submit = submit_route(api)
    with pytest.raises(BasetenConfigError, match="https"):
        op.execute(context())
    assert not api.calls
    assert not submit.called


@pytest.mark.parametrize("model_input", [[1, 2], "not json", 42])
def test_model_input_must_be_a_json_object(api: respx.MockRouter, clock: FakeClock, model_input: Any) -> None:
    op = make_op(clock)
    op.model_input = model_input
    with pytest.raises(BasetenConfigError, match="model_input"):
        op.execute(context())
    assert not api.calls


def test_json_string_model_input_is_parsed(api: respx.MockRouter, clock: FakeClock) -> None:
    submit = submit_route(api)
    status_route(api, "SUCCEEDED")
    op = make_op(clock)
    op.model_input = '{"text": "rendered"}'
    op.execute(context())
    assert json.loads(submit.calls[0].request.content)["model_input"] == {"text": "rendered"}


def test_payload_over_256_kib_is_refused_before_sending(api: respx.MockRouter, clock: FakeClock) -> None:
    op = make_op(clock, model_input={"text": "x" * (256 * 1024)})
    with pytest.raises(BasetenPayloadTooLargeError, match="nothing was sent"):
        op.execute(context())
    assert not api.calls


# --- submit, XCom and the body -----------------------------------------------------------------------------------


def test_submit_body_and_request_id_in_xcom(api: respx.MockRouter, clock: FakeClock) -> None:
    submit = submit_route(api)
    status_route(api, "SUCCEEDED")
    ti = FakeTI()
    op = make_op(
        clock,
        webhook_endpoint="https://hooks.example.com/baseten",
        priority=1,
        inference_retry_config={"max_attempts": 2},
    )
    result = op.execute(context(ti=ti))
    assert result == manifest("SUCCEEDED")
    assert ti.xcom["request_id"] == "req1"
    assert json.loads(submit.calls[0].request.content) == {
        "model_input": {"text": "great"},
        "webhook_endpoint": "https://hooks.example.com/baseten",
        "priority": 1,
        "max_time_in_queue_seconds": 600,
        "inference_retry_config": {"max_attempts": 2, "initial_delay_ms": 1000, "max_delay_ms": 5000},
    }
    assert KEY not in json.dumps(result)


def test_chain_submits_to_async_run_remote(api: respx.MockRouter, clock: FakeClock) -> None:
    submit = api.post("https://chain-chn1.api.baseten.co/production/async_run_remote").respond(
        201, json={"request_id": "req1"}
    )
    api.get("https://chain-chn1.api.baseten.co/async_request/req1").respond(
        200, json={**state("SUCCEEDED"), "model_id": None, "chain_id": "chn1"}
    )
    result = make_op(clock, model_id=None, chain_id="chn1").execute(context())
    assert submit.called
    assert result["chain_id"] == "chn1"
    assert "model_id" not in result


def test_queue_time_defaults_to_the_time_left_before_the_deadline(api: respx.MockRouter, clock: FakeClock) -> None:
    submit = submit_route(api)
    status_route(api, "SUCCEEDED")
    ti = FakeTI(start_date=datetime.fromtimestamp(T0 - 600, tz=UTC))  # the try started 10 min ago
    make_op(clock, timeout=3 * 3600, execution_timeout=timedelta(hours=1)).execute(context(ti=ti))
    assert json.loads(submit.calls[0].request.content)["max_time_in_queue_seconds"] == 3000


def test_explicit_queue_time_longer_than_the_deadline_warns(
    api: respx.MockRouter, clock: FakeClock, logs: RecordingLog
) -> None:
    submit = submit_route(api)
    status_route(api, "SUCCEEDED")
    make_op(clock, timeout=60, max_time_in_queue_seconds=7200).execute(context())
    assert json.loads(submit.calls[0].request.content)["max_time_in_queue_seconds"] == 7200
    assert any("longer than the 60 s left" in message for message in logs.messages)


def test_output_uri_goes_into_the_manifest(api: respx.MockRouter, clock: FakeClock) -> None:
    submit_route(api)
    status_route(api, "SUCCEEDED")
    result = make_op(clock, output_uri="s3://bucket/2024-01-01/scores.json").execute(context())
    assert result["output_uri"] == "s3://bucket/2024-01-01/scores.json"


# --- after the submit: one status read ---------------------------------------------------------------------------


def test_wait_for_completion_false_returns_the_manifest_after_submit(api: respx.MockRouter, clock: FakeClock) -> None:
    submit_route(api)
    status = status_route(api, "QUEUED")
    result = make_op(clock, wait_for_completion=False, deferrable=True).execute(context())
    assert result == manifest("QUEUED")
    assert status.call_count == 1
    assert clock.sleeps == []


def test_already_terminal_after_submit_does_not_defer(api: respx.MockRouter, clock: FakeClock) -> None:
    submit_route(api)
    status_route(api, "SUCCEEDED")
    result = make_op(clock, deferrable=True).execute(context())  # no TaskDeferred raised
    assert result["status"] == "SUCCEEDED"


def test_already_failed_after_submit_raises_with_the_manifest(api: respx.MockRouter, clock: FakeClock) -> None:
    submit_route(api)
    api.get(f"{HOST}/async_request/req1").respond(
        200, json=state("FAILED", errors=[{"code": "MODEL_INVALID_INPUT", "message": "text missing"}])
    )
    with pytest.raises(BasetenAsyncRequestError, match="MODEL_INVALID_INPUT") as err:
        make_op(clock, deferrable=True).execute(context())
    assert err.value.manifest["status"] == "FAILED"


# --- waiting on the worker -----------------------------------------------------------------------------------


def test_waits_on_the_worker_with_the_shared_loop(api: respx.MockRouter, clock: FakeClock, logs: RecordingLog) -> None:
    submit_route(api)
    status_route(api, "QUEUED", "QUEUED", "IN_PROGRESS", "SUCCEEDED")
    result = make_op(clock).execute(context())
    assert result == manifest("SUCCEEDED")
    assert clock.sleeps == [10, 10, 10]
    assert "Async request req1: QUEUED -> IN_PROGRESS after 20s." in logs.messages


def test_timeout_on_the_worker_cancels_and_fails(api: respx.MockRouter, clock: FakeClock) -> None:
    submit_route(api)
    api.get(f"{HOST}/async_request/req1").respond(200, json=state("QUEUED"))
    delete = api.delete(f"{HOST}/async_request/req1").respond(200, json={"request_id": "req1", "canceled": True})
    with pytest.raises(BasetenAsyncRequestTimeoutError, match="deadline") as err:
        make_op(clock, timeout=25).execute(context())
    assert delete.call_count == 1
    assert err.value.manifest["status"] == "QUEUED"
    assert clock.sleeps == [10, 10, 5]


def test_on_kill_cancels_the_submitted_request(api: respx.MockRouter, clock: FakeClock) -> None:
    submit_route(api)
    status_route(api, "QUEUED")
    delete = api.delete(f"{HOST}/async_request/req1").respond(200, json={"request_id": "req1", "canceled": True})
    op = make_op(clock, wait_for_completion=False)
    op.execute(context())
    op.on_kill()
    assert delete.call_count == 1


def test_on_kill_before_submit_does_nothing(api: respx.MockRouter, clock: FakeClock) -> None:
    make_op(clock).on_kill()
    assert not api.calls


def test_on_kill_never_raises(api: respx.MockRouter, clock: FakeClock) -> None:
    api.delete(f"{HOST}/async_request/req1").respond(500)
    op = make_op(clock)
    op.request_id = "req1"
    op.on_kill()


# --- deferral and the full cycle --------------------------------------------------------------------------------


def test_defers_with_json_kwargs_deadline_and_backstop(
    api: respx.MockRouter, clock: FakeClock, logs: RecordingLog
) -> None:
    submit_route(api)
    status_route(api, "QUEUED")
    op = make_op(clock, deferrable=True, timeout=1800, baseten_conn_id="baseten_default")
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    # The task's log says what the triggerer waits on, how often it polls and until when (the trigger does not).
    assert (
        "Deferring: the triggerer waits for async request req1 on model abc123 (production) "
        "(poll every ~10 s, deadline in 1800 s)." in logs.messages
    )
    trigger = deferred.value.trigger
    assert isinstance(trigger, BasetenAsyncRequestTrigger)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_baseten.triggers.baseten.BasetenAsyncRequestTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert KEY not in json.dumps(kwargs)
    assert kwargs["request_id"] == "req1"
    assert kwargs["deadline"] == T0 + 1800
    assert kwargs["started_at"] == T0
    assert kwargs["last_status"] == "QUEUED"
    assert kwargs["cancel_on_kill"] is True
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout == timedelta(seconds=1800 + async_requests.DEFER_BACKSTOP_MARGIN_S)


def test_execution_timeout_bounds_the_deferred_wait(api: respx.MockRouter, clock: FakeClock) -> None:
    submit_route(api)
    status_route(api, "QUEUED")
    ti = FakeTI(start_date=datetime.fromtimestamp(T0, tz=UTC))
    with pytest.raises(TaskDeferred) as deferred:
        make_op(clock, deferrable=True, execution_timeout=timedelta(minutes=5)).execute(context(ti=ti))
    assert deferred.value.trigger.deadline == T0 + 300


def test_without_any_deadline_there_is_no_backstop(api: respx.MockRouter, clock: FakeClock) -> None:
    submit_route(api)
    status_route(api, "QUEUED")
    with pytest.raises(TaskDeferred) as deferred:
        make_op(clock, deferrable=True).execute(context())
    assert deferred.value.timeout is None
    assert deferred.value.trigger.deadline is None


async def drive_trigger(trigger: BasetenAsyncRequestTrigger, clock: FakeClock) -> list[dict[str, Any]]:
    _, kwargs = trigger.serialize()  # what the triggerer stores and rebuilds
    rebuilt = BasetenAsyncRequestTrigger(**kwargs, clock=clock.time, sleep=clock.asleep)
    return [event.payload async for event in rebuilt.run()]


async def test_full_cycle_defer_trigger_execute_complete(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    """The worker (sync client, on a thread) and the trigger (hot path, on the loop) against one loopback server."""
    import asyncio

    from status_server import StatusServer

    async with StatusServer(monkeypatch) as server:
        submit = submit_route(server)  # type: ignore[arg-type]
        status_route(server, "QUEUED", "QUEUED", "IN_PROGRESS", "SUCCEEDED")  # type: ignore[arg-type]
        op = make_op(clock, deferrable=True, timeout=3600)
        try:
            await asyncio.to_thread(op.execute, context())
            raised = None
        except TaskDeferred as deferral:
            raised = deferral
        assert raised is not None
        events = await drive_trigger(raised.trigger, clock)
        server.check()
    assert len(events) == 1
    resumed = make_op(clock, deferrable=True, timeout=3600)  # the task resumes in a fresh operator instance
    result = getattr(resumed, raised.method_name)(context(), event=events[0])
    assert result == manifest("SUCCEEDED")
    assert submit.call_count == 1
    assert [call.method for call in server.calls].count("POST") == 1


async def test_full_cycle_deadline_passes_while_deferred(api: respx.MockRouter, clock: FakeClock) -> None:
    submit_route(api)
    api.get(f"{HOST}/async_request/req1").respond(200, json=state("QUEUED"))
    delete = api.delete(f"{HOST}/async_request/req1").respond(200, json={"request_id": "req1", "canceled": True})
    op = make_op(clock, deferrable=True, timeout=45)
    try:
        op.execute(context())
        raised = None
    except TaskDeferred as deferral:
        raised = deferral
    assert raised is not None
    [event] = await drive_trigger(raised.trigger, clock)
    assert event["status"] == "timeout"
    assert not delete.called  # the trigger only reads; the cancel happens on the worker
    with pytest.raises(BasetenAsyncRequestTimeoutError, match="deadline"):
        make_op(clock, deferrable=True).execute_complete(context(), event=event)
    assert delete.call_count == 1


@pytest.mark.parametrize(
    ("event", "match"),
    [
        (None, "without a valid trigger event"),
        ({"status": "done", "request_id": "req1", "manifest": {}}, "Unexpected trigger event status 'done'"),
        ({"status": "success"}, "Malformed"),
    ],
)
def test_execute_complete_rejects_events_off_the_allow_list(
    api: respx.MockRouter, clock: FakeClock, event: Any, match: str
) -> None:
    with pytest.raises(BasetenAsyncRequestError, match=match):
        make_op(clock).execute_complete(context(), event=event)
    assert not api.calls


@pytest.mark.parametrize("status", ["failed", "lost", "error"])
def test_execute_complete_fails_every_non_success_event(api: respx.MockRouter, clock: FakeClock, status: str) -> None:
    event = {"status": status, "request_id": "req1", "message": f"it {status}", "manifest": manifest("FAILED")}
    with pytest.raises(BasetenAsyncRequestError, match=f"it {status}") as err:
        make_op(clock).execute_complete(context(), event=event)
    assert err.value.manifest == manifest("FAILED")
    assert not api.calls  # only a timeout cancels


# --- re-attach (Airflow 3.3+) -----------------------------------------------------------------------------------


@needs_task_state_store
def test_crash_after_submit_then_retry_reattaches_with_one_post(api: respx.MockRouter, clock: FakeClock) -> None:
    submit = submit_route(api, "req1", "req2")
    status_route(api, "QUEUED", "IN_PROGRESS", "SUCCEEDED")
    store = FakeTaskStateStore()

    def crash(seconds: float) -> None:
        raise WorkerCrash

    first = make_op(clock)
    first._sleep = crash
    with pytest.raises(WorkerCrash):
        first.execute(context(store))
    assert store.data[first.external_id_key] == "req1"

    retry = make_op(clock)  # XCom was cleared; only the task state store survives
    ti = FakeTI()
    result = retry.execute(context(store, ti))
    assert result == manifest("SUCCEEDED")
    assert submit.call_count == 1
    assert ti.xcom["request_id"] == "req1"


@needs_task_state_store
def test_retry_with_a_pending_request_defers_without_a_post(api: respx.MockRouter, clock: FakeClock) -> None:
    submit = submit_route(api, "req2")
    status_route(api, "IN_PROGRESS")
    store = stored_request("req1")
    with pytest.raises(TaskDeferred) as deferred:
        make_op(clock, deferrable=True).execute(context(store))
    assert deferred.value.trigger.request_id == "req1"
    assert deferred.value.trigger.last_status == "IN_PROGRESS"
    assert not submit.called


@needs_task_state_store
def test_retry_with_a_succeeded_request_finishes_without_a_post(api: respx.MockRouter, clock: FakeClock) -> None:
    submit = submit_route(api, "req2")
    status = status_route(api, "SUCCEEDED")
    store = stored_request("req1")
    result = make_op(clock, deferrable=True).execute(context(store))
    assert result == manifest("SUCCEEDED")
    assert not submit.called
    assert status.call_count == 1


@needs_task_state_store
@pytest.mark.parametrize(
    "previous",
    [
        httpx.Response(200, json=state("FAILED")),
        httpx.Response(200, json=state("EXPIRED")),
        httpx.Response(200, json=state("CANCELED")),
        httpx.Response(200, json=state("WEBHOOK_FAILED")),
        httpx.Response(404, json={"error": "not found"}),
    ],
    ids=["FAILED", "EXPIRED", "CANCELED", "WEBHOOK_FAILED", "404"],
)
def test_retry_after_a_dead_request_submits_fresh(
    api: respx.MockRouter, clock: FakeClock, previous: httpx.Response
) -> None:
    submit = submit_route(api, "req2")
    api.get(f"{HOST}/async_request/req1").mock(side_effect=[previous])
    status_route(api, "SUCCEEDED", request_id="req2")
    store = stored_request("req1")
    result = make_op(clock).execute(context(store))
    assert result == manifest("SUCCEEDED", "req2")
    assert submit.call_count == 1
    assert store.data["baseten_async_request_id"] == "req2"


@needs_task_state_store
def test_webhook_failed_counts_as_done_when_the_user_accepts_it(api: respx.MockRouter, clock: FakeClock) -> None:
    submit = submit_route(api, "req2")
    status_route(api, "WEBHOOK_FAILED")
    store = stored_request("req1")
    result = make_op(clock, fail_on_webhook_failure=False).execute(context(store))
    assert result["status"] == "WEBHOOK_FAILED"
    assert not submit.called


@needs_task_state_store
@pytest.mark.parametrize(
    "answer",
    [httpx.Response(500, text="oops"), httpx.Response(401, json={"error": "bad key"}), httpx.ConnectError("down")],
    ids=["500", "401", "network"],
)
def test_other_lookup_errors_raise_without_a_post(api: respx.MockRouter, clock: FakeClock, answer: Any) -> None:
    submit = submit_route(api, "req2")
    api.get(f"{HOST}/async_request/req1").mock(side_effect=[answer])
    store = stored_request("req1")
    with pytest.raises((BasetenAPIError, BasetenConnectionError)):
        make_op(clock).execute(context(store))
    assert not submit.called


@needs_task_state_store
def test_unknown_stored_status_raises_without_a_post(api: respx.MockRouter, clock: FakeClock) -> None:
    submit = submit_route(api, "req2")
    status_route(api, "PAUSED")
    store = stored_request("req1")
    with pytest.raises(BasetenAsyncRequestError, match="PAUSED"):
        make_op(clock).execute(context(store))
    assert not submit.called


@needs_task_state_store
def test_manual_clear_after_success_submits_new_work(api: respx.MockRouter, clock: FakeClock) -> None:
    submit = submit_route(api, "req1", "req2")
    status_route(api, "SUCCEEDED")
    status_route(api, "SUCCEEDED", request_id="req2")
    store = FakeTaskStateStore()
    make_op(clock).execute(context(store))
    assert store.data[DONE_KEY] == "req1"
    result = make_op(clock).execute(context(store))  # cleared by hand: a new run of a green task
    assert result["request_id"] == "req2"
    assert submit.call_count == 2


@needs_task_state_store
def test_manual_clear_with_resubmit_on_clear_false_returns_the_earlier_manifest(
    api: respx.MockRouter, clock: FakeClock
) -> None:
    submit = submit_route(api, "req1", "req2")
    api.get(f"{HOST}/async_request/req1").respond(200, json=state("SUCCEEDED"))
    store = FakeTaskStateStore()
    first = make_op(clock, resubmit_on_clear=False).execute(context(store))
    again = make_op(clock, resubmit_on_clear=False).execute(context(store))
    assert again == first
    assert submit.call_count == 1


@needs_task_state_store
def test_durable_false_always_submits(api: respx.MockRouter, clock: FakeClock) -> None:
    submit = submit_route(api, "req2")
    status_route(api, "SUCCEEDED", request_id="req2")
    store = stored_request("req1")
    make_op(clock, durable=False).execute(context(store))
    assert submit.call_count == 1


@needs_task_state_store
def test_the_done_marker_is_written_after_a_deferred_success(api: respx.MockRouter, clock: FakeClock) -> None:
    store = FakeTaskStateStore()
    event = {"status": "success", "request_id": "req1", "message": "ok", "manifest": manifest("SUCCEEDED")}
    make_op(clock).execute_complete(context(store), event=event)
    assert store.data[DONE_KEY] == "req1"


# --- below Airflow 3.3 ------------------------------------------------------------------------------------------


def test_without_a_task_state_store_the_retry_resubmits_and_says_so_once(
    api: respx.MockRouter, clock: FakeClock, logs: RecordingLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented degradation (Airflow < 3.3): a crash after the submit means a second POST on retry."""
    if async_predict.REATTACH_SUPPORTED:
        monkeypatch.setattr(async_predict, "REATTACH_SUPPORTED", False)
    submit = submit_route(api, "req1", "req2")
    status_route(api, "QUEUED")
    status_route(api, "SUCCEEDED", request_id="req2")

    def crash(seconds: float) -> None:
        raise WorkerCrash

    # On 3.3 the SDK mixin would still re-attach through the context: durable=False stands for "no store" there.
    durable = {"durable": False} if async_predict.ResumableJobMixin.__module__.startswith("airflow.sdk") else {}
    first = make_op(clock, **durable)
    first._sleep = crash
    with pytest.raises(WorkerCrash):
        first.execute(context())
    result = make_op(clock, **durable).execute(context())
    assert result["request_id"] == "req2"
    assert submit.call_count == 2
    notices = [m for m in logs.messages if "no task state store" in m]
    assert len(notices) == 1

"""BasetenWakeOperator against respx: parameters, fail-fast paths, activation, the worker wait and the deferral."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from airflow.providers.common.compat.sdk import TaskDeferred
from airflow_testing import T0, FakeClock, set_conn

from airflow_provider_baseten.exceptions import BasetenAuthError, BasetenConfigError, BasetenDeploymentError
from airflow_provider_baseten.operators.links import BasetenModelLink
from airflow_provider_baseten.operators.wake import BasetenWakeOperator
from airflow_provider_baseten.triggers.deployment import BasetenDeploymentReadyTrigger

STATUS_URL = "https://api.baseten.co/v1/models/abc123/deployments/production"
ACTIVATE_URL = f"{STATUS_URL}/activate"
WAKE_URL = "https://model-abc123.api.baseten.co/production/wake"


class FakeTI:
    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


class RecordingLog:
    """Stands in for the task logger: keeps the %-formatted lines."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _add(self, level: str, msg: str, *args: Any) -> None:
        self.lines.append((level, msg % args if args else msg))

    def info(self, msg: str, *args: Any) -> None:
        self._add("info", msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self._add("warning", msg, *args)

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def record(status: str) -> dict[str, Any]:
    return {"id": "dep1", "model_id": "abc123", "status": status, "active_replica_count": 0}


def statuses(*names: str) -> list[httpx.Response]:
    return [httpx.Response(200, json=record(name)) for name in names]


@pytest.fixture(autouse=True)
def baseten_conn(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch)


def wake_op(clock: FakeClock, **kwargs: Any) -> BasetenWakeOperator:
    defaults: dict[str, Any] = {"task_id": "wake", "model_id": "abc123", "deferrable": False, "poll_interval": 10}
    op = BasetenWakeOperator(**{**defaults, **kwargs})
    op._now = clock.time  # type: ignore[method-assign]
    op._pause = clock.sleep  # type: ignore[method-assign]
    return op


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> RecordingLog:
    """The operators' task logger, recorded."""
    recording = RecordingLog()
    monkeypatch.setattr(BasetenWakeOperator, "log", property(lambda _self: recording))
    return recording


def ctx(ti: FakeTI | None = None) -> dict[str, Any]:
    return {"ti": ti or FakeTI(), "params": {"model": "abc123"}}


# --- parameters ------------------------------------------------------------------------------------------------


def test_template_fields_include_conn_id_and_address() -> None:
    assert set(BasetenWakeOperator.template_fields) >= {"baseten_conn_id", "model_id", "environment", "deployment_id"}


def test_parameters_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        BasetenWakeOperator("wake", "abc123")  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": "10"}, "poll_interval"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": timedelta(0)}, "timeout"),
        ({"stale_read_grace": -1}, "stale_read_grace"),
        ({"model_id": None, "chain_id": "ch42"}, "model_id, not chain_id"),
        ({"model_id": "bad id"}, "model_id"),
        ({"deployment_id": "dep1", "environment": "staging"}, "pass only one"),
    ],
)
def test_literal_values_are_validated_in_init(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(BasetenConfigError, match=match):
        BasetenWakeOperator(task_id="wake", **{"model_id": "abc123", **kwargs})


def test_timeout_accepts_a_timedelta_and_defaults_to_20_minutes() -> None:
    assert BasetenWakeOperator(task_id="w", model_id="abc123", timeout=timedelta(minutes=2)).timeout == 120
    assert BasetenWakeOperator(task_id="w", model_id="abc123").timeout == 1200
    assert BasetenWakeOperator(task_id="w", model_id="abc123").wait_for_ready is True


def test_deferrable_defaults_to_the_operators_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    import airflow_provider_baseten.operators.wake as wake_module

    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    try:
        reloaded = importlib.reload(wake_module)
        assert reloaded.BasetenWakeOperator(task_id="w", model_id="abc123").deferrable is True
    finally:
        monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE")
        importlib.reload(wake_module)


def test_rendering_the_model_id(api: respx.MockRouter, clock: FakeClock) -> None:
    api.get(STATUS_URL).respond(200, json=record("ACTIVE"))
    api.post(WAKE_URL).respond(202)
    op = wake_op(clock, model_id="{{ params.model }}")
    context = ctx()
    op.render_template_fields(context)
    assert op.execute(context)["status"] == "ACTIVE"


# --- the worker wait -------------------------------------------------------------------------------------------


def test_cold_start_on_the_worker_logs_each_change_with_time_since_wake(
    api: respx.MockRouter, clock: FakeClock, log: RecordingLog
) -> None:
    status = api.get(STATUS_URL).mock(
        side_effect=statuses("SCALED_TO_ZERO", "SCALED_TO_ZERO", "WAKING_UP", *["WAKING_UP"] * 17, "ACTIVE")
    )
    wake = api.post(WAKE_URL).respond(202)
    ti = FakeTI()
    result = wake_op(clock).execute(ctx(ti))
    assert result["status"] == "ACTIVE"
    assert wake.call_count == 1
    assert status.call_count == 21
    text = log.text()
    assert "SCALED_TO_ZERO → WAKING_UP after 10 s" in text
    assert "WAKING_UP → ACTIVE after 3 min 10 s" in text
    assert "SCALED_TO_ZERO → WAKING_UP after 10 s → ACTIVE after 3 min 10 s" in text
    assert ti.xcoms[BasetenModelLink().xcom_key] == "https://app.baseten.co/models/abc123/overview"


def test_already_active_is_woken_and_returned_without_polling(api: respx.MockRouter, clock: FakeClock) -> None:
    status = api.get(STATUS_URL).respond(200, json=record("ACTIVE"))
    wake = api.post(WAKE_URL).respond(202)
    assert wake_op(clock).execute(ctx())["status"] == "ACTIVE"
    assert status.call_count == 1
    assert wake.call_count == 1
    assert clock.sleeps == []


def test_wait_for_ready_false_returns_the_record_read_before_the_wake(api: respx.MockRouter, clock: FakeClock) -> None:
    status = api.get(STATUS_URL).respond(200, json=record("SCALED_TO_ZERO"))
    wake = api.post(WAKE_URL).respond(202)
    assert wake_op(clock, wait_for_ready=False).execute(ctx())["status"] == "SCALED_TO_ZERO"
    assert status.call_count == 1
    assert wake.call_count == 1


def test_invoke_only_key_still_wakes_when_not_waiting(
    api: respx.MockRouter, clock: FakeClock, log: RecordingLog
) -> None:
    api.get(STATUS_URL).respond(403, json={"error": "forbidden"})
    wake = api.post(WAKE_URL).respond(202)
    assert wake_op(clock, wait_for_ready=False).execute(ctx()) is None
    assert wake.call_count == 1
    assert any(level == "warning" and "cannot read the status" in line for level, line in log.lines)


def test_invoke_only_key_fails_when_waiting(api: respx.MockRouter, clock: FakeClock) -> None:
    api.get(STATUS_URL).respond(403, json={"error": "forbidden"})
    wake = api.post(WAKE_URL).respond(202)
    with pytest.raises(BasetenAuthError):
        wake_op(clock).execute(ctx())
    assert not wake.called


@pytest.mark.parametrize("status", ["BUILD_FAILED", "DEPLOY_FAILED", "BUILD_STOPPED", "FAILED"])
def test_failed_deployment_fails_fast_without_a_wake(api: respx.MockRouter, clock: FakeClock, status: str) -> None:
    api.get(STATUS_URL).respond(200, json=record(status))
    wake = api.post(WAKE_URL).respond(202)
    with pytest.raises(BasetenDeploymentError, match=status):
        wake_op(clock).execute(ctx())
    assert not wake.called
    assert clock.sleeps == []


@pytest.mark.parametrize("status", ["INACTIVE", "DEACTIVATING"])
def test_inactive_fails_fast_with_a_clear_message(api: respx.MockRouter, clock: FakeClock, status: str) -> None:
    api.get(STATUS_URL).respond(200, json=record(status))
    wake = api.post(WAKE_URL).respond(202)
    activate = api.post(ACTIVATE_URL).respond(200, json={"success": True})
    with pytest.raises(BasetenDeploymentError, match="activate_if_inactive=True"):
        wake_op(clock).execute(ctx())
    assert not wake.called
    assert not activate.called


def test_activate_if_inactive_activates_then_wakes(api: respx.MockRouter, clock: FakeClock) -> None:
    order: list[str] = []
    api.get(STATUS_URL).mock(side_effect=statuses("INACTIVE", "INACTIVE", "DEPLOYING", "LOADING_MODEL", "ACTIVE"))

    def note(name: str, response: httpx.Response):
        def handler(_request: httpx.Request) -> httpx.Response:
            order.append(name)
            return response

        return handler

    api.post(ACTIVATE_URL).mock(side_effect=note("activate", httpx.Response(200, json={"success": True})))
    api.post(WAKE_URL).mock(side_effect=note("wake", httpx.Response(202)))
    result = wake_op(clock, activate_if_inactive=True).execute(ctx())
    assert result["status"] == "ACTIVE"
    assert order == ["activate", "wake"]


def test_activation_refused_fails(api: respx.MockRouter, clock: FakeClock) -> None:
    api.get(STATUS_URL).respond(200, json=record("INACTIVE"))
    api.post(ACTIVATE_URL).respond(200, json={"success": False})
    wake = api.post(WAKE_URL).respond(202)
    with pytest.raises(BasetenDeploymentError, match="did not accept the activation"):
        wake_op(clock, activate_if_inactive=True).execute(ctx())
    assert not wake.called


def test_scaled_to_zero_past_the_grace_fails(api: respx.MockRouter, clock: FakeClock) -> None:
    api.get(STATUS_URL).respond(200, json=record("SCALED_TO_ZERO"))
    api.post(WAKE_URL).respond(202)
    with pytest.raises(BasetenDeploymentError, match="the wake did not take"):
        wake_op(clock, stale_read_grace=30).execute(ctx())
    assert clock.now - T0 == 40


def test_timeout_on_the_worker_respects_the_deadline(api: respx.MockRouter, clock: FakeClock) -> None:
    api.get(STATUS_URL).mock(side_effect=statuses("SCALED_TO_ZERO", *["WAKING_UP"] * 100))
    api.post(WAKE_URL).respond(202)
    with pytest.raises(BasetenDeploymentError, match=r"did not become ACTIVE within 1 min 5 s.*\[timeout\]"):
        wake_op(clock, timeout=65).execute(ctx())
    assert clock.now - T0 == 65


def test_unhealthy_until_the_deadline_says_so(api: respx.MockRouter, clock: FakeClock, log: RecordingLog) -> None:
    api.get(STATUS_URL).mock(side_effect=statuses("SCALED_TO_ZERO", *["UNHEALTHY"] * 100))
    api.post(WAKE_URL).respond(202)
    with pytest.raises(BasetenDeploymentError, match="UNHEALTHY"):
        wake_op(clock, timeout=60).execute(ctx())
    assert any(level == "warning" and "UNHEALTHY" in line for level, line in log.lines)


def test_one_failed_read_does_not_fail_the_wait(api: respx.MockRouter, clock: FakeClock) -> None:
    api.get(STATUS_URL).mock(
        side_effect=[*statuses("SCALED_TO_ZERO", "WAKING_UP"), httpx.Response(502), *statuses("ACTIVE")]
    )
    api.post(WAKE_URL).respond(202)
    assert wake_op(clock).execute(ctx())["status"] == "ACTIVE"


def test_pinned_deployment_and_named_environment(api: respx.MockRouter, clock: FakeClock) -> None:
    api.get("https://api.baseten.co/v1/models/abc123/deployments/dep9").respond(200, json=record("ACTIVE"))
    pinned = api.post("https://model-abc123.api.baseten.co/deployment/dep9/wake").respond(202)
    env = {"name": "staging", "current_deployment": record("ACTIVE")}
    api.get("https://api.baseten.co/v1/models/abc123/environments/staging").respond(200, json=env)
    staging = api.post("https://model-abc123.api.baseten.co/environments/staging/wake").respond(202)
    assert wake_op(clock, deployment_id="dep9").execute(ctx())["status"] == "ACTIVE"
    assert wake_op(clock, environment="staging").execute(ctx())["status"] == "ACTIVE"
    assert pinned.called
    assert staging.called


# --- deferral --------------------------------------------------------------------------------------------------


def test_deferrable_defers_with_an_absolute_deadline(api: respx.MockRouter, clock: FakeClock) -> None:
    status = api.get(STATUS_URL).respond(200, json=record("SCALED_TO_ZERO"))
    api.post(WAKE_URL).respond(202)
    op = wake_op(clock, deferrable=True, poll_interval=7, timeout=timedelta(minutes=5), stale_read_grace=12)
    with pytest.raises(TaskDeferred) as caught:
        op.execute(ctx())
    trigger = caught.value.trigger
    assert isinstance(trigger, BasetenDeploymentReadyTrigger)
    _, kwargs = trigger.serialize()
    assert kwargs == {
        "model_id": "abc123",
        "deadline": T0 + 300,
        "woke_at": T0,
        "baseten_conn_id": "baseten_default",
        "environment": "production",
        "deployment_id": None,
        "regional": False,
        "poll_interval": 7.0,
        "stale_read_grace": 12.0,
        "last_status": "SCALED_TO_ZERO",
        "activated": False,
    }
    assert caught.value.method_name == "execute_complete"
    assert caught.value.timeout is not None
    assert caught.value.timeout.total_seconds() >= 300
    assert status.call_count == 1


def test_deferrable_carries_the_rendered_conn_id(
    api: respx.MockRouter, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_OTHER", json.dumps({"conn_type": "baseten", "password": "other-key-12345"}))
    api.get(STATUS_URL).respond(200, json=record("WAKING_UP"))
    api.post(WAKE_URL).respond(202)
    op = wake_op(clock, deferrable=True, baseten_conn_id="{{ params.conn }}")
    context = {"ti": FakeTI(), "params": {"conn": "other"}}
    op.render_template_fields(context)
    with pytest.raises(TaskDeferred) as caught:
        op.execute(context)
    assert caught.value.trigger.serialize()[1]["baseten_conn_id"] == "other"


def test_deferrable_does_not_defer_when_already_active(api: respx.MockRouter, clock: FakeClock) -> None:
    api.get(STATUS_URL).respond(200, json=record("ACTIVE"))
    api.post(WAKE_URL).respond(202)
    assert wake_op(clock, deferrable=True).execute(ctx())["status"] == "ACTIVE"


@pytest.mark.parametrize(
    "event",
    [None, {}, {"status": "weird"}, {"status": "failed", "message": "x"}, {"status": "timeout"}, {"status": "error"}],
)
def test_execute_complete_rejects_everything_but_success(event: Any, clock: FakeClock) -> None:
    with pytest.raises(BasetenDeploymentError):
        wake_op(clock).execute_complete(ctx(), event)


def test_execute_complete_logs_the_transitions_and_returns_the_record(clock: FakeClock, log: RecordingLog) -> None:
    event = {
        "status": "success",
        "deployment": record("ACTIVE"),
        "transitions": [
            {"from": "SCALED_TO_ZERO", "to": "WAKING_UP", "after_s": 2.0},
            {"from": "WAKING_UP", "to": "ACTIVE", "after_s": 190.0},
        ],
    }
    assert wake_op(clock).execute_complete(ctx(), event) == record("ACTIVE")
    assert "SCALED_TO_ZERO → WAKING_UP after 2 s → ACTIVE after 3 min 10 s" in log.text()


def test_mapping_over_models() -> None:
    from airflow.providers.common.compat.sdk import DAG, MappedOperator

    with DAG("wake_many", schedule=None, start_date=datetime(2024, 1, 1)):
        mapped = BasetenWakeOperator.partial(task_id="wake", deferrable=True).expand(model_id=["abc123", "def456"])
    assert isinstance(mapped, MappedOperator)
    assert mapped.unmap({"model_id": "def456"}).model_id == "def456"


# --- deadlines and what the messages say ---------------------------------------------------------------------


class StartedTI(FakeTI):
    def __init__(self, start: float) -> None:
        super().__init__()
        self.start_date = datetime.fromtimestamp(start).astimezone()


def test_deferred_wait_folds_in_execution_timeout(api: respx.MockRouter, clock: FakeClock) -> None:
    """Airflow does not enforce execution_timeout while deferred: the trigger's deadline carries it."""
    api.get(STATUS_URL).respond(200, json=record("SCALED_TO_ZERO"))
    api.post(WAKE_URL).respond(202)
    op = wake_op(clock, deferrable=True, timeout=600, execution_timeout=timedelta(minutes=3))
    with pytest.raises(TaskDeferred) as caught:
        op.execute(ctx(StartedTI(T0 - 60)))  # the try started a minute before the wake
    _, kwargs = caught.value.trigger.serialize()
    assert kwargs["deadline"] == pytest.approx(T0 + 120)
    assert caught.value.timeout.total_seconds() < 600


def test_deferred_wait_keeps_timeout_when_it_ends_first(api: respx.MockRouter, clock: FakeClock) -> None:
    api.get(STATUS_URL).respond(200, json=record("SCALED_TO_ZERO"))
    api.post(WAKE_URL).respond(202)
    op = wake_op(clock, deferrable=True, timeout=60, execution_timeout=timedelta(hours=1))
    with pytest.raises(TaskDeferred) as caught:
        op.execute(ctx(StartedTI(T0)))
    assert caught.value.trigger.serialize()[1]["deadline"] == pytest.approx(T0 + 60)


def test_each_worker_read_is_bounded_by_the_time_left(api: respx.MockRouter, clock: FakeClock) -> None:
    status = api.get(STATUS_URL).respond(200, json=record("WAKING_UP"))
    api.post(WAKE_URL).respond(202)
    with pytest.raises(BasetenDeploymentError, match=r"\[timeout\]"):
        wake_op(clock, timeout=25, poll_interval=10).execute(ctx())
    read_timeouts = [call.request.extensions["timeout"]["read"] for call in status.calls]
    # The read before the wake has the full 30 s; the reads at 0, 10 and 20 s have 25, 15 and 5 s left.
    assert read_timeouts == [30.0, pytest.approx(25, abs=0.1), pytest.approx(15, abs=0.1), pytest.approx(5, abs=0.1)]


def test_scaled_to_zero_message_says_what_every_read_saw(api: respx.MockRouter, clock: FakeClock) -> None:
    api.get(STATUS_URL).respond(200, json=record("SCALED_TO_ZERO"))
    api.post(WAKE_URL).respond(202)
    with pytest.raises(BasetenDeploymentError) as caught:
        wake_op(clock, stale_read_grace=30, poll_interval=10).execute(ctx())
    message = str(caught.value)
    assert "SCALED_TO_ZERO at every read since the wake at 2023-11-14 22:13:20 UTC (5 status reads over 40 s" in message
    assert "lower poll_interval (now 10 s)" in message

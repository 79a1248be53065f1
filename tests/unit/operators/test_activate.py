"""``activate_if_inactive`` (one mechanism in the base operator) on predict, chain run, chat, async predict, batch."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx
from airflow_testing import FakeClock, set_conn

from airflow_provider_baseten.exceptions import BasetenDeploymentError, BasetenNotFoundError
from airflow_provider_baseten.operators.async_predict import BasetenAsyncPredictOperator
from airflow_provider_baseten.operators.chat import BasetenChatOperator
from airflow_provider_baseten.operators.predict import BasetenChainRunOperator, BasetenPredictOperator

STATUS_URL = "https://api.baseten.co/v1/models/abc123/deployments/production"
PREDICT_URL = "https://model-abc123.api.baseten.co/production/predict"
NOT_FOUND = httpx.Response(404, json={"error": "Deployment is not active", "error_code": "model_does_not_exist"})


class FakeTI:
    dag_id, task_id, run_id, map_index = "dag1", "task", "manual__2024-01-01T00:00:00+00:00", -1

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def ctx() -> dict[str, Any]:
    return {"ti": FakeTI()}


def status(name: str) -> httpx.Response:
    return httpx.Response(200, json={"id": "dep1", "status": name, "active_replica_count": 0})


@pytest.fixture(autouse=True)
def baseten_conn(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch)


def seams(op: Any, clock: FakeClock) -> Any:
    op._activation_clock = clock.time
    op._activation_sleep = clock.sleep
    return op


def predict_op(clock: FakeClock, **kwargs: Any) -> BasetenPredictOperator:
    return seams(BasetenPredictOperator(task_id="p", model_id="abc123", model_input={"x": 1}, **kwargs), clock)


def test_inactive_deployment_is_activated_waited_for_and_then_predicted_on(api: respx.MockRouter, clock: FakeClock):
    predict = api.post(PREDICT_URL).mock(side_effect=[NOT_FOUND, httpx.Response(200, json={"y": 2})])
    api.get(STATUS_URL).mock(side_effect=[status("INACTIVE"), status("WAKING_UP"), status("ACTIVE")])
    activate = api.post(f"{STATUS_URL}/activate").mock(return_value=httpx.Response(200, json={"success": True}))
    assert predict_op(clock, activate_if_inactive=True).execute(ctx()) == {"y": 2}
    assert activate.call_count == 1
    assert predict.call_count == 2
    assert clock.sleeps == [10.0]


def test_without_the_option_the_task_fails_at_once_naming_it(api: respx.MockRouter, clock: FakeClock):
    api.post(PREDICT_URL).mock(return_value=NOT_FOUND)
    api.get(STATUS_URL).mock(return_value=status("INACTIVE"))
    activate = api.post(f"{STATUS_URL}/activate")
    with pytest.raises(BasetenDeploymentError, match=r"activate_if_inactive=True.*billed"):
        predict_op(clock).execute(ctx())
    assert activate.call_count == 0


def test_a_404_for_another_reason_stays_a_404(api: respx.MockRouter, clock: FakeClock):
    api.post(PREDICT_URL).mock(return_value=NOT_FOUND)
    api.get(STATUS_URL).mock(return_value=status("ACTIVE"))
    with pytest.raises(BasetenNotFoundError):
        predict_op(clock, activate_if_inactive=True).execute(ctx())


def test_a_status_read_that_fails_keeps_the_original_404(api: respx.MockRouter, clock: FakeClock):
    api.post(PREDICT_URL).mock(return_value=NOT_FOUND)
    api.get(STATUS_URL).mock(return_value=httpx.Response(403, json={"error": "invoke-only key"}))
    with pytest.raises(BasetenNotFoundError):
        predict_op(clock, activate_if_inactive=True).execute(ctx())


def test_an_activation_that_does_not_take_fails(api: respx.MockRouter, clock: FakeClock):
    api.post(PREDICT_URL).mock(return_value=NOT_FOUND)
    api.get(STATUS_URL).mock(return_value=status("INACTIVE"))
    api.post(f"{STATUS_URL}/activate").mock(return_value=httpx.Response(200, json={"success": True}))
    with pytest.raises(BasetenDeploymentError, match="activation did not take"):
        predict_op(clock, activate_if_inactive=True).execute(ctx())


def test_chain_run_reports_an_inactive_chain(api: respx.MockRouter, clock: FakeClock):
    api.post("https://chain-chn1.api.baseten.co/production/run_remote").mock(return_value=NOT_FOUND)
    env = {"name": "production", "current_deployment": {"id": "cd1", "status": "INACTIVE", "chainlets": []}}
    api.get("https://api.baseten.co/v1/chains/chn1/environments/production").mock(
        return_value=httpx.Response(200, json=env)
    )
    op = seams(BasetenChainRunOperator(task_id="c", chain_id="chn1", chain_input={}, activate_if_inactive=True), clock)
    with pytest.raises(BasetenDeploymentError, match="cannot activate chains"):
        op.execute(ctx())


def test_chat_on_a_deployed_model_activates(api: respx.MockRouter, clock: FakeClock):
    completion = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}], "model": "m"}
    chat = api.post("https://model-abc123.api.baseten.co/production/sync/v1/chat/completions").mock(
        side_effect=[NOT_FOUND, httpx.Response(200, json=completion)]
    )
    api.get(STATUS_URL).mock(side_effect=[status("INACTIVE"), status("ACTIVE")])
    api.post(f"{STATUS_URL}/activate").mock(return_value=httpx.Response(200, json={"success": True}))
    op = BasetenChatOperator(
        task_id="chat",
        model_id="abc123",
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        activate_if_inactive=True,
    )
    assert seams(op, clock).execute(ctx())["content"] == "hi"
    assert chat.call_count == 2


def test_async_predict_submit_activates_first(api: respx.MockRouter, clock: FakeClock):
    submit = api.post("https://model-abc123.api.baseten.co/production/async_predict").mock(
        side_effect=[NOT_FOUND, httpx.Response(201, json={"request_id": "req1"})]
    )
    api.get(STATUS_URL).mock(side_effect=[status("INACTIVE"), status("ACTIVE")])
    api.post(f"{STATUS_URL}/activate").mock(return_value=httpx.Response(200, json={"success": True}))
    op = seams(
        BasetenAsyncPredictOperator(
            task_id="a", model_id="abc123", model_input={"x": 1}, activate_if_inactive=True, wait_for_completion=False
        ),
        clock,
    )
    assert op.submit_job({}) == "req1"
    assert submit.call_count == 2


# --- the activation wait deferred (one path: the wake's readiness trigger) ----------------------------------------


class Store(dict):  # type: ignore[type-arg]
    """The task state store (Airflow 3.3+): survives retries of one task instance."""

    def set(self, key: str, value: Any) -> None:
        self[key] = value


async def test_deferred_activation_runs_the_trigger_then_predicts_after_resuming(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    """The worker (sync client, on a thread) and the trigger (hot path, on the loop) against one loopback server."""
    import asyncio

    from airflow.providers.common.compat.sdk import TaskDeferred
    from status_server import StatusServer

    from airflow_provider_baseten.triggers.deployment import BasetenDeploymentReadyTrigger

    async with StatusServer(monkeypatch) as server:
        predict = server.post(PREDICT_URL).mock(side_effect=[NOT_FOUND, httpx.Response(200, json={"y": 2})])
        server.get(STATUS_URL).mock(side_effect=[status("INACTIVE"), status("WAKING_UP"), status("ACTIVE")])
        activate = server.post(f"{STATUS_URL}/activate").respond(200, json={"success": True})
        op = predict_op(clock, activate_if_inactive=True, deferrable=True)
        with pytest.raises(TaskDeferred) as caught:
            await asyncio.to_thread(op.execute, ctx())
        deferral = caught.value
        assert deferral.method_name == "execute_after_activation"
        assert isinstance(deferral.trigger, BasetenDeploymentReadyTrigger)
        kwargs = deferral.trigger.serialize()[1]
        assert (kwargs["activated"], kwargs["last_status"], kwargs["woke_at"]) == (True, "INACTIVE", clock.now)
        assert predict.call_count == 1  # only the 404: nothing waits on the worker
        trigger = BasetenDeploymentReadyTrigger(**kwargs, clock=clock.time, sleep=clock.asleep)
        events = [event.payload async for event in trigger.run()]
        assert [event["status"] for event in events] == ["success"]
        resumed = predict_op(clock, activate_if_inactive=True, deferrable=True)  # Airflow resumes a fresh instance
        assert await asyncio.to_thread(resumed.execute_after_activation, ctx(), events[0]) == {"y": 2}
        server.check()
    assert activate.call_count == 1
    assert predict.call_count == 2


async def _events(trigger: Any) -> list[dict[str, Any]]:
    from airflow_provider_baseten.hooks.baseten import close_shared_async_clients

    try:
        return [event.payload async for event in trigger.run()]
    finally:
        await close_shared_async_clients()


@pytest.mark.parametrize("event", [None, {"status": "timeout", "message": "not ACTIVE in time"}, {"status": "odd"}])
def test_resuming_on_anything_but_success_fails_without_predicting(api: respx.MockRouter, clock: FakeClock, event: Any):
    predict = api.post(PREDICT_URL).mock(return_value=httpx.Response(200, json={"y": 2}))
    with pytest.raises(BasetenDeploymentError):
        predict_op(clock, activate_if_inactive=True, deferrable=True).execute_after_activation(ctx(), event)
    assert predict.call_count == 0


def test_after_resuming_an_inactive_read_is_not_activated_again(api: respx.MockRouter, clock: FakeClock):
    api.post(PREDICT_URL).mock(return_value=NOT_FOUND)
    api.get(STATUS_URL).mock(return_value=status("INACTIVE"))
    activate = api.post(f"{STATUS_URL}/activate").mock(return_value=httpx.Response(200, json={"success": True}))
    success = {"status": "success", "message": "ACTIVE", "deployment": {"id": "dep1", "status": "ACTIVE"}}
    with pytest.raises(BasetenDeploymentError, match="not activating it twice"):
        predict_op(clock, activate_if_inactive=True, deferrable=True).execute_after_activation(ctx(), success)
    assert activate.call_count == 0


def test_a_retry_right_after_an_activation_waits_on_it_instead_of_asking_again(api: respx.MockRouter, clock: FakeClock):
    from airflow.providers.common.compat.sdk import TaskDeferred

    api.post(PREDICT_URL).mock(return_value=NOT_FOUND)
    api.get(STATUS_URL).mock(return_value=status("INACTIVE"))  # Baseten's record may lag the activation
    activate = api.post(f"{STATUS_URL}/activate").mock(return_value=httpx.Response(200, json={"success": True}))
    store = Store()
    with pytest.raises(TaskDeferred):
        predict_op(clock, activate_if_inactive=True, deferrable=True).execute({**ctx(), "task_state_store": store})
    asked_at = clock.now
    clock.sleep(5)  # the try died (worker lost) before the trigger reported; the retry starts 5 s later
    with pytest.raises(TaskDeferred) as caught:
        predict_op(clock, activate_if_inactive=True, deferrable=True).execute({**ctx(), "task_state_store": store})
    assert activate.call_count == 1
    assert caught.value.trigger.serialize()[1]["woke_at"] == asked_at  # the stale-read grace counts from the ask
    clock.sleep(60)  # past the grace, an INACTIVE deployment did not take the activation: ask again
    with pytest.raises(TaskDeferred):
        predict_op(clock, activate_if_inactive=True, deferrable=True).execute({**ctx(), "task_state_store": store})
    assert activate.call_count == 2


def test_a_rate_limited_activation_waits_as_baseten_says(
    api: respx.MockRouter, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
):
    set_conn(monkeypatch, max_retries=2)
    api.post(PREDICT_URL).mock(side_effect=[NOT_FOUND, httpx.Response(200, json={"y": 2})])
    api.get(STATUS_URL).mock(side_effect=[status("INACTIVE"), status("ACTIVE")])
    limited = httpx.Response(429, headers={"Retry-After": "3"}, json={"error": "rate limited"})
    activate = api.post(f"{STATUS_URL}/activate").mock(
        side_effect=[limited, httpx.Response(200, json={"success": True})]
    )
    op = predict_op(clock, activate_if_inactive=True)
    slept: list[float] = []
    op.hook._sleep = slept.append  # type: ignore[attr-defined]
    assert op.execute(ctx()) == {"y": 2}
    assert activate.call_count == 2
    assert slept[:1] == [3.0]

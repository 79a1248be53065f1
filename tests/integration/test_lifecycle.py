"""Batch windows, activation and promotion against the emulator over loopback HTTP (scaled emulated time).

Operators run their worker waits on the wall clock with short poll intervals; the emulator compresses its cold
starts and promotions (200x), and ``advance`` jumps it over the two idle weeks.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred
from task_context import DagXComTI

from airflow_provider_baseten.emulator import DeploymentSpec, ModelSpec, World
from airflow_provider_baseten.exceptions import BasetenDeploymentError
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.baseten import BasetenHook, close_shared_async_clients
from airflow_provider_baseten.operators.lifecycle import (
    BasetenBatchWindowOperator,
    BasetenPromoteOperator,
    BasetenRestoreAutoscalingOperator,
)
from airflow_provider_baseten.operators.predict import BasetenPredictOperator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

COLD = Target.of(model_id="coldstart01")
FAST = {"poll_interval": 0.05, "timeout": 60}


class Store(dict):  # type: ignore[type-arg]
    def set(self, key: str, value: Any) -> None:
        self[key] = value


def ctx(xcoms: dict[tuple[str, str], Any], task_id: str, store: Store, try_number: int = 1) -> dict[str, Any]:
    return {"ti": DagXComTI(xcoms, task_id, try_number), "task_state_store": store}


@pytest.fixture
def hook(baseten_emulator: Any) -> Any:
    hook = BasetenHook(customer_request_id="")
    yield hook
    hook.close()


def run_trigger(trigger: Any) -> list[dict[str, Any]]:
    """Every event of one trigger run (as the triggerer would run it), on a fresh loop."""

    async def events() -> list[dict[str, Any]]:
        try:
            return [event.payload async for event in trigger.run()]
        finally:
            await close_shared_async_clients()

    return asyncio.run(events())


def window(**kwargs: Any) -> BasetenBatchWindowOperator:
    return BasetenBatchWindowOperator(
        task_id="setup", model_id="coldstart01", min_replica=3, retries=1, **{"deferrable": False, **FAST, **kwargs}
    )


def restore() -> BasetenRestoreAutoscalingOperator:
    return BasetenRestoreAutoscalingOperator(task_id="restore", setup_task_id="setup")


def patches(emu: Any) -> int:
    return emu.journal.count(method="PATCH", path_suffix="/autoscaling_settings")


# --- the window ----------------------------------------------------------------------------------------------------


def test_window_retried_setup_restore_twice_and_a_concurrent_change_survives(baseten_emulator, hook):
    emu = baseten_emulator
    original = hook.get_autoscaling(COLD).model_dump()
    xcoms: dict[tuple[str, str], Any] = {}
    store = Store()
    first = window(wait_for_replicas=False).execute(ctx(xcoms, "setup", store))
    assert first["original"] == {"min_replica": 0, "max_replica": 1}
    xcoms.clear()  # the retry: XCom cleared, the task state store kept
    second = window().execute(ctx(xcoms, "setup", store, try_number=2))
    assert second["original"] == {"min_replica": 0, "max_replica": 1}
    assert second["deployment"]["active_replica_count"] >= 3
    hook.update_autoscaling(COLD, {"concurrency_target": 9})  # someone else's change during the window
    restore().execute(ctx(xcoms, "restore", store))
    restore().execute(ctx(xcoms, "restore", store))
    final = hook.get_autoscaling(COLD).model_dump()
    assert final == {**original, "concurrency_target": 9}
    # The window twice (the second UNCHANGED), the concurrent change, and one restore (the second sent nothing).
    assert patches(emu) == 4


def test_window_waits_in_the_trigger_until_the_floor_is_up(baseten_emulator, hook):
    xcoms: dict[tuple[str, str], Any] = {}
    op = window(deferrable=True)
    with pytest.raises(TaskDeferred) as caught:
        op.execute(ctx(xcoms, "setup", Store()))

    events = run_trigger(caught.value.trigger)
    assert [event["status"] for event in events] == ["success"]
    result = op.execute_complete(ctx(xcoms, "setup", Store()), events[0])
    assert result["deployment"]["active_replica_count"] == 3
    assert hook.get_deployment(COLD).active_replica_count == 3


# --- activation ------------------------------------------------------------------------------------------------------


def test_a_deployment_inactive_after_two_idle_weeks_is_activated_then_predicted_on(baseten_emulator):
    emu = baseten_emulator
    emu.advance(15 * 86400)
    assert emu.status("coldstart01") == "INACTIVE"
    predict = BasetenPredictOperator(
        task_id="predict", model_id="coldstart01", model_input={"text": "great"}, activate_if_inactive=True
    )
    predict.activation_poll_interval = 0.05
    assert predict.execute({"ti": DagXComTI({}, "predict")})["label"] == "positive"
    assert emu.journal.count(method="POST", path_suffix="/activate") == 1
    assert emu.journal.count(method="POST", path_suffix="/predict") == 2  # the 404, then the prediction

    emu.advance(15 * 86400)
    without = BasetenPredictOperator(task_id="predict", model_id="coldstart01", model_input={"text": "great"})
    with pytest.raises(BasetenDeploymentError, match="activate_if_inactive"):
        without.execute({"ti": DagXComTI({}, "predict")})


def test_after_two_idle_weeks_the_activation_wait_defers_then_the_resumed_task_predicts(baseten_emulator):
    emu = baseten_emulator
    emu.advance(15 * 86400)
    assert emu.status("coldstart01") == "INACTIVE"

    def operator() -> BasetenPredictOperator:
        op = BasetenPredictOperator(
            task_id="predict",
            model_id="coldstart01",
            model_input={"text": "great"},
            activate_if_inactive=True,
            deferrable=True,
        )
        op.activation_poll_interval = 0.05
        return op

    with pytest.raises(TaskDeferred) as caught:
        operator().execute({"ti": DagXComTI({}, "predict")})
    assert caught.value.method_name == "execute_after_activation"

    events = run_trigger(caught.value.trigger)
    assert [event["status"] for event in events] == ["success"]
    assert emu.status("coldstart01") == "ACTIVE"
    result = operator().execute_after_activation({"ti": DagXComTI({}, "predict")}, events[0])
    assert result["label"] == "positive"
    assert emu.journal.count(method="POST", path_suffix="/activate") == 1
    assert emu.journal.count(method="POST", path_suffix="/predict") == 2  # the 404, then the prediction


def test_a_batch_on_an_inactive_deployment_fails_before_any_predict(baseten_emulator, tmp_path):
    from airflow_provider_baseten.operators.batch import BasetenBatchPredictOperator

    emu = baseten_emulator
    emu.advance(15 * 86400)
    batch = BasetenBatchPredictOperator(
        task_id="batch",
        model_id="coldstart01",
        inputs=[{"text": "great"}, {"text": "bad"}],
        output_path=str(tmp_path / "out.jsonl"),
    )
    with pytest.raises(BasetenDeploymentError, match=r"activate_if_inactive=True.*billed"):
        batch.execute({"ti": DagXComTI({}, "batch")})
    assert emu.journal.count(method="POST", path_suffix="/predict") == 0
    assert emu.journal.count(method="POST", path_suffix="/activate") == 0
    assert emu.status("coldstart01") == "INACTIVE"


# --- promotion -------------------------------------------------------------------------------------------------------


def failing_world() -> World:
    world = World.default()
    world.add(
        ModelSpec(
            "promo01",
            "echo",
            deployments=[
                DeploymentSpec("promoprod01", min_replicas=1),
                DeploymentSpec("promonew01", None, min_replicas=1, promotion_failure="replica crashed on startup"),
            ],
        )
    )
    return world


def promote(**kwargs: Any) -> BasetenPromoteOperator:
    defaults = {"task_id": "promote", "model_id": "sentiment01", "deployment_id": "development", "deferrable": False}
    return BasetenPromoteOperator(**{**defaults, **FAST, **kwargs})


def promotes(emu: Any) -> int:
    return emu.journal.count(method="POST", path_suffix="/promote")


def test_promotion_succeeds_and_the_environment_serves_the_new_deployment(baseten_emulator, hook):
    result = promote(environment="staging").execute({})
    assert result["id"] == "sentdev01"
    assert hook.get_environment("sentiment01", "staging").current_deployment.id == "sentdev01"
    assert promotes(baseten_emulator) == 1


@pytest.mark.baseten_emulator(world=failing_world)
def test_promotion_failure_fails_with_basetens_message(baseten_emulator):
    with pytest.raises(BasetenDeploymentError, match="FAILED: replica crashed on startup"):
        promote(model_id="promo01", deployment_id="promonew01").execute({})


def test_retry_mid_promotion_waits_on_it_and_kill_cancels(baseten_emulator, hook):
    emu = baseten_emulator
    with pytest.raises(TaskDeferred):
        promote(deferrable=True).execute({})
    assert promote().execute({})["id"] == "sentdev01"  # the retry waits on the promotion in progress
    assert promotes(emu) == 1
    assert promote().execute({})["id"] == "sentdev01"  # and once done, a retry is success at once
    assert promotes(emu) == 1

    killed = promote(deferrable=True, environment="staging")
    with pytest.raises(TaskDeferred):
        killed.execute({})
    killed.on_kill()
    env = hook.get_environment("sentiment01", "staging")
    assert env.in_progress_promotion.status == "CANCELED"
    assert env.current_deployment.id == "sentstage01"

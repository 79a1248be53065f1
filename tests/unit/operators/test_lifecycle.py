"""Batch window, restore and promote operators against an in-memory Baseten (a fake hook); no HTTP, no wall clock."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred
from airflow_testing import T0, FakeClock
from task_context import DagXComTI

from airflow_provider_baseten.exceptions import BasetenConfigError, BasetenDeploymentError
from airflow_provider_baseten.hooks.management import autoscaling_update
from airflow_provider_baseten.hooks.models import (
    AutoscalingSettings,
    CancelPromotionResponse,
    Deployment,
    Environment,
    UpdateAutoscalingResponse,
)
from airflow_provider_baseten.operators import lifecycle
from airflow_provider_baseten.operators.lifecycle import (
    WINDOW_XCOM_KEY,
    BasetenBatchWindowOperator,
    BasetenPromoteOperator,
    BasetenRestoreAutoscalingOperator,
    batch_window,
)
from airflow_provider_baseten.triggers.deployment import BasetenDeploymentReadyTrigger
from airflow_provider_baseten.triggers.promotion import BasetenPromotionTrigger

ORIGINAL = {
    "min_replica": 0,
    "max_replica": 2,
    "autoscaling_window": 60,
    "scale_down_delay": 900,
    "concurrency_target": 1,
    "target_utilization_percentage": 70,
}


class Store(dict):  # type: ignore[type-arg]
    def set(self, key: str, value: Any) -> None:
        self[key] = value


class FakeBaseten:
    """One deployment: autoscaling settings, a status and replicas that rise by one per status read."""

    def __init__(self, status: str = "SCALED_TO_ZERO") -> None:
        self.settings = dict(ORIGINAL)
        self.status = status
        self.replicas = 0
        self.patches: list[dict[str, Any]] = []
        self.fail_patch = False

    def get_deployment(self, target: Any, *, time_left: float | None = None) -> Deployment:
        if self.patches and self.replicas < self.settings["min_replica"]:
            self.status = "ACTIVE"
            self.replicas += 1
        return Deployment(
            id="dep1",
            status=self.status,
            active_replica_count=self.replicas,
            autoscaling_settings=AutoscalingSettings(**self.settings),
        )

    def get_autoscaling(self, target: Any) -> AutoscalingSettings:
        return AutoscalingSettings(**self.settings)

    def update_autoscaling(self, target: Any, settings: dict[str, Any]) -> UpdateAutoscalingResponse:
        if self.fail_patch:
            raise BasetenDeploymentError("PATCH failed")
        body = autoscaling_update(settings).body()
        self.patches.append(body)
        self.settings.update(body)
        return UpdateAutoscalingResponse(status="ACCEPTED", message="")

    def close(self) -> None:
        pass


@pytest.fixture
def baseten() -> FakeBaseten:
    return FakeBaseten()


@pytest.fixture
def xcoms() -> dict[tuple[str, str], Any]:
    return {}


@pytest.fixture
def store() -> Store:
    return Store()


def ctx(xcoms: dict[tuple[str, str], Any], store: Store | None, try_number: int = 1) -> dict[str, Any]:
    context: dict[str, Any] = {"ti": DagXComTI(xcoms, "window_scale_up", try_number)}
    if store is not None:
        context["task_state_store"] = store
    return context


def window_op(baseten: FakeBaseten, clock: FakeClock, **kwargs: Any) -> BasetenBatchWindowOperator:
    defaults: dict[str, Any] = {"task_id": "window_scale_up", "model_id": "abc123", "min_replica": 5}
    op = BasetenBatchWindowOperator(**{"deferrable": False, **defaults, **kwargs})
    op.hook = baseten  # type: ignore[assignment]
    op._clock = clock.time  # type: ignore[method-assign]
    op._sleep = clock.sleep  # type: ignore[method-assign]
    return op


def restore_op(baseten: FakeBaseten) -> BasetenRestoreAutoscalingOperator:
    op = BasetenRestoreAutoscalingOperator(task_id="window_restore", setup_task_id="window_scale_up")
    op.hook = baseten  # type: ignore[assignment]
    return op


# --- the window ----------------------------------------------------------------------------------------------------


def test_window_raises_floor_and_ceiling_and_waits_for_the_replicas(baseten, clock, xcoms, store):
    result = window_op(baseten, clock).execute(ctx(xcoms, store))
    assert baseten.patches == [{"min_replica": 5, "max_replica": 5}]
    assert result["original"] == {"min_replica": 0, "max_replica": 2}
    assert result["deployment"]["active_replica_count"] == 5
    assert xcoms[("window_scale_up", WINDOW_XCOM_KEY)]["window"] == {"min_replica": 5, "max_replica": 5}
    assert len(clock.sleeps) == 4  # five reads, one replica more each


def test_window_keeps_a_ceiling_that_is_high_enough_and_sends_extra_fields(baseten, clock, xcoms, store):
    baseten.settings["max_replica"] = 10
    window_op(baseten, clock, min_replica=3, autoscaling={"scale_down_delay": 60}, wait_for_replicas=False).execute(
        ctx(xcoms, store)
    )
    assert baseten.patches == [{"min_replica": 3, "scale_down_delay": 60}]


def test_a_retried_setup_keeps_the_originals_saved_by_the_first_try(baseten, clock, xcoms, store):
    window_op(baseten, clock, wait_for_replicas=False).execute(ctx(xcoms, store))
    xcoms.clear()  # Airflow clears XCom before a retry; the task state store survives
    result = window_op(baseten, clock).execute(ctx(xcoms, store, try_number=2))
    assert result["original"] == {"min_replica": 0, "max_replica": 2}


def test_without_a_store_the_retry_would_take_raised_values_for_originals(baseten, clock, xcoms):
    """The danger the store prevents (and what the 3.1 Variable fallback covers): shown here, then avoided."""
    window_op(baseten, clock, wait_for_replicas=False).execute(ctx(xcoms, Store()))
    result = window_op(baseten, clock, wait_for_replicas=False).execute(ctx(xcoms, Store()))
    assert result["original"]["min_replica"] == 5


def test_below_3_3_the_originals_live_in_an_airflow_variable(baseten, clock, xcoms, monkeypatch):
    variables: dict[str, Any] = {}
    from airflow.providers.common.compat.sdk import Variable

    monkeypatch.setattr(Variable, "get", staticmethod(lambda key, default=None: variables.get(key, default)))
    monkeypatch.setattr(
        Variable, "set", staticmethod(lambda key, value, description=None: variables.update({key: value}))
    )
    monkeypatch.setattr(Variable, "delete", staticmethod(lambda key: variables.pop(key)))
    window_op(baseten, clock, wait_for_replicas=False).execute(ctx(xcoms, None))
    assert list(variables) == ["baseten_window/dag/window_scale_up/run1/-1"]
    result = window_op(baseten, clock, wait_for_replicas=False).execute(ctx(xcoms, None, try_number=2))
    assert result["original"] == {"min_replica": 0, "max_replica": 2}
    restore_op(baseten).execute(ctx(xcoms, None))
    assert variables == {}
    assert baseten.settings == ORIGINAL


def test_a_rerun_after_a_restore_reads_the_settings_afresh(baseten, clock, xcoms, store):
    window_op(baseten, clock, wait_for_replicas=False).execute(ctx(xcoms, store))
    restore_op(baseten).execute(ctx(xcoms, store))
    baseten.settings["max_replica"] = 3  # changed between runs: the next window must restore 3, not 2
    result = window_op(baseten, clock, wait_for_replicas=False).execute(ctx(xcoms, store))
    assert result["original"] == {"min_replica": 0, "max_replica": 3}


def test_the_record_is_pushed_before_the_patch(baseten, clock, xcoms, store):
    baseten.fail_patch = True
    with pytest.raises(BasetenDeploymentError):
        window_op(baseten, clock, retries=1).execute(ctx(xcoms, store))
    assert xcoms[("window_scale_up", WINDOW_XCOM_KEY)]["original"] == {"min_replica": 0, "max_replica": 2}


def test_the_last_try_restores_when_the_wait_fails(baseten, clock, xcoms, store):
    baseten.status = "BUILD_FAILED"
    baseten.get_deployment = lambda target: Deployment(  # type: ignore[method-assign]
        id="dep1", status="BUILD_FAILED", autoscaling_settings=AutoscalingSettings(**baseten.settings)
    )
    with pytest.raises(BasetenDeploymentError):
        window_op(baseten, clock, retries=1).execute(ctx(xcoms, store, try_number=1))
    assert baseten.settings["min_replica"] == 5  # a retry follows: left raised
    with pytest.raises(BasetenDeploymentError):
        window_op(baseten, clock, retries=1).execute(ctx(xcoms, store, try_number=2))
    assert baseten.settings == ORIGINAL


def test_window_defers_with_the_floor_in_the_trigger(baseten, clock, xcoms, store):
    op = window_op(baseten, clock, deferrable=True)
    with pytest.raises(TaskDeferred) as caught:
        op.execute(ctx(xcoms, store))
    trigger = caught.value.trigger
    assert isinstance(trigger, BasetenDeploymentReadyTrigger)
    assert trigger.serialize()[1]["min_replicas"] == 5
    deployment = {"id": "dep1", "status": "ACTIVE", "active_replica_count": 5}
    result = op.execute_complete(ctx(xcoms, store), {"status": "success", "message": "", "deployment": deployment})
    assert result["deployment"] == deployment
    assert result["original"] == {"min_replica": 0, "max_replica": 2}


def test_a_failed_deferred_wait_on_the_last_try_restores(baseten, clock, xcoms, store):
    op = window_op(baseten, clock, deferrable=True)
    with pytest.raises(TaskDeferred):
        op.execute(ctx(xcoms, store))
    with pytest.raises(BasetenDeploymentError, match="too slow"):
        op.execute_complete(ctx(xcoms, store), {"status": "timeout", "message": "too slow"})
    assert baseten.settings == ORIGINAL


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_replica": -1}, "at least 0"),
        ({"min_replica": "many"}, "whole number"),
        ({"min_replica": 4, "max_replica": 2}, "below min_replica"),
        ({"autoscaling": {"min_replica": 3}}, "its own argument"),
        ({"autoscaling": {"replicas": 3}}, "Invalid autoscaling settings"),
    ],
)
def test_window_arguments_are_checked_at_parse_time(kwargs, message):
    with pytest.raises(BasetenConfigError, match=message):
        BasetenBatchWindowOperator(task_id="w", model_id="abc123", **{"min_replica": 1, **kwargs})


# --- the restore ---------------------------------------------------------------------------------------------------


def test_restore_puts_back_exactly_the_changed_fields_and_twice_is_harmless(baseten, clock, xcoms, store):
    window_op(baseten, clock).execute(ctx(xcoms, store))
    baseten.settings["concurrency_target"] = 4  # someone else's change to another field during the window
    first = restore_op(baseten).execute(ctx(xcoms, store))
    assert first is not None
    assert first["restored"] == {"min_replica": 0, "max_replica": 2}
    assert baseten.settings == {**ORIGINAL, "concurrency_target": 4}
    second = restore_op(baseten).execute(ctx(xcoms, store))
    assert second is not None
    assert (second["restored"], second["left"]) == ({}, {})  # nothing sent, nothing reported as changed by others
    assert len(baseten.patches) == 2


def test_restore_leaves_a_window_field_someone_changed(baseten, clock, xcoms, store):
    window_op(baseten, clock, wait_for_replicas=False).execute(ctx(xcoms, store))
    baseten.settings["max_replica"] = 8
    result = restore_op(baseten).execute(ctx(xcoms, store))
    assert result is not None
    assert (result["restored"], result["left"]) == ({"min_replica": 0}, {"max_replica": 8})


def test_restore_without_a_record_does_nothing(baseten, xcoms):
    assert restore_op(baseten).execute(ctx(xcoms, None)) is None
    assert baseten.patches == []


def test_batch_window_wires_setup_and_teardown_around_the_batch():
    from airflow.providers.common.compat.sdk import DAG
    from airflow.providers.standard.operators.empty import EmptyOperator

    with DAG("window", schedule=None):
        batch = EmptyOperator(task_id="batch")
        setup, teardown = batch_window(model_id="abc123", min_replica=4, around=batch, deferrable=True)
    assert (setup.task_id, teardown.task_id) == ("baseten_window_scale_up", "baseten_window_restore")
    assert setup.is_setup
    assert teardown.is_teardown
    assert teardown.setup_task_id == setup.task_id
    assert batch.task_id in setup.downstream_task_ids
    assert teardown.task_id in batch.downstream_task_ids
    assert setup.deferrable


# --- promotion -----------------------------------------------------------------------------------------------------


def deployment(dep_id: str) -> dict[str, Any]:
    return {"id": dep_id, "status": "ACTIVE", "model_id": "abc123"}


class FakePromotions:
    """An environment whose promotion walks through ``steps`` (one per read after the promote)."""

    def __init__(self, steps: list[str], current: str = "old1", error: str | None = None) -> None:
        self.steps = list(steps)
        self.current = current
        self.candidate: str | None = None
        self.status: str | None = None
        self.error = error
        self.promotes: list[tuple[str, str]] = []
        self.cancels = 0

    def promote(self, model_id: str, deployment_id: str, **kwargs: Any) -> Deployment:
        self.promotes.append((deployment_id, kwargs["environment"]))
        self.candidate, self.status = deployment_id, "RELEASING"
        return Deployment(**deployment(deployment_id))

    def get_environment(self, model_id: str, environment: str, *, time_left: float | None = None) -> Environment:
        if self.candidate and self.steps and self.status not in ("SUCCEEDED", "FAILED", "CANCELED"):
            self.status = self.steps.pop(0)
            if self.status == "SUCCEEDED":
                self.current = self.candidate
        promotion = None
        if self.status:
            promotion = {"status": self.status, "percent_traffic_to_new_version": 0, "error_message": self.error}
        return Environment.model_validate(
            {
                "name": environment,
                "current_deployment": deployment(self.current),
                "candidate_deployment": deployment(self.candidate) if self.candidate else None,
                "in_progress_promotion": promotion,
            }
        )

    def get_deployment(self, target: Any, *, time_left: float | None = None) -> Deployment:
        return Deployment(**deployment("dev1"))

    def cancel_promotion(self, model_id: str, environment: str) -> CancelPromotionResponse:
        self.cancels += 1
        self.status = "CANCELED"
        return CancelPromotionResponse(status="CANCELED", message="")


def promote_op(fake: FakePromotions, clock: FakeClock, **kwargs: Any) -> BasetenPromoteOperator:
    defaults: dict[str, Any] = {"task_id": "promote", "model_id": "abc123", "deployment_id": "new1"}
    op = BasetenPromoteOperator(**{"deferrable": False, **defaults, **kwargs})
    op.hook = fake  # type: ignore[assignment]
    op._clock = clock.time  # type: ignore[method-assign]
    op._sleep = clock.sleep  # type: ignore[method-assign]
    return op


def test_promote_waits_for_success_and_returns_the_new_current_deployment(clock):
    fake = FakePromotions(["RELEASING", "RAMPING_UP", "SUCCEEDED"])
    result = promote_op(fake, clock, environment="staging").execute({})
    assert result["id"] == "new1"
    assert fake.promotes == [("new1", "staging")]


def test_promote_development_resolves_its_id(clock):
    fake = FakePromotions(["SUCCEEDED"])
    assert promote_op(fake, clock, deployment_id="development").execute({})["id"] == "dev1"
    assert fake.promotes == [("dev1", "production")]


@pytest.mark.parametrize(("status", "error"), [("FAILED", "health checks failed"), ("CANCELED", None)])
def test_promote_fails_with_baseten_message(clock, status, error):
    fake = FakePromotions(["RAMPING_UP", status], error=error)
    with pytest.raises(BasetenDeploymentError, match=f"ended {status}: {error or 'Baseten gave no message'}"):
        promote_op(fake, clock).execute({})


def test_a_retry_waits_on_the_promotion_in_progress_instead_of_starting_another(clock):
    fake = FakePromotions(["RAMPING_UP", "SUCCEEDED"])
    fake.candidate, fake.status = "new1", "RAMPING_UP"
    assert promote_op(fake, clock).execute({})["id"] == "new1"
    assert fake.promotes == []


def test_a_retry_after_success_is_success_without_a_promote(clock):
    fake = FakePromotions([], current="new1")
    assert promote_op(fake, clock).execute({})["id"] == "new1"
    assert fake.promotes == []


def test_another_promotion_in_progress_fails(clock):
    fake = FakePromotions([])
    fake.candidate, fake.status = "other1", "RAMPING_UP"
    with pytest.raises(BasetenDeploymentError, match="promotion of deployment other1 in progress"):
        promote_op(fake, clock).execute({})


def test_promote_deadline_cancels(clock):
    fake = FakePromotions(["RAMPING_UP"] * 100)
    with pytest.raises(BasetenDeploymentError, match="did not end within"):
        promote_op(fake, clock, timeout=60, poll_interval=10).execute({})
    assert fake.cancels == 1


def test_on_kill_cancels_only_a_started_promotion(clock):
    fake = FakePromotions([])
    op = promote_op(fake, clock)
    op.on_kill()
    assert fake.cancels == 0
    op._promoting = True
    op.on_kill()
    assert fake.cancels == 1


def test_promote_defers_and_resumes(clock):
    fake = FakePromotions(["SUCCEEDED"])
    op = promote_op(fake, clock, deferrable=True, poll_interval=5)
    with pytest.raises(TaskDeferred) as caught:
        op.execute({})
    trigger = caught.value.trigger
    assert isinstance(trigger, BasetenPromotionTrigger)
    classpath, kwargs = trigger.serialize()
    assert BasetenPromotionTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert kwargs["deadline"] == T0 + 3600
    env = {"current_deployment": deployment("new1")}
    assert op.execute_complete({}, {"status": "success", "message": "ok", "environment": env})["id"] == "new1"
    with pytest.raises(BasetenDeploymentError):
        op.execute_complete({}, None)


# The promotion trigger's own tests (hot path, loopback server): tests/unit/triggers/test_promotion.py.


def test_module_exports_from_the_public_path():
    from airflow_provider_baseten.operators import baseten

    assert baseten.BasetenPromoteOperator is BasetenPromoteOperator
    assert baseten.batch_window is lifecycle.batch_window

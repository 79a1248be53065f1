"""Predict, chain run and wake against the local emulator over loopback HTTP (the ``baseten_emulator`` fixture).

The emulator compresses time: the default world's ``coldstart01`` takes 180 emulated seconds to start, a fraction of
a second of wall time here. Poll intervals are derived from the fixture's time scale so each wait sees the
intermediate statuses; every wait is bounded by a wall-clock ``timeout``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_baseten.exceptions import BasetenDeploymentError
from airflow_provider_baseten.hooks.baseten import close_shared_async_clients
from airflow_provider_baseten.operators.predict import BasetenChainRunOperator, BasetenPredictOperator
from airflow_provider_baseten.operators.wake import BasetenWakeOperator
from airflow_provider_baseten.triggers.deployment import BasetenDeploymentReadyTrigger

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

COLD_START_EMULATED_S = 180.0
WAIT_LIMIT_S = 60.0


class FakeTI:
    dag_id = "integration"
    task_id = "task"
    run_id = "manual__2024-01-01T00:00:00+00:00"
    map_index = -1

    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def ctx() -> dict[str, Any]:
    return {"ti": FakeTI()}


def wakes(emu: Any, model_id: str) -> int:
    return emu.journal.count(method="POST", path_suffix="/wake", host=f"model-{model_id}.api.baseten.co")


@pytest.fixture
def emu(baseten_emulator: Any) -> Any:
    """The emulator, reset by the fixture to the default world (``coldstart01`` scaled to zero again)."""
    return baseten_emulator


@pytest.fixture
def cold_start_poll(emu: Any) -> float:
    """A poll interval of about a tenth of the compressed cold start (so the transitions show)."""
    wall = emu.clock.to_wall(COLD_START_EMULATED_S)
    if wall is None:
        pytest.skip("the emulator runs on a manual clock; the wake tests need a running (scaled) clock")
    if wall > WAIT_LIMIT_S / 2:
        pytest.skip(f"the emulator's cold start takes {wall:.0f} s of wall time; too slow for this test")
    return max(0.01, wall / 10)


# --- predict and chain run -------------------------------------------------------------------------------------


def test_predict_on_sentiment(emu: Any) -> None:
    op = BasetenPredictOperator(task_id="predict", model_id="sentiment01", model_input={"text": "I love this, great!"})
    result = op.execute(ctx())
    assert result["label"] == "positive"
    assert isinstance(result["score"], float)
    assert emu.journal.count(method="POST", path_suffix="/predict", host="model-sentiment01.api.baseten.co") == 1


def test_predict_on_a_named_environment_and_a_pinned_deployment(emu: Any) -> None:
    for kwargs in ({"environment": "staging"}, {"environment": "development"}, {"deployment_id": "sentprod01"}):
        op = BasetenPredictOperator(
            task_id="predict", model_id="sentiment01", model_input={"text": "awful, terrible"}, **kwargs
        )
        assert op.execute(ctx())["label"] == "negative"


def test_chain_run_on_summarize(emu: Any) -> None:
    text = "Airflow schedules work. Baseten serves models. Together they ship."
    op = BasetenChainRunOperator(task_id="run", chain_id="summarize01", chain_input={"text": text})
    result = op.execute(ctx())
    assert result["words"] == len(text.split())
    assert result["summary"]


def test_large_result_goes_to_object_storage(emu: Any, tmp_path) -> None:
    big = {"blob": "x" * 50_000, "items": list(range(500))}
    op = BasetenPredictOperator(
        task_id="echo", model_id="echo01", model_input=big, max_result_bytes=10_000, result_path=f"file://{tmp_path}"
    )
    uri = op.execute(ctx())
    assert isinstance(uri, str)
    assert uri.startswith(f"file://{tmp_path}/integration/")
    assert json.loads((tmp_path / uri.removeprefix(f"file://{tmp_path}/")).read_text()) == big


def test_mapped_predicts_score_each_input(emu: Any) -> None:
    from datetime import datetime

    from airflow.providers.common.compat.sdk import DAG

    inputs = [{"text": "great"}, {"text": "terrible"}, {"text": "the table"}]
    with DAG("mapped_integration", schedule=None, start_date=datetime(2024, 1, 1)):
        mapped = BasetenPredictOperator.partial(task_id="score", model_id="sentiment01").expand(model_input=inputs)
    labels = [mapped.unmap({"model_input": item}).execute(ctx())["label"] for item in inputs]
    assert labels == ["positive", "negative", "neutral"]


# --- wake --------------------------------------------------------------------------------------------------------


def test_wake_waits_through_a_cold_start_on_the_worker(emu: Any, cold_start_poll: float) -> None:
    op = BasetenWakeOperator(
        task_id="wake", model_id="coldstart01", deferrable=False, poll_interval=cold_start_poll, timeout=WAIT_LIMIT_S
    )
    result = op.execute(ctx())
    assert result["status"] == "ACTIVE"
    assert wakes(emu, "coldstart01") == 1
    # The model now answers without a cold start.
    predict = BasetenPredictOperator(task_id="p", model_id="coldstart01", model_input={"text": "good"}, timeout=10)
    assert predict.execute(ctx())["label"] == "positive"


async def test_wake_waits_through_a_cold_start_in_the_triggerer(emu: Any, cold_start_poll: float) -> None:
    op = BasetenWakeOperator(
        task_id="wake", model_id="coldstart01", deferrable=True, poll_interval=cold_start_poll, timeout=WAIT_LIMIT_S
    )
    deferred: TaskDeferred | None = None
    try:
        op.execute(ctx())
    except TaskDeferred as exc:
        deferred = exc
    assert deferred is not None, "coldstart01 starts SCALED_TO_ZERO, so the operator must defer"
    _, kwargs = deferred.trigger.serialize()
    trigger = BasetenDeploymentReadyTrigger(**kwargs)  # as the triggerer rebuilds it: real clock and sleep
    try:
        async with asyncio.timeout(WAIT_LIMIT_S + 10):
            events = [event.payload async for event in trigger.run()]
    finally:
        await close_shared_async_clients()
    assert len(events) == 1
    event = events[0]
    assert event["status"] == "success", event
    assert event["transitions"][0]["from"] == "SCALED_TO_ZERO"  # the status read before the wake
    assert event["transitions"][-1]["to"] == "ACTIVE"
    result = op.execute_complete(ctx(), event)
    assert result["status"] == "ACTIVE"
    assert wakes(emu, "coldstart01") == 1  # the trigger only read


@pytest.mark.parametrize("deferrable", [False, True])
def test_inactive_fails_fast_without_a_wake(emu: Any, deferrable: bool) -> None:
    op = BasetenWakeOperator(task_id="wake", model_id="inactive01", deferrable=deferrable, timeout=WAIT_LIMIT_S)
    with pytest.raises(BasetenDeploymentError, match=r"INACTIVE.*activate_if_inactive=True"):
        op.execute(ctx())
    assert wakes(emu, "inactive01") == 0


@pytest.mark.parametrize("deferrable", [False, True])
def test_build_failed_fails_fast_without_a_wake(emu: Any, deferrable: bool) -> None:
    op = BasetenWakeOperator(task_id="wake", model_id="buildfail01", deferrable=deferrable, timeout=WAIT_LIMIT_S)
    with pytest.raises(BasetenDeploymentError, match="BUILD_FAILED"):
        op.execute(ctx())
    assert wakes(emu, "buildfail01") == 0


def test_activate_if_inactive_activates_then_waits(emu: Any) -> None:
    wall = emu.clock.to_wall(60.0)  # inactive01 boots over 60 emulated seconds once activated
    if wall is None or wall > WAIT_LIMIT_S / 2:
        pytest.skip("needs a running, compressed emulator clock")
    op = BasetenWakeOperator(
        task_id="wake",
        model_id="inactive01",
        deferrable=False,
        activate_if_inactive=True,
        poll_interval=max(0.01, wall / 10),
        timeout=WAIT_LIMIT_S,
    )
    assert op.execute(ctx())["status"] == "ACTIVE"
    assert emu.journal.count(method="POST", path_suffix="/activate") == 1


def test_unhealthy_waits_until_the_deadline_and_says_so(emu: Any) -> None:
    op = BasetenWakeOperator(task_id="wake", model_id="unhealthy01", deferrable=False, poll_interval=0.05, timeout=0.5)
    with pytest.raises(BasetenDeploymentError, match="UNHEALTHY"):
        op.execute(ctx())


def test_already_active_returns_at_once(emu: Any) -> None:
    op = BasetenWakeOperator(task_id="wake", model_id="sentiment01", deferrable=True)
    assert op.execute(ctx())["status"] == "ACTIVE"  # no deferral: it was ACTIVE before the wake

"""Batch predict on an ``INACTIVE`` deployment: fails before sending anything, or activates (deferred) and runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_baseten.exceptions import BasetenDeploymentError

from . import test_batch as base
from .test_batch import FakeModel, make_op, ti

# The fixtures of test_batch: a connection, a fake model on a MockTransport (and its management API), recorded sleeps.
_conn, model, waits = base._conn, base.model, base.waits

STATUS = "GET /v1/models/abc123/deployments/production"
ACTIVATE = "POST /v1/models/abc123/deployments/production/activate"


def test_without_the_option_an_inactive_deployment_fails_before_any_input_is_sent(
    model: FakeModel, waits: list[float], tmp_path: Path
) -> None:
    model.status = "INACTIVE"
    with pytest.raises(BasetenDeploymentError, match=r"activate_if_inactive=True.*billed"):
        make_op(waits, tmp_path, inputs=[1, 2, 3]).execute({"ti": ti()})
    assert model.calls == []
    assert model.management == [STATUS]


def test_an_active_deployment_costs_one_status_read(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    assert make_op(waits, tmp_path, inputs=[1, 2]).execute({"ti": ti()})["succeeded"] == 2
    assert model.management == [STATUS]


def test_an_inactive_chain_fails_before_any_input_is_sent(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    model.status = "INACTIVE"
    with pytest.raises(BasetenDeploymentError, match="activate_if_inactive"):
        make_op(waits, tmp_path, chain_id="chain01", inputs=[{"a": 1}]).execute({"ti": ti()})
    assert model.calls == []


def test_with_the_option_the_activation_wait_defers_then_the_batch_runs(
    model: FakeModel, waits: list[float], tmp_path: Path
) -> None:
    model.status = "INACTIVE"
    with pytest.raises(TaskDeferred) as caught:
        make_op(waits, tmp_path, inputs=[1, 2, 3], activate_if_inactive=True, deferrable=True).execute({"ti": ti()})
    assert caught.value.method_name == "execute_after_activation"
    assert model.management == [STATUS, ACTIVATE]
    assert model.calls == []
    model.status = "ACTIVE"  # what the trigger saw
    event = {"status": "success", "message": "ACTIVE", "deployment": {"id": "dep1", "status": "ACTIVE"}}
    resumed = make_op(waits, tmp_path, inputs=[1, 2, 3], activate_if_inactive=True, deferrable=True)
    assert resumed.execute_after_activation({"ti": ti()}, event)["succeeded"] == 3
    assert model.management == [STATUS, ACTIVATE, STATUS]  # activated once

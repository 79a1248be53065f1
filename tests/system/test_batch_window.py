"""A batch window under a real scheduler and triggerer: the setup fails once after raising the settings and is
retried, the batch fails, and the teardown still puts back exactly the original settings, with one restore."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.system import world
from tests.system.harness import AirflowCluster

pytestmark = pytest.mark.system


def _patches(emulator: Any, model: str) -> list[Any]:
    return [
        entry
        for entry in emulator.journal.filter(method="PATCH", host="api.baseten.co")
        if f"/models/{model}/" in entry.path
    ]


def test_failed_batch_and_retried_setup_still_restore_the_original_settings(
    airflow_cluster: AirflowCluster, emulator: Any, phase: Callable[[str], None]
) -> None:
    from airflow_provider_baseten.emulator import FaultPlan

    api, dag_id, model = airflow_cluster.api, "systest_batch_window", world.WINDOW_MODEL
    api.wait_dag(dag_id)
    original = emulator.deployment(model).autoscaler.settings()
    # The first try's status read in the triggerer (after its GET and PATCH) is refused: the try fails, a retry follows.
    emulator.faults.add(FaultPlan(route="management", target_id=model, sequence=["ok", "ok", 400]))
    try:
        run_id = api.trigger(dag_id)
        assert api.wait_run(dag_id, run_id, timeout=300) == "failed", api.ti_states(dag_id, run_id)
    finally:
        emulator.faults.clear()
    phase("run finished")
    tis = {ti["task_id"]: ti for ti in api.task_instances(dag_id, run_id)}
    assert (tis["window_scale_up"]["state"], tis["window_scale_up"]["try_number"]) == ("success", 2)
    assert tis["batch"]["state"] == "failed"
    assert tis["window_restore"]["state"] == "success"

    assert emulator.deployment(model).autoscaler.settings() == original  # field for field
    assert len(_patches(emulator, model)) == 3  # try 1, try 2 (UNCHANGED), and one restore
    restored = api.xcom_value(dag_id, run_id, "window_restore", "return_value")
    assert restored["restored"] == {"min_replica": 0, "max_replica": 1}
    window = api.xcom_value(dag_id, run_id, "window_scale_up", "baseten_window")
    assert window["original"] == {"min_replica": 0, "max_replica": 1}

"""Wake a scaled-to-zero deployment before a batch window: the wake waits deferred, holding no worker slot, and the
batch starts only once the deployment is ``ACTIVE``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.system import world
from tests.system.evidence import journal, task_runner
from tests.system.harness import AirflowCluster, wait_for

pytestmark = pytest.mark.system


def _executor_slots(cluster: AirflowCluster) -> list[str]:
    """Titles of the scheduler's LocalExecutor worker processes (``... LocalExecutor: <ti id>`` or ``<idle>``)."""
    scheduler = psutil.Process(cluster.processes["scheduler"].pid)
    titles = []
    for child in scheduler.children(recursive=True):
        try:
            title = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "LocalExecutor:" in title:
            titles.append(title)
    return titles


def test_wake_defers_without_a_worker_slot_and_gates_the_batch(
    airflow_cluster: AirflowCluster, emulator: Any, tmp_path: Path, phase: Callable[[str], None]
) -> None:
    api, dag_id, model = airflow_cluster.api, "systest_wake_window", world.COLD_MODEL
    api.wait_dag(dag_id)
    assert emulator.status(model) == "SCALED_TO_ZERO"
    output = tmp_path / "batch.jsonl"
    run_id = api.trigger(dag_id, conf={"output_path": str(output)})

    def wake_deferred() -> dict[str, Any] | None:
        ti = api.task_instance(dag_id, run_id, "wake")
        return ti if ti["state"] == "deferred" else None

    wake_ti = wait_for(wake_deferred, timeout=120, what="the wake task to defer")
    phase("wake deferred")

    def slot_released() -> bool:
        return task_runner(wake_ti["id"]) is None and not [
            t for t in _executor_slots(airflow_cluster) if wake_ti["id"] in t
        ]

    # The worker that ran the wake's first half needs a moment to report and go idle after the deferral.
    wait_for(slot_released, timeout=20, interval=0.5, what="the executor slot of the deferred wake to be released")
    phase("slot released")

    # While the deployment boots: the wake stays deferred, no process runs it, no executor slot carries it, the
    # default pool counts no running slot for it, and the batch has neither started nor sent a predict.
    samples = 0
    last_pending_at = time.time()
    while (status := emulator.status(model)) != "ACTIVE":
        assert status in ("WAKING_UP", "LOADING_MODEL"), status
        last_pending_at = time.time()
        states = {ti["task_id"]: ti["state"] for ti in api.task_instances(dag_id, run_id)}
        if states["wake"] != "deferred":
            break  # the deployment became ACTIVE between the two reads and the wake resumed
        assert states["batch"] in (None, "scheduled", "none"), states
        assert slot_released(), "a worker process holds the deferred wake task"
        pool = api.get("/api/v2/pools/default_pool")
        assert pool["running_slots"] == 0, pool
        assert pool["deferred_slots"] >= 1, pool
        assert not journal(emulator, model, "predict"), "the batch predicted before the deployment was ACTIVE"
        samples += 1
        time.sleep(1)
    phase(f"ACTIVE after {samples} samples")
    assert samples >= 3, "the cold start was too short to observe the deferred wake"

    assert api.wait_run(dag_id, run_id, timeout=120) == "success", api.ti_states(dag_id, run_id)
    phase("run green")
    deployment = api.xcom_value(dag_id, run_id, "wake", "return_value")
    assert deployment["status"] == "ACTIVE"
    predicts = journal(emulator, model, "predict", "POST")
    assert len(predicts) == 4
    assert all(e.status == 200 for e in predicts)
    assert min(e.time for e in predicts) > last_pending_at, "a predict reached the deployment before ACTIVE"
    wake_end = api.task_instance(dag_id, run_id, "wake")["end_date"]
    batch_start = api.task_instance(dag_id, run_id, "batch")["start_date"]
    assert batch_start >= wake_end
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(line["index"] for line in lines) == [0, 1, 2, 3]
    assert all("output" in line for line in lines)
    log = api.task_log(dag_id, run_id, "wake", 1)
    assert "WAKING_UP" in log or "LOADING_MODEL" in log, "the wake log shows the status changes"

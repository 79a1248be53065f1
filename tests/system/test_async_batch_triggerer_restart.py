"""The async batch under real Airflow: one task, one trigger for 40 requests, the triggerer SIGKILLed mid-wait.

Asserted on both sides: the emulator's records (one accepted POST per input, no retried POST, every request run)
and Airflow's (the trigger row's kwargs carry the manifest's URI and no request id; the task ends green on its
first try with counts per status).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.system import world
from tests.system.evidence import accepted_submits, journal, records, statuses
from tests.system.harness import AirflowCluster, wait_for

pytestmark = pytest.mark.system

SIZE = 40


def _batch_trigger(cluster: AirflowCluster, not_on: set[int] = frozenset()) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        rows = [r for r in cluster.trigger_rows() if r["kwargs"].get("manifest_uri")]
        rows = [r for r in rows if r["kwargs"].get("model_id") == world.ASYNC_BATCH_MODEL]
        assigned = [r for r in rows if r["triggerer_id"] and r["triggerer_id"] not in not_on]
        return assigned[0] if len(rows) == 1 and assigned else None

    return wait_for(probe, timeout=90, interval=1, what="the async batch trigger assigned to a triggerer")


def test_triggerer_sigkill_mid_wait_loses_and_duplicates_nothing(
    airflow_cluster: AirflowCluster, emulator: Any, phase: Any
) -> None:
    api, dag_id, model = airflow_cluster.api, "systest_async_batch", world.ASYNC_BATCH_MODEL
    api.wait_dag(dag_id)
    run_id = api.trigger(dag_id)
    api.wait_tis(
        dag_id,
        run_id,
        lambda tis: [ti["state"] for ti in tis] in (["deferred"], ["failed"]),
        timeout=180,
        what="the task deferred",
    )
    state = api.task_instance(dag_id, run_id, "score_all")["state"]
    assert state == "deferred", api.task_log(dag_id, run_id, "score_all", 1)[-4000:]
    phase("deferred")
    before = _batch_trigger(airflow_cluster)
    kwargs = before["kwargs"]
    assert kwargs["total"] == SIZE
    assert not set(records(emulator, model)) & set(json.dumps(kwargs).replace('"', " ").split())  # no ids in kwargs
    assert len(accepted_submits(emulator, model)) == SIZE
    wait_for(lambda: journal(emulator, model, "async_status"), timeout=60, what="the trigger's first status read")

    triggerer = airflow_cluster.processes["triggerer"]
    triggerer.kill()
    phase("triggerer killed")
    assert set(statuses(emulator, model).values()) == {"QUEUED"}
    triggerer.start()
    _batch_trigger(airflow_cluster, not_on={before["triggerer_id"]})
    phase("taken over")
    emulator.set_status(model, "ACTIVE")  # open the gate

    assert api.wait_run(dag_id, run_id, timeout=180) == "success", api.ti_states(dag_id, run_id)
    phase("run green")
    ti = api.task_instance(dag_id, run_id, "score_all")
    assert ti["try_number"] == 1
    result = api.xcom_value(dag_id, run_id, "score_all", "return_value")
    assert result["counts"] == {"SUCCEEDED": SIZE}
    assert result["manifest_uri"].startswith("file://")
    assert len(journal(emulator, model, "async_predict", "POST")) == SIZE  # no POST retried or repeated
    assert set(statuses(emulator, model).values()) == {"SUCCEEDED"}
    texts = sorted(rec.request.model_input["text"] for rec in records(emulator, model).values())
    assert texts == sorted(f"async batch item {n}" for n in range(SIZE))
    assert not journal(emulator, model, "async_cancel")  # a triggerer restart is not a kill

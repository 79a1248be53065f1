"""Async predict under real Airflow: a SIGKILLed triggerer, a SIGKILLed worker, a user's "mark failed", a timeout.

Each scenario runs a DAG of ``dags/systest_async.py`` against its own gated emulator model (requests stay ``QUEUED``
until the test opens the gate) and asserts on both sides: the emulator's journal and request records (how many
POSTs, DELETEs, final statuses) and Airflow's own records through the REST API (task states, tries, XCom, logs).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.system import world
from tests.system.evidence import SecretsEvidence, accepted_submits, journal, records, statuses, task_runner
from tests.system.harness import AirflowCluster, wait_for

Phase = Callable[[str], None]

pytestmark = pytest.mark.system


def _airflow_at_least(version: str) -> bool:
    from airflow import __version__
    from packaging.version import Version

    return Version(__version__).release >= Version(version).release


#: The task state store (re-attach) and trigger ``on_kill`` arrived in Airflow 3.3.
needs_airflow_33 = pytest.mark.skipif(not _airflow_at_least("3.3"), reason="needs Airflow 3.3+")

FLEET = int(os.environ.get("SYSTEST_FLEET_SIZE", "10"))  # systest_async_fleet's map size (the DAG reads it too)


def _all_deferred(count: int):
    return lambda tis: len(tis) == count and all(ti["state"] == "deferred" for ti in tis)


def _running_triggers(
    cluster: AirflowCluster, model_id: str, count: int, *, not_on: set[int] = frozenset()
) -> list[dict[str, Any]]:
    """Wait until ``count`` trigger rows for ``model_id`` are assigned to a triggerer (not one of ``not_on``)."""

    def probe() -> list[dict[str, Any]] | None:
        rows = [r for r in cluster.trigger_rows() if r["kwargs"].get("model_id") == model_id]
        assigned = [r for r in rows if r["triggerer_id"] and r["triggerer_id"] not in not_on]
        return rows if len(rows) == count and len(assigned) == count else None

    return wait_for(probe, timeout=60, interval=1, what=f"{count} triggers of {model_id} assigned to a triggerer")


def _manifests(cluster: AirflowCluster, dag_id: str, run_id: str, task_id: str, count: int) -> list[dict[str, Any]]:
    indexes = range(count) if count > 1 else [-1]
    return [cluster.api.xcom_value(dag_id, run_id, task_id, "return_value", map_index=i) for i in indexes]


def test_triggerer_sigkill_while_deferred(
    airflow_cluster: AirflowCluster, emulator: Any, evidence: SecretsEvidence, phase: Phase
) -> None:
    api, dag_id, model = airflow_cluster.api, "systest_async_fleet", world.FLEET_MODEL
    api.wait_dag(dag_id)
    run_id = api.trigger(dag_id)
    api.wait_tis(dag_id, run_id, _all_deferred(FLEET), timeout=180, what="every fleet task deferred")
    phase("deferred")
    before = _running_triggers(airflow_cluster, model, FLEET)
    phase("triggers running")
    evidence.trigger_rows.extend(before)
    assert len(accepted_submits(emulator, model)) == FLEET

    triggerer = airflow_cluster.processes["triggerer"]
    triggerer.kill()
    phase("triggerer killed")
    # Nothing is lost while no triggerer runs: the tasks stay deferred, the requests stay queued.
    assert all(ti["state"] == "deferred" for ti in api.task_instances(dag_id, run_id))
    assert set(statuses(emulator, model).values()) == {"QUEUED"}

    triggerer.start()
    # The restarted triggerer (a new job id) takes the triggers over once the dead one's heartbeat is stale.
    _running_triggers(airflow_cluster, model, FLEET, not_on={r["triggerer_id"] for r in before})
    phase("taken over")
    emulator.set_status(model, "ACTIVE")  # open the gate: the queued requests run now

    assert api.wait_run(dag_id, run_id, timeout=180) == "success", api.ti_states(dag_id, run_id)
    phase("run green")
    tis = api.task_instances(dag_id, run_id)
    assert [ti["state"] for ti in tis] == ["success"] * FLEET
    assert all(ti["try_number"] == 1 for ti in tis)
    submits = accepted_submits(emulator, model)
    assert len(submits) == FLEET, f"expected one async_predict POST per task, journal shows {len(submits)}"
    assert len(journal(emulator, model, "async_predict", "POST")) == FLEET  # no retried POST either
    manifests = _manifests(airflow_cluster, dag_id, run_id, "score", FLEET)
    assert {m["status"] for m in manifests} == {"SUCCEEDED"}
    assert {m["request_id"] for m in manifests} == set(records(emulator, model))
    outputs = sorted(rec.output["text"] for rec in records(emulator, model).values())
    assert outputs == sorted(f"{dag_id} item {i}" for i in range(FLEET))


@needs_airflow_33
def test_worker_sigkill_after_submit_reattaches(airflow_cluster: AirflowCluster, emulator: Any, phase: Phase) -> None:
    from airflow_provider_baseten.emulator import FaultPlan

    api, dag_id, model = airflow_cluster.api, "systest_async_retry", world.RETRY_MODEL
    api.wait_dag(dag_id)
    # Hold the status read that follows the submit, so the worker is provably alive after the POST when it dies.
    emulator.faults.add(FaultPlan(route="async_status", target_id=model, sequence=["slow"] * 10, delay=45))
    try:
        run_id = api.trigger(dag_id)
        wait_for(lambda: accepted_submits(emulator, model), timeout=120, what="the first try's async_predict POST")
        ti = api.task_instance(dag_id, run_id, "score")
        assert ti["state"] == "running"
        assert ti["try_number"] == 1
        runner = wait_for(lambda: task_runner(ti["id"]), timeout=30, what=f"the task process of {ti['id']}")
        runner.send_signal(signal.SIGKILL)  # mid-flight: the POST is answered, the status read is not
        phase("worker killed")
    finally:
        emulator.faults.clear()

    def second_try() -> dict[str, Any] | None:
        current = api.task_instance(dag_id, run_id, "score")
        return current if current["try_number"] >= 2 and current["state"] == "deferred" else None

    wait_for(second_try, timeout=120, what="the retry to re-attach and defer")
    phase("retry deferred")
    emulator.set_status(model, "ACTIVE")
    assert api.wait_run(dag_id, run_id, timeout=120) == "success", api.ti_states(dag_id, run_id)

    final = api.task_instance(dag_id, run_id, "score")
    assert final["state"] == "success"
    assert final["try_number"] == 2
    submits = accepted_submits(emulator, model)
    assert len(submits) == 1, f"the retry must re-attach, not resubmit: {len(submits)} POSTs"
    (request_id,) = records(emulator, model)
    manifest = api.xcom_value(dag_id, run_id, "score", "return_value")
    assert manifest["request_id"] == request_id
    assert manifest["status"] == "SUCCEEDED"
    first_log = api.task_log(dag_id, run_id, "score", 1)
    assert request_id in first_log, "try 1 logged the submitted request id"


@needs_airflow_33
def test_user_marks_deferred_task_failed_cancels_request(
    airflow_cluster: AirflowCluster, emulator: Any, evidence: SecretsEvidence
) -> None:
    api, dag_id, model = airflow_cluster.api, "systest_async_mark_failed", world.CANCEL_MODEL
    api.wait_dag(dag_id)
    run_id = api.trigger(dag_id)
    api.wait_tis(dag_id, run_id, _all_deferred(1), timeout=120, what="the task deferred")
    evidence.trigger_rows.extend(_running_triggers(airflow_cluster, model, 1))
    (request_id,) = records(emulator, model)
    # The trigger is really polling (the operator read the status once; more GETs come from the triggerer).
    wait_for(lambda: len(journal(emulator, model, "async_status")) >= 2, timeout=60, what="the trigger's first poll")

    api.set_ti_state(dag_id, run_id, "score", "failed")

    deletes = wait_for(
        lambda: journal(emulator, model, "async_cancel", "DELETE"), timeout=60, what="the trigger's on_kill DELETE"
    )
    assert len(deletes) == 1
    assert deletes[0].status == 200
    assert request_id in deletes[0].path
    assert statuses(emulator, model) == {request_id: "CANCELED"}
    assert api.task_instance(dag_id, run_id, "score")["state"] == "failed"
    assert len(accepted_submits(emulator, model)) == 1
    wait_for(
        lambda: "Trigger cancelled by user action, invoking on_kill" in api.task_log(dag_id, run_id, "score", 1),
        timeout=30,
        what="Airflow's own log line of the user-action cancel in the task log",
    )


def test_execution_timeout_while_deferred_cancels_request(
    airflow_cluster: AirflowCluster, emulator: Any, evidence: SecretsEvidence
) -> None:
    api, dag_id, model = airflow_cluster.api, "systest_async_timeout", world.TIMEOUT_MODEL
    api.wait_dag(dag_id)
    started = time.monotonic()
    run_id = api.trigger(dag_id)
    api.wait_tis(dag_id, run_id, _all_deferred(1), timeout=120, what="the task deferred")
    evidence.trigger_rows.extend(_running_triggers(airflow_cluster, model, 1))
    (request_id,) = records(emulator, model)

    assert api.wait_run(dag_id, run_id, timeout=120) == "failed"
    elapsed = time.monotonic() - started
    ti = api.task_instance(dag_id, run_id, "score")
    assert ti["state"] == "failed"
    assert ti["try_number"] == 1
    deletes = journal(emulator, model, "async_cancel", "DELETE")
    assert len(deletes) == 1
    assert request_id in deletes[0].path
    assert statuses(emulator, model) == {request_id: "CANCELED"}
    assert len(accepted_submits(emulator, model)) == 1
    log = api.task_log(dag_id, run_id, "score", 1)
    assert "BasetenAsyncRequestTimeoutError" in log or "deadline" in log.lower(), log[-3000:]
    assert elapsed >= 20, "the task cannot fail before its 20 s execution_timeout"

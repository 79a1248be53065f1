"""The API key leaks nowhere: after every scenario (this module runs last on the SQLite cluster), search Airflow's
records through the REST API and on disk.

Searched: every task log of every run the session triggered (worker and trigger parts, every try; the failed tasks'
exception texts among them), every XCom value, every rendered template, the trigger rows captured while tasks were
deferred (kwargs as Airflow decrypts them, and as stored), every log file and process output of the installation
(scheduler, triggerer, dag-processor, api-server, which also served the browser test's "Test connection"), and the
raw bytes of the metadata database. The session's key is random (``sk-systest-<hex>``), so any hit is a leak.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.system import world
from tests.system.evidence import SecretsEvidence, records
from tests.system.harness import AirflowCluster, wait_for

pytestmark = pytest.mark.system


def _run_secrets_dag(cluster: AirflowCluster, emulator: Any, evidence: SecretsEvidence) -> str:
    api, dag_id, model = cluster.api, "systest_secrets", world.SECRETS_ASYNC_MODEL
    api.wait_dag(dag_id)
    run_id = api.trigger(dag_id)

    def deferred_and_polled() -> list[dict[str, Any]] | None:
        if api.task_instance(dag_id, run_id, "async_predict")["state"] != "deferred":
            return None
        rows = [r for r in cluster.trigger_rows() if r["kwargs"].get("model_id") == model]
        return rows if rows and all(r["triggerer_id"] for r in rows) else None

    evidence.trigger_rows.extend(wait_for(deferred_and_polled, timeout=120, what="the async task deferred"))
    emulator.set_status(model, "ACTIVE")
    assert api.wait_run(dag_id, run_id, timeout=120) == "failed"  # predict_inactive fails on purpose
    states = {ti["task_id"]: ti["state"] for ti in api.task_instances(dag_id, run_id)}
    assert states.pop("predict_inactive") == "failed"
    failed = sorted(task for task, state in states.items() if state != "success")
    logs = "\n".join(f"----- {task} log -----\n{api.task_log(dag_id, run_id, task, 1)[-4000:]}" for task in failed)
    assert not failed, f"{states}\n{logs}"  # the task's own log says why (the last failure here was not kept)
    assert len(records(emulator, model)) == 1
    return run_id


def test_api_key_appears_nowhere(
    airflow_cluster: AirflowCluster,
    emulator: Any,
    system_api_key: str,
    evidence: SecretsEvidence,
    phase: Callable[[str], None],
) -> None:
    api = airflow_cluster.api
    secrets_run = _run_secrets_dag(airflow_cluster, emulator, evidence)
    phase("secrets DAG done")
    key = system_api_key
    leaks: list[str] = []

    def check(where: str, text: str) -> None:
        if key in text:
            at = text.index(key)
            leaks.append(f"{where}: ...{text[max(0, at - 120) : at].strip()}<KEY>")

    logs_read = xcoms_read = rendered_read = 0
    for dag_id, run_id in api.triggered:
        for ti in api.task_instances(dag_id, run_id):
            where = f"{dag_id}/{run_id}/{ti['task_id']}[{ti['map_index']}]"
            check(f"rendered fields of {where}", json.dumps(ti.get("rendered_fields"), default=str))
            rendered_read += bool(ti.get("rendered_fields"))
            for try_number in range(1, (ti["try_number"] or 0) + 1):
                check(
                    f"log of {where} try {try_number}",
                    api.task_log(dag_id, run_id, ti["task_id"], try_number, ti["map_index"]),
                )
                logs_read += 1
        for entry in api.xcom_entries(dag_id, run_id):
            value = api.xcom_value(dag_id, run_id, entry["task_id"], entry["key"], entry["map_index"])
            check(
                f"XCom {dag_id}/{run_id}/{entry['task_id']}[{entry['map_index']}]/{entry['key']}",
                json.dumps(value, default=str),
            )
            xcoms_read += 1
    phase(f"REST: {logs_read} logs, {xcoms_read} XComs, {rendered_read} rendered")

    for row in evidence.trigger_rows:
        check(f"trigger row {row['id']} ({row['classpath']})", json.dumps(row["kwargs"], default=str) + row["raw"])
        assert not {"password", "api_key", "key", "token"} & set(row["kwargs"]), row["kwargs"]
    for row in airflow_cluster.trigger_rows():
        check(f"live trigger row {row['id']}", json.dumps(row["kwargs"], default=str) + row["raw"])

    files = list(airflow_cluster.log_files())
    for path in files:
        check(f"file {path}", path.read_bytes().decode(errors="replace"))
    for suffix in ("", "-wal", "-journal"):
        db = airflow_cluster.home / f"airflow.db{suffix}"
        if db.exists():
            check(f"database {db.name}", db.read_bytes().decode(errors="replace"))
    phase(f"{len(evidence.trigger_rows)} trigger rows, {len(files)} files")

    assert not leaks, "the API key leaked:\n" + "\n".join(leaks[:20])
    # The scan read real material: the failing task's exception text, trigger rows, a full session of runs.
    failed_log = api.task_log("systest_secrets", secrets_run, "predict_inactive", 1)
    assert "inactive01" in failed_log, failed_log[-2000:]
    assert "404" in failed_log or "not active" in failed_log, failed_log[-2000:]
    assert evidence.trigger_rows
    assert rendered_read >= 5, "the REST API returned no rendered templates to search"
    assert logs_read >= 6
    assert xcoms_read >= 5

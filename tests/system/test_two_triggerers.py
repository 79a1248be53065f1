"""Two triggerers on PostgreSQL (Airflow's own HA triggerers): the one running every trigger is SIGKILLed mid-wait,
the other takes its triggers over, and every task finishes with exactly one ``async_predict`` POST.

PostgreSQL comes from Debian's ``postgresql`` package, started privately on loopback by the harness
(``postgres.py``); the scenario skips with the reason when it is not installed or cannot start. It runs last: it
stops the shared SQLite installation and brings up its own (same harness, other database).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.system import world
from tests.system.evidence import accepted_submits, journal, records, statuses
from tests.system.harness import ClusterPool, wait_for
from tests.system.postgres import PostgresCluster, PostgresUnavailable

pytestmark = pytest.mark.system

HA_SIZE = int(os.environ.get("SYSTEST_HA_SIZE", "10"))  # systest_async_ha's map size (the DAG reads it too)


@pytest.fixture(scope="module")
def postgres(cluster_pool: ClusterPool) -> Iterator[PostgresCluster]:
    try:
        cluster = PostgresCluster.start()
    except PostgresUnavailable as err:
        pytest.skip(f"PostgreSQL unavailable: {err}")
    try:
        yield cluster
    finally:
        cluster_pool.stop("postgres")  # Airflow first, then its database
        cluster.stop()


def test_second_triggerer_takes_over_after_sigkill(
    cluster_pool: ClusterPool, postgres: PostgresCluster, emulator: Any, phase: Callable[[str], None]
) -> None:
    cluster = cluster_pool.get("postgres", sql_alchemy_conn=postgres.url, triggerers=("triggerer-a",))
    phase("Airflow on PostgreSQL up")
    api, dag_id, model = cluster.api, "systest_async_ha", world.HA_MODEL
    api.wait_dag(dag_id)
    run_id = api.trigger(dag_id)
    api.wait_tis(
        dag_id,
        run_id,
        lambda tis: len(tis) == HA_SIZE and all(ti["state"] == "deferred" for ti in tis),
        timeout=180,
        what="every task deferred",
    )

    def assigned(exclude: set[int]) -> list[dict[str, Any]] | None:
        rows = [r for r in cluster.trigger_rows() if r["kwargs"].get("model_id") == model]
        ok = len(rows) == HA_SIZE and all(r["triggerer_id"] and r["triggerer_id"] not in exclude for r in rows)
        return rows if ok else None

    rows = wait_for(lambda: assigned(set()), timeout=60, what="triggers assigned to triggerer A")
    job_a = {r["triggerer_id"] for r in rows}
    assert len(job_a) == 1, "only triggerer A runs yet"
    phase("deferred on A")

    cluster.add_triggerer("triggerer-b").start()

    def b_alive() -> list[dict[str, Any]]:
        return [j for j in cluster.triggerer_jobs() if j["id"] not in job_a and j["state"] == "running"]

    (job_b,) = wait_for(b_alive, timeout=90, what="triggerer B's job heartbeating")
    phase("B up")

    cluster.processes["triggerer-a"].kill()
    moved = wait_for(lambda: assigned(job_a), timeout=90, what="triggerer B taking A's triggers over")
    assert {r["triggerer_id"] for r in moved} == {job_b["id"]}
    phase("taken over by B")
    assert set(statuses(emulator, model).values()) == {"QUEUED"}  # nothing ran while the triggers moved
    emulator.set_status(model, "ACTIVE")

    assert api.wait_run(dag_id, run_id, timeout=180) == "success", api.ti_states(dag_id, run_id)
    phase("run green")
    tis = api.task_instances(dag_id, run_id)
    assert [ti["state"] for ti in tis] == ["success"] * HA_SIZE
    assert len(accepted_submits(emulator, model)) == HA_SIZE
    assert len(journal(emulator, model, "async_predict", "POST")) == HA_SIZE
    assert set(statuses(emulator, model).values()) == {"SUCCEEDED"}
    assert len(records(emulator, model)) == HA_SIZE

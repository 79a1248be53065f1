"""The harness itself: real processes come up healthy, a DAG is parsed, scheduled, run and its XCom read back."""

from __future__ import annotations

import pytest

from tests.system.harness import AirflowCluster

pytestmark = pytest.mark.system


def test_cluster_runs_a_plain_dag(airflow_cluster: AirflowCluster) -> None:
    api = airflow_cluster.api
    api.wait_dag("systest_smoke")
    run_id = api.trigger("systest_smoke")

    assert api.wait_run("systest_smoke", run_id, timeout=120) == "success"
    tis = api.task_instances("systest_smoke", run_id)
    assert sorted(ti["map_index"] for ti in tis) == list(range(3))
    assert api.xcom_value("systest_smoke", run_id, "hello", "return_value", map_index=2) == 4
    assert not api.import_errors(), api.import_errors()

"""The pure parts of ``make demo``: reading a run's verdict from its log, the table, the failure excerpt."""

from __future__ import annotations

import json

import pytest

from example_dags import run_demo

FINISHED = (
    "2026-11-24T21:28:10.508208Z [info     ] DagRun Finished: dag_id=baseten_async_jobs, logical_date=2026-11-24 "
    "21:27:24+00:00, run_id=manual__2026, run_start_date=2026-11-24, run_duration=45.6, state={state}, "
    "run_type=manual, data_interval_start=2026-11-24 [airflow.models.dagrun.DagRun] loc=dagrun.py:1315"
)


@pytest.mark.parametrize("state", ["success", "failed"])
def test_the_logged_verdict_is_read_from_the_finished_line(state):
    log = f"noise state=running\n{FINISHED.format(state=state)}\nUnclosed client session\n"
    assert run_demo._finished_state(log) == state


def test_no_verdict_before_the_run_finished():
    assert run_demo._finished_state("[DAG TEST] end task task_id=a\n") is None


def test_a_trigger_is_running_between_its_start_and_end_lines():
    assert run_demo._waiting_on_trigger("[DAG TEST] running trigger in line\n")
    assert not run_demo._waiting_on_trigger("[DAG TEST] running trigger in line\n[DAG TEST] Trigger completed\n")
    assert not run_demo._waiting_on_trigger("")


def test_table_aligns_every_dag_and_counts_non_green_tasks(tmp_path):
    results = [
        run_demo.DagResult("baseten_llm_chat", "success", {"success": 8}, 12.34, 5, tmp_path / "a.log"),
        run_demo.DagResult("baseten_async_jobs", "failed", {"success": 4, "failed": 1, "upstream_failed": 1}, 3.0, 7),
        run_demo.DagResult("baseten_wake_before_batch", "error", error="boom"),
    ]
    lines = run_demo.format_table(results).splitlines()
    assert lines[0].startswith("DAG ")
    assert len({len(line.rstrip()) for line in lines[:2]}) == 1
    assert "8" in lines[2].split()
    assert "12.3 s" in lines[2]
    assert "6 (1 failed, 1 upstream_failed)" in lines[3]
    assert lines[4].split()[1:3] == ["-", "error"]


def test_failure_excerpt_shows_each_distinct_exception_once(tmp_path):
    log = tmp_path / "dag.log"
    error = "airflow_provider_baseten.exceptions.BasetenAuthError: POST inference.baseten.co answered 401"
    log.write_text(
        "info line\n"
        "2026 [error    ] XCom not found  offset=3\n"
        "2026 [error    ] Task failed with exception\n"
        f"{error}\n"
        "2026 [error    ] Task failed with exception\n"
        f"{error}\n"
        "2026 [error    ] Unclosed client session\n"
    )
    assert run_demo.error_lines(log) == [error, "2026 [error    ] Unclosed client session"]
    assert run_demo.tail(log, 1) == "2026 [error    ] Unclosed client session"
    assert run_demo.tail(tmp_path / "missing.log") == ""


def test_airflow_subprocesses_get_only_the_demos_airflow_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.setenv("AIRFLOW_CONN_SOMETHING", "http://x")
    paths = run_demo.DemoPaths(tmp_path)
    env = run_demo.airflow_env(paths, tmp_path / "db.sqlite", '{"conn_type": "baseten"}')
    airflow_keys = {key for key in env if key.startswith("AIRFLOW")}
    assert airflow_keys == {
        "AIRFLOW_HOME",
        "AIRFLOW__CORE__DAGS_FOLDER",
        "AIRFLOW__BASETEN__OUTPUT_LOCATION",
        "AIRFLOW__CORE__LOAD_EXAMPLES",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER",
        "AIRFLOW_CONN_BASETEN_DEFAULT",
        "AIRFLOW_CONN_PYDANTICAI_BASETEN_DEFAULT",
    }
    assert json.loads(env["AIRFLOW_CONN_PYDANTICAI_BASETEN_DEFAULT"])["extra"] == {"baseten_conn_id": "baseten_default"}
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(run_demo.DAGS_FOLDER)

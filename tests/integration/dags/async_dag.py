"""Integration DAG: the deferrable async operator and the deferrable sensor against the emulator.

``tests/integration/test_async.py`` runs it with ``airflow dags test`` (the triggers run in-process).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_baseten.operators.baseten import BasetenAsyncPredictOperator
from airflow_provider_baseten.sensors.baseten import BasetenAsyncRequestSensor

with DAG(
    dag_id="baseten_async_integration",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 0, "execution_timeout": timedelta(minutes=10)},
    tags=["baseten", "integration"],
):
    submit_and_wait = BasetenAsyncPredictOperator(
        task_id="submit_and_wait",
        model_id="slow01",
        model_input={"text": "a great product, run {{ run_id }}"},
        deferrable=True,
        poll_interval=0.2,
        timeout=timedelta(minutes=5),
        output_uri="file:///tmp/baseten-integration/{{ run_id }}.json",
    )

    submit_only = BasetenAsyncPredictOperator(
        task_id="submit_only",
        model_id="slow01",
        model_input={"text": "submitted now, waited on by the sensor"},
        wait_for_completion=False,
    )

    wait_for_it = BasetenAsyncRequestSensor(
        task_id="wait_for_it",
        model_id="slow01",
        request_id="{{ ti.xcom_pull(task_ids='submit_only', key='request_id') }}",
        deferrable=True,
        poke_interval=0.2,
        timeout=300,
    )

    @task
    def check(waited: dict[str, Any], sensed: dict[str, Any], submitted: dict[str, Any]) -> None:
        assert waited["status"] == "SUCCEEDED", waited
        assert waited["output_uri"].startswith("file:///tmp/baseten-integration/"), waited
        assert sensed["status"] == "SUCCEEDED", sensed
        assert sensed["request_id"] == submitted["request_id"], (sensed, submitted)
        assert submitted["status"] in ("QUEUED", "IN_PROGRESS", "SUCCEEDED"), submitted

    submit_only >> wait_for_it
    check(submit_and_wait.output, wait_for_it.output, submit_only.output)

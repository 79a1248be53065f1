"""A batch window whose batch fails: the setup scales up (deferred; retried once by the test's fault), the teardown
restores the autoscaling settings."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_baseten.operators.baseten import batch_window

with DAG(
    "systest_batch_window",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["system-test"],
):
    scale_up, restore = batch_window(
        task_id="window",
        model_id="syswindow01",
        min_replica=3,
        deferrable=True,
        poll_interval=1,
        timeout=600,
        retries=1,
        retry_delay=timedelta(seconds=2),
    )

    @task(retries=0)
    def batch() -> None:
        raise RuntimeError("the nightly batch failed")

    scale_up >> batch() >> restore

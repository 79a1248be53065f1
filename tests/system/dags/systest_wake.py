"""The wake-before-a-batch-window DAG: wake a scaled-to-zero deployment (deferred), then run the batch."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_baseten.operators.baseten import BasetenBatchPredictOperator, BasetenWakeOperator

with DAG(
    "systest_wake_window",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["system-test"],
):
    wake = BasetenWakeOperator(
        task_id="wake",
        model_id="syscold01",
        deferrable=True,
        wait_for_ready=True,
        poll_interval=1,
        timeout=600,
        retries=0,
    )
    batch = BasetenBatchPredictOperator(
        task_id="batch",
        model_id="syscold01",
        inputs=[{"text": text} for text in ("a great night", "a terrible queue", "just numbers", "lovely")],
        output_path="{{ dag_run.conf['output_path'] }}",
        max_concurrency=4,
        retries=0,
    )
    wake >> batch

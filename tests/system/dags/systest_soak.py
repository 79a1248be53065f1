"""DAGs of the fault soak: many async requests, and one large batch, while the emulator injects 429/502/503/resets."""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_baseten.operators.baseten import BasetenAsyncPredictOperator, BasetenBatchPredictOperator

START = pendulum.datetime(2025, 1, 1, tz="UTC")
SOAK_ASYNC_SIZE = int(os.environ.get("SYSTEST_SOAK_ASYNC_SIZE", "200"))

with DAG(
    "systest_soak_async", schedule=None, start_date=START, catchup=False, max_active_tasks=64, tags=["system-test"]
):
    BasetenAsyncPredictOperator.partial(
        task_id="score",
        model_id="syssoak01",
        deferrable=True,
        poll_interval=2,
        max_time_in_queue_seconds=259_200,
        # A 502 or a reset during the submit is ambiguous: the try fails and the retry submits again (nothing was
        # queued). One call in twenty meets one, so a task can meet several in a row among 200: retries to spare.
        retries=5,
        retry_delay=timedelta(seconds=1),
    ).expand(model_input=[{"text": f"soak item {i}", "n": i} for i in range(SOAK_ASYNC_SIZE)])

# Input and output paths come from the run's conf: the test writes the JSONL and reads the results back.
with DAG("systest_soak_batch", schedule=None, start_date=START, catchup=False, tags=["system-test"]):
    BasetenBatchPredictOperator(
        task_id="score_all",
        model_id="sysbatch01",
        input_path="{{ dag_run.conf['input_path'] }}",
        output_path="{{ dag_run.conf['output_path'] }}",
        id_field="id",
        max_concurrency=32,
        # Items whose predict met a connection reset are recorded as errors (the model may have run): ~2.6% here.
        max_failed_fraction=0.1,
        progress_interval=5,
        retries=0,
    )

"""DAG of the async batch system scenario: one task submits 40 async requests and one trigger waits on them all.

The model is gated (``tests/system/world.py``): its requests stay ``QUEUED`` until the test opens the gate, so the
triggerer can be SIGKILLed and restarted mid-wait.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_baseten.operators.baseten import BasetenAsyncBatchOperator

SIZE = 40

with DAG(
    "systest_async_batch",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["system-test"],
):
    BasetenAsyncBatchOperator(
        task_id="score_all",
        model_id="sysabatch01",
        inputs=[{"text": f"async batch item {n}"} for n in range(SIZE)],
        max_time_in_queue_seconds=259_200,
        poll_interval=2,
        retries=0,
    )

"""Traffic for the secrets scan: every operator kind touching the connection, one deferral, one failing task.

The scan (``test_secrets.py``) then searches every log, XCom, rendered template, trigger row, exception text and the
metadata database for the API key.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_baseten.operators.baseten import (
    BasetenAsyncPredictOperator,
    BasetenBatchPredictOperator,
    BasetenChatOperator,
    BasetenPredictOperator,
    BasetenWakeOperator,
)

with DAG(
    "systest_secrets",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 0},
    tags=["system-test"],
):
    BasetenPredictOperator(
        task_id="predict", model_id="syssecret01", model_input={"text": "{{ dag_run.run_id }} says hello"}
    )
    BasetenWakeOperator(task_id="wake", model_id="syssecret01", deferrable=False)
    BasetenChatOperator(task_id="chat", model="deepseek-ai/DeepSeek-V3.1", prompt="Say hello in five words.")
    BasetenBatchPredictOperator(
        task_id="batch", model_id="syssecret01", inputs=[{"text": "one"}, {"text": "two"}], max_concurrency=2
    )
    BasetenAsyncPredictOperator(
        task_id="async_predict",
        model_id="syssecretq01",
        model_input={"text": "deferred while the scan reads the trigger row"},
        deferrable=True,
        poll_interval=2,
        max_time_in_queue_seconds=259_200,
    )
    # Fails on purpose: its exception text (URL, status, Baseten's message) must not carry the key either.
    BasetenPredictOperator(task_id="predict_inactive", model_id="inactive01", model_input={"text": "nobody home"})

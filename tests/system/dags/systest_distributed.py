"""DAGs of the distributed scenarios (CeleryExecutor, two workers, three triggerers, PostgreSQL, Redis).

Models are those of ``tests/system/test_distributed.py``'s own emulator; sizes come from the environment (the test
module reads the same variables).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_baseten.operators.baseten import (
    BasetenAsyncPredictOperator,
    BasetenBatchPredictOperator,
    BasetenPredictOperator,
)

START = pendulum.datetime(2025, 1, 1, tz="UTC")
SHARDS = int(os.environ.get("SYSTEST_DIST_SHARDS", "4"))
SHARD_SIZE = int(os.environ.get("SYSTEST_DIST_SHARD_SIZE", "40"))
RATE_SIZE = int(os.environ.get("SYSTEST_DIST_RATE_SIZE", "36"))


def shard_inputs(shard: int) -> list[dict[str, object]]:
    return [
        {"id": f"s{shard}-{i}", "text": f"shard {shard} item {i}", "n": shard * SHARD_SIZE + i}
        for i in range(SHARD_SIZE)
    ]


# A batch sharded over mapped tasks; each shard writes to its own file in a directory both workers share. One
# item at a time per shard, so the item in flight when a worker dies is known to the test.
with DAG("systest_dist_batch", schedule=None, start_date=START, catchup=False, tags=["system-test"]):
    BasetenBatchPredictOperator.partial(
        task_id="shard",
        model_id="sysdistb01",
        output_path="{{ dag_run.conf['output_dir'] }}/shard-{{ ti.map_index }}.jsonl",
        id_field="id",
        max_concurrency=1,
        progress_interval=2,
        retries=1,
        retry_delay=timedelta(seconds=1),
    ).expand(inputs=[shard_inputs(s) for s in range(SHARDS)])

# Many deferred tasks on one key, spread over three triggerers, polling as fast as they are allowed to.
with DAG("systest_dist_rate", schedule=None, start_date=START, catchup=False, tags=["system-test"]):
    BasetenAsyncPredictOperator.partial(
        task_id="score",
        model_id="sysdistr01",
        deferrable=True,
        poll_interval=1,
        max_time_in_queue_seconds=259_200,
        retries=0,
    ).expand(model_input=[{"text": f"rate item {i}"} for i in range(RATE_SIZE)])

# Every kind of Baseten traffic, for the scenario with every process behind a forward proxy.
with DAG("systest_dist_proxy", schedule=None, start_date=START, catchup=False, tags=["system-test"]):
    BasetenPredictOperator(task_id="predict", model_id="sysdistp01", model_input={"text": "through the proxy"})
    BasetenBatchPredictOperator(
        task_id="batch",
        model_id="sysdistp01",
        inputs=[{"text": f"proxied batch item {i}"} for i in range(6)],
        output_path="{{ dag_run.conf['output_dir'] }}/proxy-batch.jsonl",
        max_concurrency=3,
        retries=0,
    )
    BasetenAsyncPredictOperator(
        task_id="async_predict",
        model_id="sysdistp01",
        model_input={"text": "deferred behind the proxy"},
        deferrable=True,
        poll_interval=1,
        max_time_in_queue_seconds=259_200,
        retries=0,
    )

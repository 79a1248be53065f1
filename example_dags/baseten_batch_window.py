"""A nightly batch window: scale a Baseten deployment up to N replicas ahead of the batch, run it, put it back.

``batch_window`` wires a setup (raise ``min_replica`` and wait, in the triggerer, until N replicas are up) and its
teardown (restore exactly the fields the window changed), so the restore runs even when the batch fails. The model
id is the local emulator's (``coldstart01`` is scaled to zero there); change the ``params`` to use your own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_baseten.operators.baseten import BasetenBatchPredictOperator, batch_window

DOC_MD = """
### Nightly batch window

Scheduled at 01:30 UTC, 30 minutes ahead of a batch window that opens at 02:00.

1. `window_scale_up` (setup) reads the deployment's autoscaling settings, saves the fields it changes (once,
   durably: a retried setup never takes its own raised values for the originals), sets `min_replica` (and
   `max_replica` when needed) and waits **in the triggerer** until `active_replica_count` reaches the floor.
2. `nightly_batch` scores the inputs on the warm replicas; `check_batch` fails the run when any input failed (or
   when the `fail_batch` param asks it to, to see the restore run after a failure).
3. `window_restore` (teardown) puts back exactly what the window changed. It runs whether the batch succeeded or
   failed; a change someone made to another setting during the window survives, and a second run sends nothing.

**Cost.** Every replica above the usual floor is billed from the moment it starts until the restore: start the
window only as early as the cold start needs.
"""

PARAMS = {
    "model_id": Param("coldstart01", type="string", description="The Baseten model the batch scores with."),
    "replicas": Param(3, type="integer", minimum=1, description="Replicas to keep up during the window."),
    "fail_batch": Param(False, type="boolean", description="Fail the batch on purpose (the restore still runs)."),
}

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 1,
    "retry_delay": timedelta(seconds=30),
    "execution_timeout": timedelta(minutes=45),
}

BATCH_TEXTS = [
    "Nightly report: orders are up and returns are down.",
    "A customer wrote that the new app is slow and confusing.",
    "Shipping delays in the north region, otherwise normal.",
    "Great support call, the issue was fixed in minutes.",
]


with DAG(
    dag_id="baseten_batch_window",
    description="Scale a deployment up for a nightly batch window and restore its autoscaling afterwards.",
    schedule="30 1 * * *",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["baseten", "autoscaling", "batch", "example"],
    doc_md=DOC_MD,
) as dag:
    scale_up, restore = batch_window(
        task_id="window",
        model_id="{{ params.model_id }}",
        min_replica="{{ params.replicas }}",
        deferrable=True,
        poll_interval=5,
        timeout=timedelta(minutes=25),
    )

    @task
    def batch_inputs() -> list[dict[str, str]]:
        """Tonight's inputs; in your copy, read them from your warehouse or object storage."""
        return [{"text": text} for text in BATCH_TEXTS]

    batch = BasetenBatchPredictOperator(
        task_id="nightly_batch", model_id="{{ params.model_id }}", inputs=batch_inputs(), max_concurrency=8
    )

    @task
    def check_batch(manifest: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Fail the run when inputs failed (or when asked to): the teardown restores the settings anyway."""
        assert params is not None
        if params["fail_batch"] or manifest["failed"]:
            raise RuntimeError(f"The nightly batch failed: {manifest}")
        return manifest

    scale_up >> batch
    check_batch(batch.output) >> restore

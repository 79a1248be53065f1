"""Wake scaled-to-zero Baseten models ahead of a nightly batch window, gate the batch on readiness, then let go.

Cold starts take from seconds to many minutes. This DAG runs 30 minutes before the batch window, wakes every model
the batch needs in parallel and waits in the triggerer (no worker slot held) until each deployment is ``ACTIVE``.
The model ids are the local emulator's (``coldstart01`` is scaled to zero there with a 3-minute cold start); change the
``params`` defaults to use your own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, TriggerRule, task

from airflow_provider_baseten.operators.baseten import BasetenBatchPredictOperator, BasetenWakeOperator

DOC_MD = """
### Wake models before the batch window

Scheduled at 01:30 UTC for a batch window that opens at 02:00.

1. `models_to_wake` reads the list of models from the params.
2. `wake_model` (mapped, one per model, in parallel) calls `POST /wake` and then waits **in the triggerer**
   (`deferrable=True`) until the deployment is `ACTIVE`. The log shows each status change with the time since the
   wake (`SCALED_TO_ZERO` → `WAKING_UP` → `ACTIVE`). A model that is `INACTIVE` fails fast (set
   `activate_if_inactive=True` to activate it first); a failed build fails at once.
3. `all_models_ready` gates the batch: it runs only when every wake succeeded and logs each deployment's status.
4. `nightly_batch` scores the inputs with `BasetenBatchPredictOperator` on warm replicas.
5. `let_models_scale_down` calls nothing: Baseten scales a deployment back to zero by itself `scale_down_delay` after
   its last request (900 s by default), so the warm replicas stop costing money without an API call. It runs even
   when the batch fails (`all_done`), to record that in the log.

**Cost.** Waking is free, but a woken replica is billed while it is up: schedule this DAG close to the batch window.
The wake is idempotent, so retries are safe.
"""

PARAMS = {
    "models_to_wake": Param(
        ["sentiment01", "textstats01", "coldstart01"],
        type="array",
        items={"type": "string"},
        description="Baseten model ids the batch needs.",
    ),
    "batch_model_id": Param("coldstart01", type="string", description="The model the nightly batch scores with."),
}

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "execution_timeout": timedelta(minutes=45),
}

BATCH_TEXTS = [
    "Nightly report: orders are up and returns are down.",
    "A customer wrote that the new app is slow and confusing.",
    "Shipping delays in the north region, otherwise normal.",
]


with DAG(
    dag_id="baseten_wake_before_batch",
    description="Wake the models a batch needs, in parallel and deferrable, then run the batch on warm replicas.",
    schedule="30 1 * * *",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["baseten", "wake", "batch", "example"],
    doc_md=DOC_MD,
) as dag:

    @task
    def models_to_wake(params: dict[str, Any] | None = None) -> list[str]:
        """The model ids to wake, from the params (a list, so the wake can be mapped over it)."""
        assert params is not None
        return list(params["models_to_wake"])

    wakes = BasetenWakeOperator.partial(
        task_id="wake_model",
        deferrable=True,
        wait_for_ready=True,
        poll_interval=5,
        # An absolute deadline carried into the trigger: it holds while deferred (execution_timeout does not).
        timeout=timedelta(minutes=25),
    ).expand(model_id=models_to_wake())

    @task
    def all_models_ready(deployments: list[dict[str, Any] | None]) -> list[str]:
        """Fail unless every woken deployment reported ``ACTIVE``; the batch depends on this task."""
        ready = []
        for deployment in deployments:
            deployment = deployment or {}
            print(f"{deployment.get('model_id')}: deployment {deployment.get('id')} is {deployment.get('status')}")
            if deployment.get("status") != "ACTIVE":
                raise RuntimeError(f"Deployment {deployment.get('id')} is {deployment.get('status')}, not ACTIVE.")
            ready.append(str(deployment.get("id")))
        return ready

    @task
    def batch_inputs() -> list[dict[str, str]]:
        """Tonight's inputs; in your copy, read them from your warehouse or object storage."""
        return [{"text": text} for text in BATCH_TEXTS]

    gate = all_models_ready(wakes.output)
    batch = BasetenBatchPredictOperator(
        task_id="nightly_batch",
        model_id="{{ params.batch_model_id }}",
        inputs=batch_inputs(),
        max_concurrency=8,
    )
    gate >> batch

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def let_models_scale_down() -> None:
        """Nothing to call: Baseten scales each deployment to zero ``scale_down_delay`` after its last request."""
        print(
            "No API call needed: each woken deployment scales back to zero by itself after its scale_down_delay "
            "(900 s by default) without traffic. To stop paying sooner, lower scale_down_delay in the deployment's "
            "autoscaling settings."
        )

    batch >> let_models_scale_down()

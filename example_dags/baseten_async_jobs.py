"""Long async jobs on Baseten: submit on the worker, wait in the triggerer, and wait on requests submitted elsewhere.

Async requests can queue for minutes or hours. The operators submit once, then wait deferred (no worker slot held);
a triggerer restart or a task retry re-attaches to the request already submitted instead of paying for a new one
(Airflow 3.3+). Baseten does not keep async outputs: the tasks return a manifest (ids, status, timestamps, errors),
and the output goes to your webhook or wherever your model writes it. ``handle_baseten_webhook`` below is the receiver
side: verify the signature before trusting a delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_baseten.operators.baseten import BasetenAsyncPredictOperator
from airflow_provider_baseten.sensors.baseten import BasetenAsyncRequestSensor

DOC_MD = """
### Async jobs on Baseten

Two paths:

* **Submit and wait in Airflow.** `score_archive` (a model, `async_predict`) and `summarize_archive` (a chain,
  `async_run_remote`) each submit one async request on the worker, then defer: the triggerer polls
  `GET /async_request/{id}` until the request is `SUCCEEDED` (green) or `FAILED` / `EXPIRED` / `CANCELED` /
  `WEBHOOK_FAILED` (red). Marking the deferred task failed cancels the request; a deadline (`timeout`) cancels it too.
  The model is scaled to zero (in the emulator's world): the request waits `QUEUED` while Baseten cold-starts it,
  and the task log shows each status change. A request that has already finished when it is first read (the
  quick chain) is not waited for at all.
* **Wait on a request submitted elsewhere.** `submit_outside_airflow` stands in for another system that submitted a
  request and handed over its id; `wait_for_external_request` (the sensor, deferrable) waits on that id.

Each returns a **manifest**, never the prediction: Baseten does not store async outputs. Set `webhook_endpoint` on
the operator to receive outputs; `verify_webhook_example` shows the receiver verifying `X-BASETEN-SIGNATURE`.

**Cost and retries.** Every submit is billed. On Airflow 3.3+ a retry re-attaches to the request it already
submitted (kept in the task state store); on 3.1/3.2 a crash between submit and defer can submit twice.
"""

#: The one place to change ids: the defaults here, or the run's conf.
PARAMS = {
    "async_model_id": Param("coldstart01", type="string", description="Model of the async job (may be scaled to 0)."),
    "async_chain_id": Param("summarize01", type="string", description="Chain of the async job."),
    "external_model_id": Param("slow01", type="string", description="Model the other system submits to."),
}

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    # Not enforced while deferred; the operators carry it into the trigger as an absolute deadline.
    "execution_timeout": timedelta(hours=2),
}

#: Where the webhook secret lives in your receiver (never in code); a fixed value here so the example runs.
EXAMPLE_WEBHOOK_SECRET = "whsec-example-only"


def handle_baseten_webhook(raw_body: bytes, headers: dict[str, str], secrets: list[str]) -> dict[str, Any]:
    """What a webhook receiver (your web app, not a task) does with a delivery: verify, then parse.

    Verify over the raw bytes, before parsing: re-serialized JSON would not match the signature.
    """
    from airflow_provider_baseten.webhooks import verify_webhook_signature

    verify_webhook_signature(raw_body, headers.get("X-BASETEN-SIGNATURE", ""), secrets)
    delivery = json.loads(raw_body)
    if delivery.get("errors"):
        raise RuntimeError(f"Async request {delivery['request_id']} failed: {delivery['errors']}")
    return delivery


with DAG(
    dag_id="baseten_async_jobs",
    description="Async predictions on a model and a chain, waited on in the triggerer, and a sensor on an external id.",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["baseten", "async", "deferrable", "example"],
    doc_md=DOC_MD,
) as dag:
    score = BasetenAsyncPredictOperator(
        task_id="score_archive",
        model_id="{{ params.async_model_id }}",
        model_input={"text": "Every review we received on {{ ds }}, scored in one pass."},
        deferrable=True,
        poll_interval=5,
        # One absolute deadline, enforced in the triggerer too; the request's max_time_in_queue_seconds defaults
        # to the time left before it, so Baseten expires a request that could no longer finish in time.
        timeout=timedelta(hours=1),
    )

    summarize = BasetenAsyncPredictOperator(
        task_id="summarize_archive",
        chain_id="{{ params.async_chain_id }}",
        model_input={"text": "All support tickets of {{ ds }}, concatenated."},
        deferrable=True,
        poll_interval=5,
        timeout=timedelta(hours=1),
    )

    @task
    def submit_outside_airflow(params: dict[str, Any] | None = None) -> str:
        """Stands in for another system: submit with the hook and hand over only the request id."""
        from airflow_provider_baseten.hooks.addressing import Target
        from airflow_provider_baseten.hooks.baseten import BasetenHook

        assert params is not None
        target = Target.of(model_id=params["external_model_id"])
        submitted = BasetenHook().async_predict(target, {"model_input": {"text": "submitted by another system"}})
        print(f"Submitted {submitted.request_id} outside the operator")
        return submitted.request_id

    wait_external = BasetenAsyncRequestSensor(
        task_id="wait_for_external_request",
        model_id="{{ params.external_model_id }}",
        request_id=submit_outside_airflow(),
        deferrable=True,
        poke_interval=5,
        timeout=3600,  # the sensor's timeout: fail (without cancelling someone else's request) after an hour
    )

    @task
    def verify_webhook_example() -> str:
        """Sign a sample delivery the way Baseten does, then verify it as a receiver would."""
        body = json.dumps(
            {
                "request_id": "example-request",
                "model_id": "coldstart01",
                "deployment_id": "coldprod01",
                "type": "async_request_completed",
                "time": pendulum.now("UTC").isoformat(),
                "data": {"label": "positive", "score": 0.93},
                "errors": [],
            }
        ).encode()
        signature = hmac.new(EXAMPLE_WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        delivery = handle_baseten_webhook(body, {"X-BASETEN-SIGNATURE": f"v1={signature}"}, [EXAMPLE_WEBHOOK_SECRET])
        print(f"Verified delivery for {delivery['request_id']} at {time.strftime('%H:%M:%S')}")
        return str(delivery["request_id"])

    @task
    def record_manifests(*manifests: dict[str, Any]) -> list[dict[str, Any]]:
        """Keep the manifests (ids, statuses, timestamps) for lineage; the outputs went to the webhook."""
        for manifest in manifests:
            target = manifest.get("model_id") or manifest.get("chain_id")
            print(
                f"{manifest['request_id']} on {target}: {manifest['status']} (webhook {manifest.get('webhook_status')})"
            )
        return list(manifests)

    record_manifests(score.output, summarize.output, wait_external.output)
    verify_webhook_example()

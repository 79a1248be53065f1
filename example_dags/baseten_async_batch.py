"""A nightly async batch: thousands of inputs, one task, one trigger, outputs arriving through a webhook receiver.

``score_reviews`` submits one async request per input (paced under Baseten's submit limit, at most
``max_in_flight`` queued or running at once) and waits for all of them in the triggerer with one trigger. Baseten
keeps no outputs: each one is posted to ``webhook_endpoint``, where a :class:`~airflow_provider_baseten.webhooks.
WebhookReceiver` verifies it and stores it at ``{store}/{request_id}.json``. ``collect_outputs`` joins the task's
manifest (input index -> request id, status) with the stored outputs.

The receiver is a small web service outside Airflow. ``make demo`` starts one on loopback
(``python -m airflow_provider_baseten.webhooks serve``'s server, in-process) and passes its URL and store as the
Airflow Variables ``baseten_webhook_url`` and ``baseten_webhook_store``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_baseten.operators.baseten import BasetenAsyncBatchOperator

DOC_MD = """
### Nightly async batch with webhook outputs

* `make_inputs` builds the night's inputs (here 300 short reviews; in production a JSONL file at any
  `ObjectStoragePath`, passed as `input_path=`).
* `score_reviews` (`BasetenAsyncBatchOperator`) submits each input as one async request at `submit_rate` per
  second, keeps at most `max_in_flight` queued or running, records every request in a durable manifest, and defers
  to **one** trigger that waits on all of them within the shared status budget. A task retry continues from the
  manifest: accepted requests are waited on, never sent again; inputs that ended `FAILED` or `EXPIRED` are resent
  (`resubmit`). It fails when more than `max_failed_fraction` of the inputs did not succeed.
* Each output goes to the webhook receiver (`baseten_webhook_url`), which verifies `X-BASETEN-SIGNATURE` and writes
  it to `baseten_webhook_store/{request_id}.json`, once, whatever Baseten retries.
* `collect_outputs` reads the manifest and checks that every succeeded request's output is stored.

**Cost.** Every accepted submit is billed once; the manifest is what prevents a retry from paying twice.
"""

PARAMS = {
    "model_id": Param("sentiment01", type="string", description="Model every input is sent to (async)."),
    "inputs": Param(300, type="integer", minimum=1, description="How many inputs tonight's batch has."),
}

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    # Carried into the trigger as one absolute deadline for the whole batch.
    "execution_timeout": timedelta(hours=4),
}

with DAG(
    dag_id="baseten_async_batch",
    description="Nightly async batch: one task and one trigger for every input, outputs through a webhook receiver",
    schedule="0 1 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    default_args=DEFAULT_ARGS,
    doc_md=DOC_MD,
    tags=["baseten", "example", "async", "batch"],
) as dag:

    @task
    def make_inputs(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Tonight's inputs; each becomes one async ``model_input``."""
        count = int((params or {}).get("inputs", 300))
        moods = ("good", "bad", "fine")
        return [{"review_id": f"r{i:05d}", "text": f"review {i}: {moods[i % 3]}"} for i in range(count)]

    score_reviews = BasetenAsyncBatchOperator(
        task_id="score_reviews",
        model_id="{{ params.model_id }}",
        inputs=make_inputs(),
        id_field="review_id",
        webhook_endpoint="{{ var.value.baseten_webhook_url }}",
        webhook_outputs="{{ var.value.baseten_webhook_store }}",  # the trigger learns completions from the store
        submit_rate=50,
        max_in_flight=200,
        poll_interval=15,
        resubmit=("FAILED", "EXPIRED"),
        max_failed_fraction=0.01,
    )

    @task
    def collect_outputs(result: dict[str, Any], store: str) -> dict[str, Any]:
        """Join the manifest with the stored webhook outputs: every succeeded request must have one."""
        from airflow_provider_baseten.operators._async_manifest import Manifest
        from airflow_provider_baseten.operators._storage import as_path
        from airflow_provider_baseten.webhooks import output_uri

        manifest = Manifest(result["manifest_uri"]).load()
        succeeded = [e for e in manifest.entries.values() if e.status == "SUCCEEDED" and e.request_id]
        missing = [e.input_id for e in succeeded if not as_path(output_uri(store, str(e.request_id))).exists()]
        if missing:
            raise RuntimeError(f"{len(missing)} succeeded requests have no stored output, e.g. {missing[:5]}")
        print(f"{len(succeeded)} outputs stored under {store}; counts {result['counts']}")
        return {"outputs": len(succeeded), "store": store, "counts": result["counts"]}

    collect_outputs(score_reviews.output, "{{ var.value.baseten_webhook_store }}")

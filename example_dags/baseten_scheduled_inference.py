"""Daily inference on Baseten: per-item predictions with ``.expand()``, a chain run, and a batch-scored JSONL file.

Copy this file into your DAGs folder and point the ``baseten_default`` connection at Baseten (API key in the
password, host empty). The model and chain ids below are the ones of the local emulator's default world; change the
``params`` defaults (or pass ``--conf`` when triggering) to use your own.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, ObjectStoragePath, Param, task

from airflow_provider_baseten.operators.baseten import (
    BasetenBatchPredictOperator,
    BasetenChainRunOperator,
    BasetenPredictOperator,
)

DOC_MD = """
### Scheduled inference on Baseten

Every day this DAG

1. loads the day's product reviews (`load_reviews`; here a fixed sample, in your copy a query),
2. scores each review with the sentiment model, one mapped task per review (`score_review`, `.expand()`),
3. asks the summarizer **chain** for a digest of all reviews (`summarize_reviews`),
4. writes a larger JSONL file of reviews and scores it with `BasetenBatchPredictOperator` (`score_review_file`):
   up to `max_concurrency` requests in flight, per-item retries, outputs written as JSONL; a task retry resumes and
   never re-predicts an item already written,
5. reports label counts, the digest and the batch manifest (`report`).

**Cost.** Every prediction is billed. A task retry re-runs a mapped `score_review` task (one paid call); the batch
operator resumes from its output file instead of starting over.

**Change one place.** Model and chain ids are DAG params: edit the defaults below or pass them as run conf.
"""

#: The one place to change ids: the defaults here, or the run's conf (``airflow dags trigger -c '{...}'``).
PARAMS = {
    "sentiment_model_id": Param("sentiment01", type="string", description="Baseten model that scores reviews."),
    "summarizer_chain_id": Param("summarize01", type="string", description="Baseten chain that writes the digest."),
    "batch_size": Param(200, type="integer", minimum=1, description="Reviews written to the batch file."),
    # Any ObjectStoragePath URI (s3://bucket/prefix, gs://...; with a conn_id in the URI if needed), or empty.
    "data_root": Param("", type="string", description="Folder URI for batch files; empty: under $AIRFLOW_HOME."),
}

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(minutes=30),
}

SAMPLE_REVIEWS = [
    "The blender is great, fast and quiet. I love it.",
    "Terrible support, the package arrived broken and nobody answered.",
    "It works. Delivery took four days.",
    "Excellent value, would buy again!",
]


def data_folder(data_root: str, run_id: str) -> ObjectStoragePath:
    """The folder of this run's batch files (created when local: object stores have no folders)."""
    root = data_root or f"file://{os.environ.get('AIRFLOW_HOME', os.path.expanduser('~/airflow'))}/baseten-data"
    safe_run_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    folder = ObjectStoragePath(root) / "scheduled_inference" / safe_run_id
    if folder.protocol in ("file", "local"):
        folder.mkdir(parents=True, exist_ok=True)
    return folder


with DAG(
    dag_id="baseten_scheduled_inference",
    description="Daily predictions on Baseten: mapped predict, a chain run and a batch-scored JSONL file.",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["baseten", "inference", "example"],
    doc_md=DOC_MD,
) as dag:

    @task
    def load_reviews() -> list[dict[str, str]]:
        """The inputs of the mapped predictions: one ``{"text": ...}`` model input per review."""
        return [{"text": text} for text in SAMPLE_REVIEWS]

    reviews = load_reviews()

    # One mapped task instance per review: each is its own retry unit, visible in the grid.
    scores = BasetenPredictOperator.partial(
        task_id="score_review",
        model_id="{{ params.sentiment_model_id }}",
        max_active_tis_per_dagrun=8,
    ).expand(model_input=reviews)

    @task
    def digest_input(items: list[dict[str, str]]) -> dict[str, str]:
        """The chain's ``run_remote`` arguments: all reviews as one text."""
        return {"text": " ".join(item["text"] for item in items)}

    summary = BasetenChainRunOperator(
        task_id="summarize_reviews",
        chain_id="{{ params.summarizer_chain_id }}",
        chain_input=digest_input(reviews),
    )

    @task(multiple_outputs=True)
    def write_review_file(params: dict[str, Any] | None = None, run_id: str | None = None) -> dict[str, str]:
        """Write the batch input as JSONL, one model input per line; returns where the input and output files go."""
        assert params is not None
        assert run_id is not None
        folder = data_folder(params["data_root"], run_id)
        path = folder / "reviews.jsonl"
        with path.open("w") as handle:
            for index in range(int(params["batch_size"])):
                text = SAMPLE_REVIEWS[index % len(SAMPLE_REVIEWS)]
                handle.write(json.dumps({"text": f"{text} (review {index})"}) + "\n")
        return {"input_path": str(path), "output_path": str(folder / "reviews.scores.jsonl")}

    files = write_review_file()
    batch = BasetenBatchPredictOperator(
        task_id="score_review_file",
        model_id="{{ params.sentiment_model_id }}",
        input_path=files["input_path"],
        output_path=files["output_path"],
        max_concurrency=16,
        max_failed_fraction=0.01,
    )

    @task
    def report(results: list[dict[str, Any]], digest: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
        """Label counts of the mapped predictions, the chain's digest and the batch manifest, in one summary."""
        labels: dict[str, int] = {}
        for result in results:
            labels[result["label"]] = labels.get(result["label"], 0) + 1
        print(f"Review labels: {labels}")
        print(f"Digest: {digest}")
        print(f"Batch: {manifest['succeeded']}/{manifest['total']} scored, written to {manifest['output_path']}")
        return {"labels": labels, "batch_succeeded": manifest["succeeded"], "batch_failed": manifest["failed"]}

    report(scores.output, summary.output, batch.output)

"""Evaluate, then promote: score a labelled set on the development deployment and on production, and promote
development when it scores better.

The model id is the local emulator's (``sentiment01`` has a development and a production deployment there); change
the ``params`` to use your own.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_baseten.operators.baseten import BasetenBatchPredictOperator, BasetenPromoteOperator

DOC_MD = """
### Evaluate, then promote

1. `score_development` and `score_production` batch-score the same labelled set on both deployments.
2. `compare` reads both outputs and computes accuracy against the labels.
3. `should_promote` branches (a short-circuit): `promote_development` runs only when development beats production
   by `min_improvement`; otherwise it is skipped and the log says why.
4. `promote_development` promotes the development deployment to production and waits **in the triggerer** until the
   promotion ends: `SUCCEEDED` finishes green, `FAILED` or `CANCELED` fails with Baseten's message. A retry waits on a
   promotion already in progress instead of starting another, and one already done is success. Killing the task
   cancels the promotion.

**Cost.** Scoring is billed per prediction on both deployments; the promotion itself runs no prediction.
"""

PARAMS = {
    "model_id": Param("sentiment01", type="string", description="The Baseten model to evaluate and promote."),
    "min_improvement": Param(0.0, type="number", description="Accuracy development must gain over production."),
}

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 1,
    "retry_delay": timedelta(seconds=30),
    "execution_timeout": timedelta(minutes=60),
}

#: A labelled evaluation set; in your copy, read it from your warehouse.
LABELLED = [
    {"text": "I love this, great product!", "label": "positive"},
    {"text": "Terrible support, I am very disappointed.", "label": "negative"},
    {"text": "Works fine, fast shipping, happy.", "label": "positive"},
    {"text": "Broken on arrival, awful.", "label": "negative"},
]


def accuracy(manifest: dict[str, Any]) -> float:
    """Share of labelled inputs whose predicted label matches, from a batch output file."""
    from urllib.parse import unquote

    from airflow.providers.common.compat.sdk import ObjectStoragePath

    right = 0
    # The manifest's output_path is a URI (percent-encoded); ObjectStoragePath takes the plain path.
    with ObjectStoragePath(unquote(manifest["output_path"])).open("r") as lines:
        for line in lines:
            record = json.loads(line)
            output = record.get("output") or {}
            right += output.get("label") == LABELLED[record["index"]]["label"]
    return right / len(LABELLED)


with DAG(
    dag_id="baseten_evaluate_promote",
    description="Batch-score a labelled set on development and production; promote development when it is better.",
    schedule="0 6 * * 1",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["baseten", "promotion", "evaluation", "example"],
    doc_md=DOC_MD,
) as dag:
    inputs = [{"text": row["text"]} for row in LABELLED]
    candidate = BasetenBatchPredictOperator(
        task_id="score_development", model_id="{{ params.model_id }}", environment="development", inputs=inputs
    )
    production = BasetenBatchPredictOperator(
        task_id="score_production", model_id="{{ params.model_id }}", inputs=inputs
    )

    @task
    def compare(development: dict[str, Any], current: dict[str, Any]) -> dict[str, float]:
        scores = {"development": accuracy(development), "production": accuracy(current)}
        print(f"Accuracy: {scores}")
        return scores

    @task.short_circuit
    def should_promote(scores: dict[str, float], params: dict[str, Any] | None = None) -> bool:
        """Continue to the promotion only when development beats production by the margin (else skip it)."""
        assert params is not None
        better = scores["development"] >= scores["production"] + float(params["min_improvement"])
        if not better:
            print(f"Development did not beat production by the required margin: {scores}; keeping production.")
        return better

    promote = BasetenPromoteOperator(
        task_id="promote_development",
        model_id="{{ params.model_id }}",
        deployment_id="development",
        deferrable=True,
        poll_interval=5,
        timeout=timedelta(minutes=45),
    )

    should_promote(compare(candidate.output, production.output)) >> promote

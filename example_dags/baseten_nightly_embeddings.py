"""Nightly embeddings of a document file on a Baseten BEI deployment, written to Parquet and declared as an asset.

Copy this file (and ``baseten_embeddings_consumer.py``, the DAG scheduled on its output) into your DAGs folder and
point the ``baseten_default`` connection at Baseten. The model id below is the local emulator's BEI deployment;
change the ``params`` default to your own embeddings model.
"""

from __future__ import annotations

import importlib.util
import json
import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_baseten.operators.baseten import BasetenClassifyOperator, BasetenEmbeddingsOperator

DOC_MD = """
### Nightly embeddings on Baseten

Every night this DAG embeds the knowledge-base articles in `data/documents.jsonl` (in your copy: the day's export
of your documents, at any `ObjectStoragePath` URI such as `s3://bucket/kb/documents.jsonl`) with
`BasetenEmbeddingsOperator`:

1. `embed_documents` packs the texts 16 per request, 4 requests in flight, and writes one row per document,
   `{index, id, embedding}`, to a Parquet file (JSONL when pyarrow is not installed: `pip install
   'airflow-provider-baseten[parquet]'`). A task retry resumes: nothing already written is sent again.
2. `classify_documents` labels the same articles on a BEI classifier with `BasetenClassifyOperator` (packed and
   resumable the same way), one line `{index, id, labels: [{label, score}]}` per article in `labels.jsonl`.
3. `report` logs both manifests: texts, failures, vector size, tokens used and the count of each top label.

The output file is an **Airflow asset** (the operator declares a literal `output_path` as its outlet), so
`baseten_embeddings_consumer` runs each time a new set of vectors lands.

**Cost.** Each request is billed by its tokens; a retry re-sends only what has no line in the output.
"""

#: Where the vectors go: known at parse time, so the output is an asset a DAG can be scheduled on.
OUTPUT_ROOT = os.environ.get("AIRFLOW__BASETEN__OUTPUT_LOCATION") or (
    f"file://{os.environ.get('AIRFLOW_HOME', os.path.expanduser('~/airflow'))}/baseten-outputs"
)
SUFFIX = ".parquet" if importlib.util.find_spec("pyarrow") else ".jsonl"
EMBEDDINGS_URI = f"{OUTPUT_ROOT}/nightly-embeddings/documents{SUFFIX}"
LABELS_URI = f"{OUTPUT_ROOT}/nightly-embeddings/labels.jsonl"
DOCUMENTS = Path(__file__).resolve().parent / "data" / "documents.jsonl"

PARAMS = {
    "embeddings_model_id": Param("embed01", type="string", description="Baseten BEI model that embeds the texts."),
    "dimensions": Param(None, type=["null", "integer"], description="Vector size to ask for (Matryoshka models)."),
    "classifier_model_id": Param("embed01", type="string", description="Baseten BEI model that labels the texts."),
}

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "execution_timeout": timedelta(minutes=30),
}

with DAG(
    dag_id="baseten_nightly_embeddings",
    description="Nightly embeddings of a document file on Baseten, into Parquet, as an asset for downstream DAGs.",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["baseten", "example", "embeddings"],
    doc_md=DOC_MD,
) as dag:
    embed_documents = BasetenEmbeddingsOperator(
        task_id="embed_documents",
        model_id="{{ params.embeddings_model_id }}",
        input_path=str(DOCUMENTS),
        text_field="text",
        id_field="doc_id",
        output_path=EMBEDDINGS_URI,
        batch_size=16,
        max_concurrency=4,
    )

    classify_documents = BasetenClassifyOperator(
        task_id="classify_documents",
        model_id="{{ params.classifier_model_id }}",
        input_path=str(DOCUMENTS),
        text_field="text",
        id_field="doc_id",
        output_path=LABELS_URI,
        batch_size=16,
        max_concurrency=4,
    )

    @task
    def report(manifest: dict, labels: dict) -> dict:
        from collections import Counter

        from airflow.sdk import ObjectStoragePath

        with ObjectStoragePath(labels["output_path"]).open("r") as handle:
            lines = [json.loads(line) for line in handle if line.strip()]
        top = Counter(line["labels"][0]["label"] for line in lines if line.get("labels"))
        print(
            f"Embedded {manifest['succeeded']} of {manifest['total']} documents ({manifest['failed']} failed) into "
            f"{manifest['output_path']}: {manifest['dimensions']} dimensions, {manifest['usage']['total_tokens']} "
            f"tokens. Labelled {labels['succeeded']} of {labels['total']} in {labels['requests']} requests: "
            f"{dict(top)}."
        )
        summary = {key: manifest[key] for key in ("output_path", "total", "succeeded", "failed", "dimensions")}
        return {**summary, "labels": dict(top)}

    report(embed_documents.output, classify_documents.output)

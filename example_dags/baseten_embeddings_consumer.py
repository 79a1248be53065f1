"""Scheduled on the vectors ``baseten_nightly_embeddings`` writes: finds each document's nearest neighbour.

The schedule is the output asset of the embeddings task, so this DAG runs whenever a new set of vectors lands; no
time schedule, no sensor on a fixed hour.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, Param, task

DOC_MD = """
### Consuming the nightly embeddings

`baseten_nightly_embeddings` declares its output file as an Airflow asset; this DAG is scheduled on that asset.
`nearest_neighbours` reads the vectors (Parquet, or JSONL without pyarrow) and logs, for each document, the most
similar other document by cosine similarity: the shape of a duplicate-article report or a "related articles" table.
`search` embeds the `query` param on the same Baseten model (one `BasetenHook.embed` call) and logs the three
closest documents: a smoke test that the index answers. Replace them with your own steps (load the vectors into a
vector store, refresh a search index, ...).

Run by hand before the first embeddings exist (`airflow dags test`), it waits up to `wait_s` seconds for the file.
"""

OUTPUT_ROOT = os.environ.get("AIRFLOW__BASETEN__OUTPUT_LOCATION") or (
    f"file://{os.environ.get('AIRFLOW_HOME', os.path.expanduser('~/airflow'))}/baseten-outputs"
)
SUFFIX = ".parquet" if importlib.util.find_spec("pyarrow") else ".jsonl"
#: The same URI as the producer's output_path: its outlet asset.
EMBEDDINGS = Asset(f"{OUTPUT_ROOT}/nightly-embeddings/documents{SUFFIX}")

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 1,
    "retry_delay": timedelta(seconds=30),
    "execution_timeout": timedelta(minutes=10),
}


def read_vectors(uri: str) -> dict[str, list[float]]:
    """``{id: vector}`` of the successful rows."""
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(uri)
    if uri.endswith(".parquet"):
        import pyarrow.parquet as pq

        with path.open("rb") as handle:
            rows = pq.read_table(handle, columns=["id", "embedding"]).to_pylist()
    else:
        with path.open("r") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
    return {str(row["id"]): row["embedding"] for row in rows if row.get("embedding") is not None}


def cosine(a: list[float], b: list[float]) -> float:
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norm if norm else 0.0


with DAG(
    dag_id="baseten_embeddings_consumer",
    description="Runs on each new set of Baseten embeddings (an asset): nearest-neighbour report.",
    schedule=[EMBEDDINGS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={
        "wait_s": Param(240, type="integer", minimum=0, description="Seconds to wait for the vectors file."),
        "query": Param("how do I schedule inference?", type="string", description="Search smoke-test query."),
        "embeddings_model_id": Param("embed01", type="string", description="The BEI model that made the vectors."),
    },
    tags=["baseten", "example", "embeddings"],
    doc_md=DOC_MD,
) as dag:

    @task
    def nearest_neighbours(params: dict | None = None) -> dict:
        from airflow.sdk import ObjectStoragePath

        deadline = time.monotonic() + int((params or {}).get("wait_s", 0))
        while not ObjectStoragePath(EMBEDDINGS.uri).exists() and time.monotonic() < deadline:
            time.sleep(2)
        vectors = read_vectors(EMBEDDINGS.uri)
        if len(vectors) < 2:
            raise ValueError(f"{EMBEDDINGS.uri} holds {len(vectors)} vectors; at least two are needed.")
        pairs = {}
        for doc_id, vector in vectors.items():
            best = max((other for other in vectors if other != doc_id), key=lambda o: cosine(vector, vectors[o]))
            pairs[doc_id] = best
            print(f"{doc_id}: nearest {best} (cosine {cosine(vector, vectors[best]):.3f})")
        return {"documents": len(vectors), "nearest": pairs}

    @task
    def search(params: dict | None = None) -> list[str]:
        """The query embedded on the model that made the vectors (same space), then the three closest documents."""
        from airflow_provider_baseten.hooks.addressing import Target
        from airflow_provider_baseten.hooks.baseten import BasetenHook

        params = params or {}
        vectors = read_vectors(EMBEDDINGS.uri)
        dimensions = len(next(iter(vectors.values())))
        target = Target.of(model_id=params.get("embeddings_model_id", "embed01"))
        query = BasetenHook().embed(target, [params["query"]], dimensions=dimensions).data[0].embedding
        top = sorted(vectors, key=lambda doc_id: cosine(query, vectors[doc_id]), reverse=True)[:3]
        print(f"{params['query']!r}: {top}")
        return top

    nearest_neighbours() >> search()

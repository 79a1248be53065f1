"""BEI deployments in the emulator: embeddings, rerank, classify, latency per batch, concurrency per replica."""

from __future__ import annotations

import base64
import math
import struct
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import BasetenClient

from airflow_provider_baseten.emulator import Emulator, FaultPlan
from airflow_provider_baseten.emulator.behaviours import behaviour_from_spec
from airflow_provider_baseten.emulator.bei import Bei, slots_of, vector
from airflow_provider_baseten.emulator.world import DeploymentSpec, ModelSpec, World

pytestmark = pytest.mark.integration

HOST = "model-embed01"
SYNC = "/production/sync"


def slow_world() -> World:
    """One BEI deployment, one replica, one request at a time, 100 ms + 10 ms per input."""
    bei = Bei(dimensions=16, base_ms=100, per_input_ms=10)
    spec = DeploymentSpec("slowbeiprod01", min_replicas=1, predict_concurrency=1)
    return World().add(ModelSpec("slowbei01", bei, deployments=[spec]))


def test_embeddings_are_deterministic_unit_vectors(client: BasetenClient) -> None:
    body = {"input": ["hello world", "good day to you"], "model": "bge"}
    first = client.post(HOST, f"{SYNC}/v1/embeddings", json=body).json()
    again = client.post(HOST, f"{SYNC}/v1/embeddings", json={"input": ["good day to you"], "model": "x"}).json()
    assert first["object"] == "list"
    assert first["model"] == "bge"
    assert [item["index"] for item in first["data"]] == [0, 1]
    vectors = [item["embedding"] for item in first["data"]]
    assert [len(v) for v in vectors] == [384, 384]  # the default dimensions
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-5) for v in vectors)
    assert vectors[0] != vectors[1]
    assert again["data"][0]["embedding"] == vectors[1]
    assert first["usage"] == {"prompt_tokens": 6, "total_tokens": 6}


def test_dimensions_and_base64(client: BasetenClient) -> None:
    short = client.post(HOST, f"{SYNC}/v1/embeddings", json={"input": "one", "dimensions": 8}).json()
    packed = client.post(
        HOST, f"{SYNC}/v1/embeddings", json={"input": ["one"], "dimensions": 8, "encoding_format": "base64"}
    ).json()
    floats = short["data"][0]["embedding"]
    assert len(floats) == 8
    assert list(struct.unpack("<8f", base64.b64decode(packed["data"][0]["embedding"]))) == floats
    assert floats == vector("one", 8)
    assert all(len(vector(f"text {i}", 5)) == 5 for i in range(3))
    assert len({tuple(vector(f"text {i}", 384)) for i in range(1000)}) == 1000


@pytest.mark.parametrize(
    ("route", "body", "status", "match"),
    [
        ("v1/embeddings", {"input": []}, 422, "non-empty list of strings"),
        ("v1/embeddings", {"input": [[1, 2]]}, 422, "non-empty list of strings"),
        ("v1/embeddings", {"input": ["a"], "dimensions": 0}, 422, "'dimensions'"),
        ("v1/embeddings", {"input": ["a"], "encoding_format": "int8"}, 422, "encoding_format"),
        ("rerank", {"query": 1, "texts": ["a"]}, 422, "'query'"),
        ("predict", {"inputs": [[1]]}, 422, "'inputs'"),
        ("v1/models", {}, 404, "Not Found"),
    ],
)
def test_invalid_requests_get_tei_errors(
    client: BasetenClient, route: str, body: dict[str, Any], status: int, match: str
) -> None:
    response = client.post(HOST, f"{SYNC}/{route}", json=body)
    assert response.status_code == status
    assert match in response.text


def test_batches_over_the_limit_get_413(client: BasetenClient, baseten_emulator: Emulator) -> None:
    world = World().add(
        ModelSpec("tiny01", Bei(max_inputs=2), deployments=[DeploymentSpec("tinyprod01", min_replicas=1)])
    )
    baseten_emulator.reset(world)
    response = client.post("model-tiny01", f"{SYNC}/v1/embeddings", json={"input": ["a", "b", "c"]})
    assert response.status_code == 413
    assert "maximum allowed batch size 2" in response.json()["error"]


def test_rerank_scores_by_shared_words_best_first(client: BasetenClient) -> None:
    body = {"query": "Hello world", "texts": ["nothing here", "hello there", "world, hello!"], "return_text": True}
    answer = client.post(HOST, f"{SYNC}/rerank", json=body).json()
    assert answer == [
        {"index": 2, "score": 1.0, "text": "world, hello!"},
        {"index": 1, "score": 0.5, "text": "hello there"},
        {"index": 0, "score": 0.0, "text": "nothing here"},
    ]
    raw = client.post(HOST, f"{SYNC}/rerank", json={"query": "a", "texts": ["a", "b"], "raw_scores": True}).json()
    assert [result["score"] for result in raw] == [5.0, -5.0]
    assert "text" not in raw[0]


def test_classify_takes_the_performance_clients_nested_inputs(client: BasetenClient) -> None:
    answer = client.post(HOST, f"{SYNC}/predict", json={"inputs": [["great, I love it"], ["awful"]]}).json()
    assert [labels[0]["label"] for labels in answer] == ["positive", "negative"]
    assert all({label["label"] for label in labels} == {"positive", "negative", "neutral"} for labels in answer)
    assert all(math.isclose(sum(label["score"] for label in labels), 1.0) for labels in answer)


def test_journal_records_route_inputs_and_customer_request_id(
    client: BasetenClient, baseten_emulator: Emulator
) -> None:
    headers = {"x-baseten-customer-request-id": "run-1/batch-3"}
    client.post(HOST, f"{SYNC}/v1/embeddings", json={"input": ["a", "b", "c"]}, headers=headers)
    client.post(HOST, f"{SYNC}/rerank", json={"query": "q", "texts": ["a", "b"]})
    client.post(HOST, f"{SYNC}/predict", json={"inputs": [["a"]]})
    entries = baseten_emulator.journal.entries()
    assert [(e.route, e.inputs, e.customer_request_id) for e in entries] == [
        ("embeddings", 3, "run-1/batch-3"),
        ("rerank", 2, None),
        ("classify", 1, None),
    ]
    assert all(entry.model_ran for entry in entries)


@pytest.mark.parametrize("route", ["embeddings", "sync"])
def test_faults_apply_to_bei_routes(client: BasetenClient, baseten_emulator: Emulator, route: str) -> None:
    baseten_emulator.faults.set(FaultPlan(route=route, sequence=[429, 503]))
    statuses = [client.post(HOST, f"{SYNC}/v1/embeddings", json={"input": ["a"]}).status_code for _ in range(3)]
    assert statuses == [429, 503, 200]
    assert [entry.model_ran for entry in baseten_emulator.journal] == [False, False, True]


def test_the_world_file_form_round_trips() -> None:
    bei = behaviour_from_spec({"kind": "bei", "dimensions": 64, "per_input_ms": 1.0})
    assert isinstance(bei, Bei)
    assert behaviour_from_spec(bei.spec) == bei
    assert behaviour_from_spec("bei") == Bei()


@pytest.mark.baseten_emulator(world=slow_world, manual_clock=True)
def test_latency_grows_with_the_batch_and_excess_requests_queue(
    make_client: Callable[..., BasetenClient], baseten_emulator: Emulator, wait_until: Callable[..., None]
) -> None:
    results: dict[str, httpx.Response] = {}

    def send(name: str, inputs: int) -> None:
        texts = [f"text {i}" for i in range(inputs)]
        results[name] = make_client().post("model-slowbei01", f"{SYNC}/v1/embeddings", json={"input": texts})

    deployment = baseten_emulator.deployment("slowbei01")
    slots = slots_of(deployment)
    first = threading.Thread(target=send, args=("first", 10))  # 100 + 10 * 10 = 200 ms
    first.start()
    wait_until(lambda: slots.busy == 1, what="the first request to take the only slot")
    second = threading.Thread(target=send, args=("second", 2))  # 120 ms, after the first
    second.start()
    wait_until(lambda: len(slots.waiting) == 1, what="the second request to queue")
    baseten_emulator.advance(0.19)
    assert not results  # 190 ms: the first batch of 10 is still being embedded
    baseten_emulator.advance(0.02)
    first.join(5)
    assert results["first"].status_code == 200
    wait_until(lambda: slots.busy == 1 and not slots.waiting, what="the second request to start")
    baseten_emulator.advance(0.1)  # the second started at 200 ms (when the slot freed): due at 320 ms
    assert "second" not in results
    baseten_emulator.advance(0.02)
    second.join(5)
    assert results["second"].status_code == 200
    assert (slots.peak, slots.served) == (1, 2)

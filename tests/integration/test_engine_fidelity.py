"""Engine routes held to Baseten's own clients: ``baseten-performance-client`` and the ``openai`` SDK.

1. Wire format: the performance client and the hook send the same calls to a loopback recording server; their
   bodies must be equal field for field (the performance client is Baseten's reference implementation).
2. The emulator's BEI routes: the performance client (``embed``, ``rerank``, ``classify``, ``batch_post``) and the
   OpenAI SDK (``embeddings.create``) run against it as real clients and read what the hook reads.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_provider_baseten.emulator import Emulator, FaultPlan
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.baseten import BasetenHook

perf = pytest.importorskip("baseten_performance_client")
pytestmark = pytest.mark.integration

EMBED01 = Target.of(model_id="embed01")
HOST = "model-embed01.api.baseten.co"


# --- 1. the wire format, recorded ---------------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    """Records each POST (path, headers, JSON body) and answers the shape the route's client expects."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, dict[str, str], Any]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        self.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if self.path.endswith("/v1/embeddings"):
            data = [{"object": "embedding", "index": i, "embedding": [0.5, 0.25]} for i in range(len(body["input"]))]
            answer: Any = {
                "object": "list",
                "data": data,
                "model": "m",
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        elif self.path.endswith("/rerank"):
            answer = [{"index": i, "score": 1.0 / (i + 1)} for i in range(len(body["texts"]))]
        elif self.path.endswith("/predict"):
            answer = [[{"label": "positive", "score": 0.9}] for _ in body["inputs"]]
        else:
            answer = {"echo": body}
        raw = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[tuple[str, dict[str, str], Any]]]]:
    """A loopback recording server; ``baseten_rec`` is a connection whose gateway is that server."""
    seen: list[tuple[str, dict[str, str], Any]] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("AIRFLOW_CONN_BASETEN_REC", json.dumps({"conn_type": "baseten", "password": "k", "host": url}))
    try:
        yield url, seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_hook_sends_what_the_performance_client_sends(
    recorder: tuple[str, list[tuple[str, dict[str, str], Any]]],
) -> None:
    url, seen = recorder
    target = Target.of(model_id="abc123", environment="staging")
    client = perf.PerformanceClient(base_url=f"{url}/environments/staging/sync", api_key="k")
    one_request = perf.RequestProcessingPreference(batch_size=16)
    hook = BasetenHook("baseten_rec", customer_request_id="")
    texts = ["a b", "c", "d e f"]
    calls = [
        (
            lambda: client.embed(texts, model="m", dimensions=2, encoding_format="float", preference=one_request),
            lambda: hook.embed(target, texts, model="m", dimensions=2, encoding_format="float", request_id="r"),
        ),
        (lambda: client.embed(texts, model="model", preference=one_request), lambda: hook.embed(target, texts)),
        (
            lambda: client.rerank("q", texts, return_text=True, truncate=True, preference=one_request),
            lambda: hook.rerank(target, "q", texts, return_text=True, truncate=True),
        ),
        (lambda: client.rerank("q", texts, preference=one_request), lambda: hook.rerank(target, "q", texts)),
        (
            lambda: client.classify(texts, raw_scores=True, preference=one_request),
            lambda: hook.classify(target, texts, raw_scores=True),
        ),
        (lambda: client.classify(texts, preference=one_request), lambda: hook.classify(target, texts)),
        (
            lambda: client.batch_post("/v1/tokenize", [{"text": "hi"}]),
            lambda: hook.sync_request(target, "v1/tokenize", {"text": "hi"}),
        ),
    ]
    for theirs, ours in calls:
        theirs()
        ours()
    assert len(seen) == 2 * len(calls)
    for (their_path, their_headers, their_body), (our_path, our_headers, our_body) in zip(
        seen[::2], seen[1::2], strict=True
    ):
        assert our_path == their_path
        assert our_body == their_body
        assert our_headers["content-type"] == their_headers["content-type"] == "application/json"
        assert our_headers["host"] == "model-abc123.api.baseten.co"  # the gateway gets the Baseten host
    assert seen[0][1]["x-baseten-customer-request-id"].startswith("perfclient-")
    assert seen[1][1]["x-baseten-customer-request-id"] == "r"


# --- 2. Baseten's clients against the emulator's BEI routes ------------------------------------------------------


def _perf_client(emulator: Emulator) -> Any:
    return perf.PerformanceClient(base_url=f"{emulator.url}/production/sync", api_key=emulator.api_key)


def _preference(**options: Any) -> Any:
    # The emulator routes on the Host header, as Baseten's edge does; the client's own Host is the loopback one.
    return perf.RequestProcessingPreference(extra_headers={"host": HOST}, initial_backoff_ms=50, **options)


def test_performance_client_embed_reads_what_the_hook_reads(baseten_emulator: Emulator) -> None:
    texts = [f"document number {i}" for i in range(50)]
    response = _perf_client(baseten_emulator).embed(texts, model="m", dimensions=32, preference=_preference())
    ours = BasetenHook().embed(EMBED01, texts, dimensions=32)
    assert [item.index for item in response.data] == list(range(50))
    assert [list(item.embedding) for item in response.data] == [item.embedding for item in ours.data]
    assert response.usage.prompt_tokens == ours.usage.prompt_tokens == 150
    theirs = [entry for entry in baseten_emulator.journal if (entry.customer_request_id or "").startswith("perf")]
    assert sorted(entry.inputs for entry in theirs) == [2] + [8] * 6  # the client packs 8 per request by default
    assert len({entry.customer_request_id for entry in theirs}) == 7


def test_performance_client_rerank_classify_and_batch_post(baseten_emulator: Emulator) -> None:
    client = _perf_client(baseten_emulator)
    texts = ["the cat sat", "a dog barked", "cat and dog"]
    reranked = client.rerank("cat dog", texts, return_text=True, preference=_preference())
    assert {(r.index, r.score) for r in reranked.data} == {
        (r.index, r.score) for r in BasetenHook().rerank(EMBED01, "cat dog", texts)
    }
    assert {r.text for r in reranked.data} == set(texts)
    classified = client.classify(["great stuff", "awful"], preference=_preference())
    assert [group[0].label for group in classified.data] == ["positive", "negative"]
    posted = client.batch_post(
        "/v1/embeddings",
        [{"input": ["a"], "model": "m"}, {"input": ["b", "c"], "model": "m"}],
        preference=_preference(),
    )
    assert [len(answer["data"]) for answer in posted.data] == [1, 2]


def test_performance_client_retries_injected_faults_and_sends_every_text_once(baseten_emulator: Emulator) -> None:
    baseten_emulator.faults.set(FaultPlan(route="embeddings", sequence=[429, 503, 503], retry_after=0))
    texts = [f"t{i}" for i in range(40)]
    response = _perf_client(baseten_emulator).embed(texts, model="m", preference=_preference(batch_size=4))
    assert len(response.data) == 40
    served = baseten_emulator.journal.filter(route="embeddings", status=200)
    assert sum(entry.inputs for entry in served) == 40
    assert baseten_emulator.journal.count(route="embeddings") == 13  # 10 requests, 3 of them refused once


def test_openai_sdk_embeddings_against_the_emulator(baseten_emulator: Emulator) -> None:
    pytest.importorskip("openai")
    from openai import OpenAI

    texts = ["hello world", "good day"]
    plain = OpenAI(base_url=f"{baseten_emulator.url}/production/sync/v1", api_key=baseten_emulator.api_key)
    answer = plain.embeddings.create(input=texts, model="m", extra_headers={"Host": HOST})
    ours = BasetenHook().embed(EMBED01, texts)
    assert [item.embedding for item in answer.data] == [item.embedding for item in ours.data]  # base64 by default
    assert answer.usage.prompt_tokens == 4
    from_hook = BasetenHook().get_openai_client(EMBED01)
    floats = from_hook.embeddings.create(input="hello world", model="m", dimensions=16, encoding_format="float")
    assert floats.data[0].embedding == BasetenHook().embed(EMBED01, ["hello world"], dimensions=16).data[0].embedding

"""Engine routes (embed, rerank, classify, sync_request): bodies, checks of the answer, retries and the retry budget."""

from __future__ import annotations

import base64
import json
import struct
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import respx

from airflow_provider_baseten.exceptions import BasetenConfigError, BasetenConnectionError, BasetenModelError
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.baseten import BasetenHook, close_shared_async_clients
from airflow_provider_baseten.hooks.retry_budget import RetryBudget

MODEL = Target.of(model_id="abc123")
BASE = "https://model-abc123.api.baseten.co/production/sync"
EMBEDDINGS = f"{BASE}/v1/embeddings"


def vectors(n: int, dims: int = 3, *, order: list[int] | None = None) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": [float(i)] * dims} for i in (order or range(n))]
    return {"object": "list", "data": data, "model": "m", "usage": {"prompt_tokens": n, "total_tokens": n}}


def sent(router: respx.MockRouter, call: int = -1) -> Any:
    return json.loads(router.calls[call].request.content)


# --- embed ------------------------------------------------------------------------------------------------------


def test_embed_sends_the_openai_body_and_returns_vectors_in_input_order(
    hook: BasetenHook, mock_http: respx.MockRouter
) -> None:
    route = mock_http.post(EMBEDDINGS).respond(200, json=vectors(3, order=[2, 0, 1]))
    response = hook.embed(MODEL, ["a", "b c", "d"], dimensions=3, encoding_format="float")
    assert sent(mock_http) == {
        "input": ["a", "b c", "d"],
        "model": "model",
        "encoding_format": "float",
        "dimensions": 3,
    }
    assert [item.index for item in response.data] == [0, 1, 2]
    assert response.data[2].embedding == [2.0, 2.0, 2.0]
    assert (response.usage.prompt_tokens, response.usage.total_tokens, response.dimensions) == (3, 3, 3)
    assert route.call_count == 1


def test_embed_omits_unset_options(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    mock_http.post(EMBEDDINGS).respond(200, json=vectors(1))
    hook.embed(MODEL, ["a"], model="bge")
    assert sent(mock_http) == {"input": ["a"], "model": "bge"}


def test_embed_decodes_base64_float32(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    packed = base64.b64encode(struct.pack("<3f", 0.5, -1.0, 0.25)).decode()
    answer = {"data": [{"index": 0, "embedding": packed}], "usage": {"prompt_tokens": 1, "total_tokens": 1}}
    mock_http.post(EMBEDDINGS).respond(200, json=answer)
    response = hook.embed(MODEL, ["a"], encoding_format="base64")
    assert response.data[0].embedding == [0.5, -1.0, 0.25]


@pytest.mark.parametrize(
    ("texts", "answer", "match"),
    [
        (3, vectors(2), "sent 3 texts but got 2 vectors"),
        (3, vectors(3, order=[0, 1, 1]), "not 0..2 exactly once"),
        (
            3,
            {**vectors(2), "data": [*vectors(2)["data"], {"index": 2, "embedding": [1.0]}]},
            r"lengths \[1, 3\] differ",
        ),
        (1, {"data": [{"index": 0, "embedding": "!!"}]}, "not valid base64"),
        (1, {"data": [{"index": 0, "embedding": "AAA="}]}, "not a float32 vector"),
        (1, {"object": "list"}, "no 'data' array"),
        (1, [1, 2], "no 'data' array"),
        (1, {"data": [{"index": "x", "embedding": [1.0]}]}, r"not a valid EmbeddingsResponse \(check: data.0.index\)"),
    ],
)
def test_embed_rejects_answers_that_do_not_match_the_inputs(
    hook: BasetenHook, mock_http: respx.MockRouter, texts: int, answer: Any, match: str
) -> None:
    mock_http.post(EMBEDDINGS).respond(200, json=answer)
    with pytest.raises(BasetenModelError, match=match):
        hook.embed(MODEL, ["t"] * texts)


def test_embed_checks_the_dimensions_asked_for(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    mock_http.post(EMBEDDINGS).respond(200, json=vectors(2, dims=4))
    with pytest.raises(BasetenModelError, match="from the 3 dimensions asked for"):
        hook.embed(MODEL, ["a", "b"], dimensions=3)


@pytest.mark.parametrize(
    ("texts", "kwargs", "match"),
    [
        ("one string", {}, "texts must be a list of strings, got str"),
        ([], {}, "texts is empty"),
        (["a", 3], {}, r"texts\[1\] is a int"),
        (["a"], {"dimensions": 0}, "dimensions must be a positive integer"),
        (["a"], {"dimensions": True}, "dimensions must be a positive integer"),
        (["a"], {"encoding_format": "int8"}, "encoding_format must be 'float' or 'base64'"),
        (["a"], {"request_id": "bad\nid"}, "request_id must be 1-256 visible ASCII"),
    ],
)
def test_embed_validates_before_sending(
    hook: BasetenHook, mock_http: respx.MockRouter, texts: Any, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(BasetenConfigError, match=match):
        hook.embed(MODEL, texts, **kwargs)
    assert not mock_http.calls


@pytest.mark.parametrize(
    ("target", "url"),
    [
        (Target.of(model_id="abc123", regional=True), "https://model-abc123-production.api.baseten.co/sync/v1/embeddings"),
        (Target.of(model_id="abc123", deployment_id="dep1"), "https://model-abc123.api.baseten.co/deployment/dep1/sync/v1/embeddings"),
        (Target.of(model_id="abc123", environment="staging"), "https://model-abc123.api.baseten.co/environments/staging/sync/v1/embeddings"),
    ],
)  # fmt: skip
def test_embed_addresses_every_kind_of_target(
    hook: BasetenHook, mock_http: respx.MockRouter, target: Target, url: str
) -> None:
    mock_http.post(url).respond(200, json=vectors(1))
    hook.embed(target, ["a"])
    assert str(mock_http.calls.last.request.url) == url


# --- rerank and classify ----------------------------------------------------------------------------------------


def test_rerank_body_matches_the_performance_client_and_results_are_best_first(
    hook: BasetenHook, mock_http: respx.MockRouter
) -> None:
    answer = [{"index": 0, "score": 0.1}, {"index": 1, "score": 0.9, "text": "y z"}]
    mock_http.post(f"{BASE}/rerank").respond(200, json=answer)
    results = hook.rerank(MODEL, "q", ["x", "y z"], return_text=True)
    assert sent(mock_http) == {
        "query": "q",
        "raw_scores": False,
        "return_text": True,
        "texts": ["x", "y z"],
        "truncate": False,
        "truncation_direction": "Right",
    }
    assert [(r.index, r.score, r.text) for r in results] == [(1, 0.9, "y z"), (0, 0.1, None)]


def test_rerank_sends_model_and_truncation_when_given(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    mock_http.post(f"{BASE}/rerank").respond(200, json={"data": [{"index": 0, "score": 1.0}]})
    hook.rerank(MODEL, "q", ["x"], truncate=True, truncation_direction="Left", raw_scores=True, model="rr")
    body = sent(mock_http)
    assert (body["truncate"], body["truncation_direction"], body["raw_scores"], body["model"]) == (
        True,
        "Left",
        True,
        "rr",
    )


@pytest.mark.parametrize("answer", [[{"index": 2, "score": 1.0}], [{"index": 0, "score": 1}, {"index": 0, "score": 2}]])
def test_rerank_rejects_indices_out_of_range_or_repeated(
    hook: BasetenHook, mock_http: respx.MockRouter, answer: Any
) -> None:
    mock_http.post(f"{BASE}/rerank").respond(200, json=answer)
    with pytest.raises(BasetenModelError, match="indices"):
        hook.rerank(MODEL, "q", ["x", "y"])


def test_rerank_validates_query_and_direction(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    with pytest.raises(BasetenConfigError, match="query must be a string"):
        hook.rerank(MODEL, 3, ["x"])  # type: ignore[arg-type]
    with pytest.raises(BasetenConfigError, match="truncation_direction"):
        hook.rerank(MODEL, "q", ["x"], truncation_direction="Up")  # type: ignore[arg-type]
    assert not mock_http.calls


def test_classify_body_and_labels(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    answer = [[{"label": "POS", "score": 0.9}, {"label": "NEG", "score": 0.1}], [{"label": "NEG", "score": 0.7}]]
    mock_http.post(f"{BASE}/predict").respond(200, json=answer)
    labels = hook.classify(MODEL, ["good", "bad"])
    assert sent(mock_http) == {
        "inputs": [["good"], ["bad"]],
        "raw_scores": False,
        "truncate": False,
        "truncation_direction": "Right",
    }
    assert [[(label.label, label.score) for label in group] for group in labels] == [
        [("POS", 0.9), ("NEG", 0.1)],
        [("NEG", 0.7)],
    ]


@pytest.mark.parametrize(("answer", "match"), [([[]], "sent 2 inputs but got 1"), ({"x": 1}, "one list of labels")])
def test_classify_rejects_answers_that_do_not_match(
    hook: BasetenHook, mock_http: respx.MockRouter, answer: Any, match: str
) -> None:
    mock_http.post(f"{BASE}/predict").respond(200, json=answer)
    with pytest.raises(BasetenModelError, match=match):
        hook.classify(MODEL, ["a", "b"])


# --- sync_request -----------------------------------------------------------------------------------------------


def test_sync_request_posts_json_and_returns_json(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    mock_http.post(f"{BASE}/v1/tokenize").respond(200, json={"tokens": [1, 2]})
    assert hook.sync_request(MODEL, "v1/tokenize", {"text": "hi"}) == {"tokens": [1, 2]}
    assert sent(mock_http) == {"text": "hi"}


@pytest.mark.parametrize("route", ["/v1/embeddings", "", "../predict", "v1/x?y=1", "v1/x#f", "v1//x", "v1/\u00e9"])
def test_sync_request_rejects_routes_that_are_not_plain_relative_paths(
    hook: BasetenHook, mock_http: respx.MockRouter, route: str
) -> None:
    with pytest.raises(BasetenConfigError, match="route"):
        hook.sync_request(MODEL, route, {})
    assert not mock_http.calls


def test_sync_request_is_for_models_only(hook: BasetenHook) -> None:
    with pytest.raises(BasetenConfigError, match="models only"):
        hook.sync_request(Target.of(chain_id="abc123"), "v1/x", {})


def test_sync_request_rejects_a_body_that_is_not_json(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    mock_http.post(f"{BASE}/v1/x").respond(200, text="<html>")
    with pytest.raises(BasetenModelError, match="not JSON"):
        hook.sync_request(MODEL, "v1/x", {})


# --- request ids ------------------------------------------------------------------------------------------------


def test_request_id_is_sent_and_wins_over_the_hooks_id(
    conn: None, make_hook: Callable[..., BasetenHook], mock_http: respx.MockRouter
) -> None:
    mock_http.post(EMBEDDINGS).respond(200, json=vectors(1))
    hook = make_hook(customer_request_id="dag/task/run/-1/1")
    hook.embed(MODEL, ["a"], request_id="dag/task/run/-1/1/batch-7")
    hook.embed(MODEL, ["a"])
    headers = [call.request.headers.get("x-baseten-customer-request-id") for call in mock_http.calls]
    assert headers == ["dag/task/run/-1/1/batch-7", "dag/task/run/-1/1"]


# --- retries and the retry budget --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_engine_routes_retry_transient_answers(
    hook: BasetenHook, mock_http: respx.MockRouter, sleeps: list[float], status: int
) -> None:
    route = mock_http.post(EMBEDDINGS)
    route.side_effect = [httpx.Response(status, json={"error": "x"}), httpx.Response(200, json=vectors(1))]
    assert hook.embed(MODEL, ["a"]).data[0].index == 0
    assert route.call_count == 2
    assert len(sleeps) == 1


def test_engine_routes_retry_read_timeouts(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    route = mock_http.post(f"{BASE}/rerank")
    route.side_effect = [httpx.ReadTimeout("slow"), httpx.Response(200, json=[{"index": 0, "score": 1.0}])]
    assert hook.rerank(MODEL, "q", ["x"])[0].score == 1.0
    assert route.call_count == 2


def test_client_errors_are_not_retried(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    route = mock_http.post(EMBEDDINGS).respond(400, json={"error": "input too long"})
    with pytest.raises(BasetenModelError, match="input too long"):
        hook.embed(MODEL, ["a"])
    assert route.call_count == 1


def test_retry_budget_stops_retries_across_calls(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    route = mock_http.post(EMBEDDINGS)
    route.side_effect = [
        httpx.Response(503, json={"error": "busy"}),
        httpx.Response(200, json=vectors(1)),
        httpx.Response(503, json={"error": "busy"}),
    ]
    budget = RetryBudget(fraction=0.0, minimum=1)
    hook.embed(MODEL, ["a"], retry_budget=budget)  # spends the one retry
    with pytest.raises(BasetenModelError, match="503"):
        hook.embed(MODEL, ["a"], retry_budget=budget)
    assert route.call_count == 3
    assert (budget.requests, budget.retries, budget.refused) == (2, 1, 1)


def test_retry_budget_refuses_timeouts_once_spent(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    route = mock_http.post(EMBEDDINGS)
    route.side_effect = httpx.ReadTimeout("slow")
    with pytest.raises(BasetenConnectionError, match="1 attempt"):
        hook.embed(MODEL, ["a"], retry_budget=RetryBudget(fraction=0.0, minimum=0))
    assert route.call_count == 1


def test_rate_limit_retries_do_not_spend_the_budget(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    route = mock_http.post(EMBEDDINGS)
    route.side_effect = [httpx.Response(429, json={"error": "slow down"})] * 2 + [httpx.Response(200, json=vectors(1))]
    budget = RetryBudget(fraction=0.0, minimum=0)
    hook.embed(MODEL, ["a"], retry_budget=budget)
    assert (route.call_count, budget.retries) == (3, 0)


def test_retry_budget_allowance_grows_with_requests() -> None:
    budget = RetryBudget(fraction=0.05, minimum=2)
    for _ in range(100):
        budget.record_request()
    assert budget.allowance == 5
    assert [budget.try_spend() for _ in range(6)] == [True] * 5 + [False]
    assert "retries=5/5" in repr(budget)
    with pytest.raises(ValueError, match="fraction"):
        RetryBudget(fraction=1.5)
    with pytest.raises(ValueError, match="minimum"):
        RetryBudget(minimum=-1)


@pytest.fixture
async def closing_async_clients() -> AsyncIterator[None]:
    yield
    await close_shared_async_clients()


# --- async twins ------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("closing_async_clients")
async def test_async_twins_send_what_the_sync_calls_send(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    mock_http.post(EMBEDDINGS).respond(200, json=vectors(2))
    mock_http.post(f"{BASE}/rerank").respond(200, json=[{"index": 0, "score": 0.5}])
    mock_http.post(f"{BASE}/predict").respond(200, json=[[{"label": "A", "score": 1.0}]])
    mock_http.post(f"{BASE}/v1/x").respond(200, json={"ok": True})
    budget = RetryBudget()
    embedded = await hook.aembed(MODEL, ["a", "b"], dimensions=3, request_id="r-1", retry_budget=budget)
    assert [item.index for item in embedded.data] == [0, 1]
    assert (await hook.arerank(MODEL, "q", ["x"]))[0].score == 0.5
    assert (await hook.aclassify(MODEL, ["x"]))[0][0].label == "A"
    assert await hook.async_sync_request(MODEL, "v1/x", {"a": 1}) == {"ok": True}
    assert sent(mock_http, 0) == {"input": ["a", "b"], "model": "model", "dimensions": 3}
    assert mock_http.calls[0].request.headers["x-baseten-customer-request-id"] == "r-1"
    assert sent(mock_http, 1)["texts"] == ["x"]
    assert sent(mock_http, 2)["inputs"] == [["x"]]
    assert budget.requests == 1


@pytest.mark.usefixtures("closing_async_clients")
async def test_async_twins_retry_within_the_budget(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    route = mock_http.post(EMBEDDINGS)
    route.side_effect = [httpx.Response(503, json={"error": "busy"})] * 2
    with pytest.raises(BasetenModelError, match="503"):
        await hook.aembed(MODEL, ["a"], retry_budget=RetryBudget(fraction=0.0, minimum=1))
    assert route.call_count == 2


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda hook: hook.embed(MODEL, ["a"], dimension=3), r"embed: unknown option\(s\) dimension"),
        (lambda hook: hook.rerank(MODEL, "q", ["a"], returntext=True), r"rerank: unknown option\(s\) returntext"),
        (lambda hook: hook.classify(MODEL, ["a"], return_text=True), r"classify: unknown option\(s\) return_text"),
    ],
)
def test_misspelt_options_fail_instead_of_being_ignored(
    hook: BasetenHook, mock_http: respx.MockRouter, call: Callable[[BasetenHook], Any], match: str
) -> None:
    with pytest.raises(BasetenConfigError, match=match):
        call(hook)
    assert not mock_http.calls


def test_answers_parse_the_same_without_msgspec(
    hook: BasetenHook, mock_http: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_baseten.hooks import engine

    mock_http.post(EMBEDDINGS).respond(200, json=vectors(2))
    fast = hook.embed(MODEL, ["a", "b"])
    engine._json_decoder.cache_clear()
    monkeypatch.setitem(sys.modules, "msgspec", None)  # not installed: json.loads
    try:
        assert engine._json_decoder() is json.loads
        assert hook.embed(MODEL, ["a", "b"]) == fast
    finally:
        engine._json_decoder.cache_clear()

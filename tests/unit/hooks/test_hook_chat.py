"""Chat completions: request bodies, SSE streaming and the OpenAI SDK clients built from the connection."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
import respx
from hook_testing import API_KEY

from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.baseten import BasetenHook, iter_sse_chunks

CHAT = {"model": "deepseek-ai/DeepSeek-V3.1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def test_chat_completion_body_and_result(hook: BasetenHook, baseten_api: respx.MockRouter) -> None:
    completion = hook.chat_completion({**CHAT, "stream": True, "logprobs": True})
    assert completion.choices[0].message.content == "hi"
    assert completion.usage is not None
    assert completion.usage.total_tokens == 2
    sent = json.loads(baseten_api.calls.last.request.content)
    assert sent == {**CHAT, "logprobs": True}  # stream forced off; unknown fields passed through


def test_stream_chat_completion(hook: BasetenHook, baseten_api: respx.MockRouter) -> None:
    chunks = list(hook.stream_chat_completion(CHAT))
    assert [chunk["id"] for chunk in chunks] == ["c", "c"]
    assert chunks[-1]["usage"] == {"total_tokens": 2}
    sent = json.loads(baseten_api.calls.last.request.content)
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


def test_stream_keeps_callers_stream_options(hook: BasetenHook, baseten_api: respx.MockRouter) -> None:
    list(hook.stream_chat_completion({**CHAT, "stream_options": {"include_usage": False}}))
    assert json.loads(baseten_api.calls.last.request.content)["stream_options"] == {"include_usage": False}


def test_stream_error_is_typed(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    from airflow_provider_baseten.exceptions import BasetenModelAPINotEnabledError

    mock_http.post("https://inference.baseten.co/v1/chat/completions").respond(404, json={"error": "unknown slug"})
    with pytest.raises(BasetenModelAPINotEnabledError, match="unknown slug"):
        list(hook.stream_chat_completion(CHAT))


def test_iter_sse_chunks_stops_at_done() -> None:
    lines = ["", ": comment", 'data: {"a": 1}', "event: x", "data:", "data: [DONE]", 'data: {"b": 2}']
    assert list(iter_sse_chunks(iter(lines))) == [{"a": 1}]


@pytest.mark.parametrize(
    ("host", "target", "base_url", "host_header"),
    [
        (None, None, "https://inference.baseten.co/v1/", None),
        (None, Target.of(model_id="abc123"), "https://model-abc123.api.baseten.co/production/sync/v1/", None),
        ("127.0.0.1:8765", None, "http://127.0.0.1:8765/v1/", "inference.baseten.co"),
        (
            "127.0.0.1:8765",
            Target.of(model_id="abc123", environment="staging"),
            "http://127.0.0.1:8765/environments/staging/sync/v1/",
            "model-abc123.api.baseten.co",
        ),
    ],
)
def test_openai_client(
    set_conn: Callable[..., None],
    make_hook: Callable[..., BasetenHook],
    host: str | None,
    target: Target | None,
    base_url: str,
    host_header: str | None,
) -> None:
    set_conn(host=host)
    client = make_hook().get_openai_client(target)
    assert str(client.base_url) == base_url
    assert client.api_key == API_KEY
    assert client.max_retries == 0  # the SDK would retry a billed POST after a read timeout
    assert client.default_headers.get("Host") == host_header
    assert client.timeout == httpx.Timeout(1230.0, connect=10.0)


def test_async_openai_client(conn: None, make_hook: Callable[..., BasetenHook]) -> None:
    client = make_hook().get_async_openai_client()
    assert str(client.base_url) == "https://inference.baseten.co/v1/"
    assert client.max_retries == 0

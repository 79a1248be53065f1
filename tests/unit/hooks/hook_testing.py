"""Constants and helpers shared by the hook-layer tests (a uniquely named module: tests have no packages)."""

from __future__ import annotations

import json
from typing import Any

import httpx

#: The test API key; every masking test checks that this exact string never shows up.
API_KEY = "sk7Hq2.secretpart9Zx"


def conn_json(**fields: Any) -> str:
    """A JSON connection for ``AIRFLOW_CONN_*``; ``extra`` may be a dict or a raw string."""
    conn: dict[str, Any] = {"conn_type": "baseten", "password": API_KEY}
    conn.update(fields)
    return json.dumps(conn)


DEPLOYMENT = {"id": "dep42", "name": "v1", "model_id": "abc123", "status": "ACTIVE", "active_replica_count": 1}
ASYNC_STATE = {
    "request_id": "req1",
    "model_id": "abc123",
    "deployment_id": "dep42",
    "status": "QUEUED",
    "webhook_status": "NO_WEBHOOK_PROVIDED",
    "created_at": "2026-01-01T00:00:00Z",
    "status_at": "2026-01-01T00:00:00Z",
    "errors": [],
}
COMPLETION = {
    "id": "cmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
SSE = (
    'data: {"id":"c","choices":[{"index":0,"delta":{"content":"h"}}]}\n\n'
    ": keep-alive\n\n"
    'data: {"id":"c","choices":[],"usage":{"total_tokens":2}}\n\n'
    "data: [DONE]\n\n"
)


def fake_baseten(request: httpx.Request) -> httpx.Response:
    """A plausible 2xx answer for any endpoint the hook calls, chosen by method and path (for URL tests)."""
    path, method = request.url.path, request.method
    headers = {"X-BASETEN-REQUEST-ID": "bt-req-1"}
    if path.endswith(("/async_predict", "/async_run_remote")):
        return httpx.Response(201, json={"request_id": "req1"}, headers=headers)
    if "/async_request/" in path:
        if method == "DELETE":
            return httpx.Response(200, json={"request_id": "req1", "canceled": True, "message": "ok"})
        return httpx.Response(200, json=ASYNC_STATE)
    if path.endswith("/async_queue_status"):
        body = {"model_id": "abc123", "deployment_id": "dep42", "num_queued_requests": 2, "num_in_progress_requests": 1}
        return httpx.Response(200, json=body)
    if path.endswith("/wake"):
        return httpx.Response(202)
    if path.endswith("/activate"):
        return httpx.Response(200, json={"success": True})
    if path == "/v1/users/me":
        return httpx.Response(200, json={"user_id": "u1", "email": "ada@example.com"})
    if path == "/v1/models" and request.headers.get("host", request.url.host) == "inference.baseten.co":
        return httpx.Response(200, json={"object": "list", "data": [{"id": "deepseek-ai/DeepSeek-V3.1"}]})
    if path == "/v1/models":
        return httpx.Response(200, json={"models": [{"id": "abc123"}]})
    if path.endswith("/deployments"):
        return httpx.Response(200, json={"deployments": [DEPLOYMENT]})
    if "/environments/" in path and path.startswith("/v1/"):
        return httpx.Response(200, json={"name": path.rsplit("/", 1)[-1], "current_deployment": DEPLOYMENT})
    if path.startswith("/v1/models/") and "/deployments/" in path:
        return httpx.Response(200, json=DEPLOYMENT)
    if path.startswith("/v1/models/"):
        return httpx.Response(200, json={"id": path.rsplit("/", 1)[-1], "name": "m"})
    if path.endswith("/chat/completions"):
        if json.loads(request.content).get("stream"):
            return httpx.Response(200, text=SSE, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=COMPLETION, headers=headers)
    if path.endswith(("/predict", "/run_remote")):
        return httpx.Response(200, json={"echo": json.loads(request.content or b"null")}, headers=headers)
    return httpx.Response(599, text=f"fake_baseten has no answer for {method} {path}")

"""Async submits: validated and size-checked (256 KiB, measured on the exact bytes sent) before any request."""

from __future__ import annotations

from typing import Any

import pytest
import respx

from airflow_provider_baseten.exceptions import BasetenConfigError, BasetenPayloadTooLargeError
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.baseten import BasetenHook, encode_json
from airflow_provider_baseten.hooks.models import ASYNC_PAYLOAD_LIMIT_BYTES, AsyncPredictRequest

MODEL = Target.of(model_id="abc123")
CHAIN = Target.of(chain_id="abc123")


def body_of(blob: str) -> dict[str, Any]:
    return {"model_input": {"blob": blob}}


def padded_to(size: int) -> dict[str, Any]:
    """An async request whose JSON body (as sent, with defaults) is exactly ``size`` bytes."""
    overhead = len(encode_json(AsyncPredictRequest.model_validate(body_of("")).model_dump(exclude_none=True)))
    return body_of("x" * (size - overhead))


def test_limit_is_256_kib() -> None:
    assert ASYNC_PAYLOAD_LIMIT_BYTES == 256 * 1024


def test_full_request_is_sent_as_given(hook: BasetenHook, baseten_api: respx.MockRouter) -> None:
    request = {
        "model_input": {"text": "hi"},
        "webhook_endpoint": "https://hooks.example.com/baseten",
        "priority": 1,
        "max_time_in_queue_seconds": 3600,
        "inference_retry_config": {"max_attempts": 4, "initial_delay_ms": 500, "max_delay_ms": 8000},
    }
    response = hook.async_predict(MODEL, request)
    assert response.request_id == "req1"
    assert baseten_api.calls.last.request.content == encode_json(request)


def test_model_object_is_accepted(hook: BasetenHook, baseten_api: respx.MockRouter) -> None:
    hook.async_predict(MODEL, AsyncPredictRequest(model_input={"text": "hi"}, priority=2))
    assert baseten_api.calls.last.request.content == encode_json(
        {"model_input": {"text": "hi"}, "priority": 2, "max_time_in_queue_seconds": 600}
    )


def test_body_at_the_limit_is_sent(hook: BasetenHook, baseten_api: respx.MockRouter) -> None:
    hook.async_predict(MODEL, padded_to(ASYNC_PAYLOAD_LIMIT_BYTES))
    assert len(baseten_api.calls.last.request.content) == ASYNC_PAYLOAD_LIMIT_BYTES


@pytest.mark.parametrize("target", [MODEL, CHAIN], ids=["model", "chain"])
def test_body_over_the_limit_is_refused_before_sending(
    hook: BasetenHook, mock_http: respx.MockRouter, target: Target
) -> None:
    with pytest.raises(BasetenPayloadTooLargeError, match="nothing was sent") as info:
        hook.async_predict(target, padded_to(ASYNC_PAYLOAD_LIMIT_BYTES + 1))
    assert info.value.status_code == 413
    assert "pass a URL" in str(info.value)
    assert mock_http.calls.call_count == 0


def test_non_ascii_is_measured_as_utf8(hook: BasetenHook, baseten_api: respx.MockRouter) -> None:
    """200 KB of UTF-8 (but 600 KB as \\u escapes) fits: the check measures what is actually sent."""
    hook.async_predict(MODEL, body_of("é" * 100_000))
    assert len(baseten_api.calls.last.request.content) < ASYNC_PAYLOAD_LIMIT_BYTES


@pytest.mark.parametrize(
    "request_body",
    [
        {"model_input": {}, "priority": 5},
        {"model_input": {}, "webhook_endpoint": "http://hooks.example.com/x"},
        {"model_input": {}, "max_time_in_queue_seconds": 5},
        {"model_input": {}, "unknown": 1},
        {"model_input": "text"},
    ],
)
def test_invalid_request_is_refused_before_sending(
    hook: BasetenHook, mock_http: respx.MockRouter, request_body: dict[str, Any]
) -> None:
    with pytest.raises(BasetenConfigError, match="nothing was sent"):
        hook.async_predict(MODEL, request_body)
    assert mock_http.calls.call_count == 0


def test_submit_uses_a_short_read_timeout(hook: BasetenHook, baseten_api: respx.MockRouter) -> None:
    hook.async_predict(MODEL, {"model_input": {}})
    assert baseten_api.calls.last.request.extensions["timeout"]["read"] == 60.0


def test_any_2xx_is_accepted(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    mock_http.post("https://model-abc123.api.baseten.co/production/async_predict").respond(
        202, json={"request_id": "r9"}
    )
    assert hook.async_predict(MODEL, {"model_input": {}}).request_id == "r9"

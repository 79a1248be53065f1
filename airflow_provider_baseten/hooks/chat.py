"""Chat completions (Model APIs or a deployed model's OpenAI-compatible route), SSE streaming and OpenAI clients.

A mixin of :class:`~airflow_provider_baseten.hooks.baseten.BasetenHook`: it uses the hook's settings, retries and
error mapping, and adds nothing to the hook's import cost (the ``openai`` SDK is imported on first use).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx

from airflow_provider_baseten.hooks.addressing import Target, model_apis_endpoint
from airflow_provider_baseten.hooks.calls import _Call, _validated
from airflow_provider_baseten.hooks.connection import DEFAULT_SHORT_TIMEOUT
from airflow_provider_baseten.hooks.models import ChatCompletion, ModelAPIModel

if TYPE_CHECKING:
    from airflow_provider_baseten.hooks.calls import ModelT
    from airflow_provider_baseten.hooks.connection import ClientSettings

__all__ = ["ChatMixin", "iter_sse_chunks"]


class ChatMixin:
    """Chat calls of :class:`~airflow_provider_baseten.hooks.baseten.BasetenHook`."""

    timeout: float | None

    if TYPE_CHECKING:

        @property
        def settings(self) -> ClientSettings: ...

        def _send(self, call: _Call, *, stream: bool = False) -> httpx.Response: ...

        def _parse(self, model: type[ModelT], response: httpx.Response, call: _Call) -> ModelT: ...

        def _json_object(self, response: httpx.Response, what: str) -> dict[str, Any]: ...

    # --- chat completions -------------------------------------------------------------------------------------

    @staticmethod
    def _chat_call(request: dict[str, Any], target: Target | None, timeout: float | None) -> _Call:
        endpoint = target.sync_endpoint("v1/chat/completions") if target else model_apis_endpoint("chat", "completions")
        where = target.describe() if target else f"Model APIs ({request.get('model')})"
        return _Call("POST", endpoint, f"chat completion on {where}", False, request, timeout)

    @staticmethod
    def _chat_body(request: dict[str, Any], stream: bool) -> dict[str, Any]:
        from airflow_provider_baseten.hooks.models import ChatCompletionRequest

        body = ChatCompletionRequest.model_validate({**request, "stream": stream or None})
        payload = body.model_dump(mode="json", exclude_none=True)
        if stream:
            payload.setdefault("stream_options", {"include_usage": True})
        return payload

    def chat_completion(
        self, request: dict[str, Any], *, target: Target | None = None, timeout: float | None = None
    ) -> ChatCompletion:
        """OpenAI-compatible chat: Model APIs (``model`` slug) or a deployed model's ``/sync/v1/chat/completions``.

        Not idempotent (tokens are billed): retried only when it provably never reached the model.
        """
        call = self._chat_call(self._chat_body(request, stream=False), target, timeout)
        return self._parse(ChatCompletion, self._send(call), call)

    def stream_chat_completion(
        self, request: dict[str, Any], *, target: Target | None = None, timeout: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Stream a chat completion: yields each SSE chunk (the last carries ``usage``) until ``[DONE]``."""
        call = self._chat_call(self._chat_body(request, stream=True), target, timeout)
        response = self._send(call, stream=True)
        try:
            yield from iter_sse_chunks(response.iter_lines())
        finally:
            response.close()

    def list_model_api_models(self) -> list[ModelAPIModel]:
        response = self._send(
            _Call(
                "GET",
                model_apis_endpoint("models"),
                "list Model APIs models",
                True,
                None,
                DEFAULT_SHORT_TIMEOUT,
            )
        )
        items = self._json_object(response, "list Model APIs models").get("data") or []
        return [_validated(ModelAPIModel, item, "list Model APIs models") for item in items]

    # --- OpenAI SDK clients (optional ``openai`` extra) ---------------------------------------------------------

    def _openai_kwargs(self, target: Target | None) -> dict[str, Any]:
        settings = self.settings
        endpoint = target.sync_endpoint("v1") if target else model_apis_endpoint()
        headers = dict(settings.headers)
        if settings.gateway:
            headers["Host"] = endpoint.host
        return {
            "api_key": settings.api_key,
            "base_url": settings.base_url(endpoint.host) + endpoint.path,
            "default_headers": headers,
            "timeout": httpx.Timeout(self.timeout or settings.timeout, connect=settings.connect_timeout),
            "max_retries": 0,
        }

    def get_openai_client(self, target: Target | None = None) -> Any:
        """An ``openai.OpenAI`` client for Model APIs (or a deployed model's ``/sync/v1``), from this connection.

        The SDK's own retries are off: it would retry a chat POST after a read timeout.
        """
        from openai import OpenAI

        return OpenAI(**self._openai_kwargs(target))

    def get_async_openai_client(self, target: Target | None = None) -> Any:
        from openai import AsyncOpenAI

        return AsyncOpenAI(**self._openai_kwargs(target))


def iter_sse_chunks(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse OpenAI-style server-sent events (``data: {...}`` lines, ending with ``data: [DONE]``)."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if data:
            yield json.loads(data)

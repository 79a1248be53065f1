"""``BasetenHook``: the one place that talks HTTP to Baseten.

Every URL, header, timeout, retry and status rule of the provider lives in this package (``hooks/``); operators,
sensors and triggers only call the typed methods here. Calls go to Baseten's hosts over HTTPS, or, when the
connection has a host, to that gateway (the local emulator, a private proxy) with the intended Baseten host in the
``Host`` header, exactly as Baseten's own edge routes.

Clients: one pooled ``httpx.Client`` per hook on the worker; one ``httpx.AsyncClient`` (on aiohttp's transport,
which keeps up at 64+ concurrent requests where httpx's own async pool does not) per connection and event loop,
shared by every trigger in a triggerer process.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import ssl
import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from airflow.providers.common.compat.sdk import BaseHook
from pydantic import BaseModel

from airflow_provider_baseten.exceptions import (
    BasetenAPIError,
    BasetenAuthError,
    BasetenConfigError,
    BasetenModelAPINotEnabledError,
    BasetenModelError,
    BasetenNotFoundError,
    BasetenPayloadTooLargeError,
    BasetenRateLimitError,
    BasetenTimeoutError,
)
from airflow_provider_baseten.hooks.addressing import (
    MODEL_APIS_HOST,
    Action,
    Endpoint,
    Target,
    model_apis_endpoint,
)
from airflow_provider_baseten.hooks.connection import (
    DEFAULT_SHORT_TIMEOUT,
    ClientSettings,
    settings_from_connection,
)
from airflow_provider_baseten.hooks.management import BasetenManagementMixin
from airflow_provider_baseten.hooks.models import (
    ASYNC_PAYLOAD_LIMIT_BYTES,
    AsyncPredictRequest,
    AsyncQueueStatus,
    AsyncRequestState,
    AsyncSubmitResponse,
    CancelAsyncResponse,
    ChatCompletion,
    ModelAPIModel,
)
from airflow_provider_baseten.hooks.ratelimit import AsyncTokenBucket
from airflow_provider_baseten.hooks.retries import RetryPolicy, ambiguous_submit, is_retryable, retry_after_of

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection

__all__ = ["BasetenHook", "BasetenResult", "Target"]

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)
REQUEST_ID_HEADER = "x-baseten-request-id"
CUSTOMER_REQUEST_ID_HEADER = "x-baseten-customer-request-id"
_ERROR_BODY_LIMIT = 500


@dataclass(frozen=True)
class BasetenResult:
    """A JSON (or text) answer with the ``X-BASETEN-REQUEST-ID`` Baseten gave it."""

    data: Any
    request_id: str | None = None
    status_code: int = 200


@dataclass(frozen=True)
class _Call:
    """One logical call: what it is, where it goes, and whether sending it twice is harmless."""

    method: str
    endpoint: Endpoint
    what: str
    idempotent: bool
    json_body: Any = None
    read_timeout: float | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)


@lru_cache(maxsize=8)
def ssl_context(verify: bool | str) -> ssl.SSLContext:
    """One TLS context per ``verify`` value, shared by every client of the process.

    Loading the CA bundle costs tens of milliseconds per client otherwise, and httpx 0.28 deprecates
    ``verify=<path>``: a CA bundle path (the ``verify`` extra) becomes a context here instead.
    """
    if isinstance(verify, str):
        try:
            if Path(verify).is_dir():
                return ssl.create_default_context(capath=verify)
            return ssl.create_default_context(cafile=verify)
        except (OSError, ssl.SSLError) as err:
            raise BasetenConfigError(
                f"Connection extra 'verify' names a CA bundle that cannot be loaded ({verify}): {err}."
            ) from None
    return httpx.create_ssl_context(verify=verify)


def build_client(settings: ClientSettings, *, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """The worker's pooled client. No automatic redirects: an API call that redirects is an error."""
    return httpx.Client(
        timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
        verify=ssl_context(settings.verify),
        proxy=settings.proxy,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        transport=transport,
        follow_redirects=False,
    )


def build_async_client(
    settings: ClientSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    max_connections: int = 256,
) -> httpx.AsyncClient:
    """The triggerer's and batch operator's client, on aiohttp's transport unless one is given (tests).

    ``max_connections`` (at least 256) bounds the pool: the batch operator passes its concurrency.
    """
    size = max(256, max_connections)
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    if transport is None:
        from httpx_aiohttp import AiohttpTransport  # deferred: aiohttp is not needed at DAG-parse time

        transport = AiohttpTransport(
            verify=ssl_context(settings.verify),
            proxy=httpx.Proxy(settings.proxy) if settings.proxy else None,
            limits=limits,
        )
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
        transport=transport,
        follow_redirects=False,
    )


class _LoopResources:
    """Async clients and poll budgets of one event loop, keyed by connection settings."""

    def __init__(self) -> None:
        self.clients: dict[ClientSettings, httpx.AsyncClient] = {}
        self.buckets: dict[ClientSettings, AsyncTokenBucket] = {}
        #: Recent queue depths per deployment: many triggers waiting on one deployment share one read.
        self.queue_depths: dict[tuple[ClientSettings, Endpoint], tuple[float, AsyncQueueStatus]] = {}


_PER_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopResources] = weakref.WeakKeyDictionary()


def _loop_resources() -> _LoopResources:
    loop = asyncio.get_running_loop()
    resources = _PER_LOOP.get(loop)
    if resources is None:
        resources = _PER_LOOP[loop] = _LoopResources()
    return resources


def shared_async_client(settings: ClientSettings) -> httpx.AsyncClient:
    """The one ``AsyncClient`` for these settings in the running event loop (created on first use)."""
    resources = _loop_resources()
    client = resources.clients.get(settings)
    if client is None or client.is_closed:
        client = resources.clients[settings] = build_async_client(settings)
    return client


def shared_status_bucket(settings: ClientSettings) -> AsyncTokenBucket:
    """The status-poll budget shared by every trigger on this connection in the running event loop."""
    resources = _loop_resources()
    bucket = resources.buckets.get(settings)
    if bucket is None:
        # A fifth of a second's budget as burst: a whole second's worth, released at once after the loop was busy,
        # can land inside Baseten's own one-second window and draw 429s.
        rate = settings.status_rate_limit
        bucket = resources.buckets[settings] = AsyncTokenBucket(rate, burst=max(1.0, rate / 5))
    return bucket


async def close_shared_async_clients() -> None:
    """Close the running loop's shared clients (tests, benchmarks and the batch operator's end)."""
    resources = _PER_LOOP.pop(asyncio.get_running_loop(), None)
    if resources:
        for client in resources.clients.values():
            await client.aclose()


def encode_json(body: Any) -> bytes:
    """The exact bytes sent for a JSON body (compact UTF-8), so a size check measures what goes on the wire.

    NaN, infinities and values JSON cannot express fail here with :class:`BasetenConfigError`, before any request.
    """
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as err:
        raise BasetenConfigError(f"The request body cannot be sent as JSON: {err}.") from None


def _validated(model: type[ModelT], data: Any, what: str) -> ModelT:
    """``model.model_validate(data)``, failing as a BasetenModelError that names the bad fields (not their values)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as err:
        fields = ", ".join(sorted({".".join(map(str, error["loc"])) or "(body)" for error in err.errors()}))
        raise BasetenModelError(f"{what}: the answer is not a valid {model.__name__} (check: {fields}).") from None


def _truncate(text: str, limit: int = _ERROR_BODY_LIMIT) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _error_class(status: int, host: str) -> type[BasetenAPIError]:
    if status in (401, 403):
        return BasetenAuthError
    if status == 404:
        return BasetenModelAPINotEnabledError if host == MODEL_APIS_HOST else BasetenNotFoundError
    if status == 413:
        return BasetenPayloadTooLargeError
    if status in (429, 529):
        return BasetenRateLimitError
    if status == 504:
        return BasetenTimeoutError
    return BasetenModelError


class BasetenHook(BasetenManagementMixin, BaseHook):
    """Call Baseten: models, chains, async requests, wake and readiness, Model APIs and the management API.

    :param baseten_conn_id: the ``baseten`` connection (API key in the password; optional gateway host).
    :param timeout: read timeout in seconds for predict-like calls, overriding the connection's ``timeout``.
    :param customer_request_id: sent as ``x-baseten-customer-request-id``; by default built from the running task
        (``dag/task/run/map index/try``) when there is one.

    Retries follow :mod:`airflow_provider_baseten.hooks.retries`: idempotent calls retry transient failures; a
    predict, run, submit or chat POST is retried only when it provably never reached the model, otherwise it raises
    :class:`~airflow_provider_baseten.exceptions.BasetenAmbiguousSubmitError`.
    """

    conn_name_attr = "baseten_conn_id"
    default_conn_name = "baseten_default"
    conn_type = "baseten"
    hook_name = "Baseten"

    def __init__(
        self,
        baseten_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        customer_request_id: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__()
        self.baseten_conn_id = baseten_conn_id
        self.timeout = timeout
        self._customer_request_id = customer_request_id
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._settings: ClientSettings | None = None

    # --- connection form (Airflow 3.1 reads these; 3.2+ reads conn-fields from get_provider_info) -------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from airflow_provider_baseten.get_provider_info import get_provider_info

        behaviour = get_provider_info()["connection-types"][0]["ui-field-behaviour"]
        return {
            "hidden_fields": behaviour["hidden-fields"],
            "relabeling": behaviour["relabeling"],
            "placeholders": behaviour["placeholders"],
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import PasswordField, StringField

        from airflow_provider_baseten.get_provider_info import CONN_FIELDS

        widgets: dict[str, Any] = {}
        for name, spec in CONN_FIELDS.items():
            secret = spec["schema"].get("format") == "password"
            field_class, widget = (
                (PasswordField, BS3PasswordFieldWidget) if secret else (StringField, BS3TextFieldWidget)
            )
            widgets[name] = field_class(lazy_gettext(spec["label"]), description=spec["description"], widget=widget())
        return widgets

    # --- settings and clients -------------------------------------------------------------------------------

    @staticmethod
    def settings_of(conn: Connection) -> ClientSettings:
        """Parse and validate a connection (sync or async lookup) and mask its key in every log."""
        from airflow.providers.common.compat.sdk import mask_secret

        key = (conn.password or "").strip()
        if key:
            # The key sent is the stripped password ("key\n" from a secrets file): mask that exact string too.
            mask_secret(key)
            if conn.password != key:
                mask_secret(conn.password)
        return settings_from_connection(
            conn_id=conn.conn_id,
            password=conn.password,
            host=conn.host,
            port=conn.port,
            extra=conn.extra,
        )

    @property
    def settings(self) -> ClientSettings:
        if self._settings is None:
            self._settings = self.settings_of(self.get_connection(self.baseten_conn_id))
        return self._settings

    async def aget_settings(self) -> ClientSettings:
        """Settings through Airflow's async connection lookup (triggers must not block the event loop)."""
        if self._settings is None:
            from airflow.providers.common.compat.connection import get_async_connection

            self._settings = self.settings_of(await get_async_connection(self.baseten_conn_id))
        if "httpx_aiohttp" not in sys.modules:
            # Importing aiohttp takes about a second; do it off the event loop the triggerer shares.
            await asyncio.to_thread(importlib.import_module, "httpx_aiohttp")
        return self._settings

    @cached_property
    def client(self) -> httpx.Client:
        return build_client(self.settings)

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.settings.max_retries)

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()
            del self.__dict__["client"]

    # --- request plumbing -----------------------------------------------------------------------------------

    def _customer_id(self) -> str | None:
        if self._customer_request_id is None:
            try:
                from airflow.providers.common.compat.sdk import get_current_context

                ti = get_current_context()["ti"]
                self._customer_request_id = (
                    f"{ti.dag_id}/{ti.task_id}/{ti.run_id}/{getattr(ti, 'map_index', -1)}/{ti.try_number}"
                )
            except Exception:
                self._customer_request_id = ""
        return self._customer_request_id or None

    def _build_request(self, client: httpx.Client | httpx.AsyncClient, call: _Call) -> httpx.Request:
        settings = self._settings
        assert settings is not None
        # httpx.Headers: later values replace earlier ones whatever their case (no duplicate headers).
        headers = httpx.Headers(list(settings.headers))
        headers.update(call.extra_headers)
        headers["Authorization"] = settings.auth_header
        if settings.gateway:
            headers["Host"] = call.endpoint.host
        customer_id = self._customer_id()
        if customer_id:
            headers[CUSTOMER_REQUEST_ID_HEADER] = customer_id
        content = None
        if call.json_body is not None:
            content = encode_json(call.json_body)
            headers.setdefault("Content-Type", "application/json")
        read = call.read_timeout or self.timeout or settings.timeout
        return client.build_request(
            call.method,
            settings.base_url(call.endpoint.host) + call.endpoint.path,
            headers=headers,
            content=content,
            timeout=httpx.Timeout(read, connect=settings.connect_timeout),
        )

    def _redact(self, text: str) -> str:
        key = self._settings.api_key if self._settings else ""
        return text.replace(key, "***") if key else text

    def _check(self, response: httpx.Response, call: _Call) -> None:
        """Raise the typed error for a non-2xx answer. Needs the body read."""
        request_id = response.headers.get(REQUEST_ID_HEADER)
        log.debug(
            "Baseten %s %s%s -> %s (request id %s)",
            call.method,
            call.endpoint.host,
            call.endpoint.path,
            response.status_code,
            request_id,
        )
        if response.is_success:
            return
        body: Any = None
        with contextlib.suppress(ValueError):
            body = response.json()
        if isinstance(body, dict) and ("error" in body or "error_code" in body or "detail" in body):
            error = str(body.get("error") or "")
            error_code = body.get("error_code")
            detail = body.get("detail")
        else:
            error, error_code, detail = _truncate(response.text.strip()) or response.reason_phrase, None, None
        message = f"{call.what}: {call.method} {call.endpoint.host}{call.endpoint.path} answered {response.status_code}"
        message += f": {error}" if error else "."
        if error_code:
            message += f" [{error_code}]"
        if detail:
            message += f" ({_truncate(str(detail))})"
        raise _error_class(response.status_code, call.endpoint.host)(
            self._redact(message),
            status_code=response.status_code,
            error=self._redact(error) if error else None,
            error_code=self._redact(str(error_code)) if error_code else None,
            detail=self._redact(str(detail)) if detail else None,
            request_id=request_id,
            retry_after=retry_after_of(response, body),
        )

    def _on_transport_error(self, exc: httpx.TransportError, call: _Call) -> None:
        if not call.idempotent and not is_retryable(exc, idempotent=False):
            raise ambiguous_submit(exc, f"{call.what} ({call.endpoint.host}{call.endpoint.path})") from exc

    def _send_once(self, call: _Call, *, stream: bool = False) -> httpx.Response:
        request = self._build_request(self.client, call)
        try:
            response = self.client.send(request, stream=stream)
        except httpx.TransportError as exc:
            self._on_transport_error(exc, call)
            raise
        if stream and not response.is_success:
            response.read()
        self._check(response, call)
        return response

    def _send(self, call: _Call, *, stream: bool = False) -> httpx.Response:
        from tenacity import Retrying

        self.settings  # noqa: B018  (resolve the connection before building requests)
        retrying = Retrying(sleep=self._sleep, **self.retry_policy.tenacity_kwargs(idempotent=call.idempotent))
        return retrying(self._send_once, call, stream=stream)

    async def _asend_once(self, client: httpx.AsyncClient, call: _Call) -> httpx.Response:
        request = self._build_request(client, call)
        try:
            response = await client.send(request)
        except httpx.TransportError as exc:
            self._on_transport_error(exc, call)
            raise
        self._check(response, call)
        return response

    async def _asend(self, call: _Call, *, client: httpx.AsyncClient | None = None) -> httpx.Response:
        from tenacity import AsyncRetrying

        settings = await self.aget_settings()
        client = client or shared_async_client(settings)
        retrying = AsyncRetrying(
            sleep=self._async_sleep, **self.retry_policy.tenacity_kwargs(idempotent=call.idempotent)
        )
        return await retrying(self._asend_once, client, call)

    @staticmethod
    def _json_or_text(response: httpx.Response) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def _parse(self, model: type[ModelT], response: httpx.Response, call: _Call) -> ModelT:
        from pydantic import ValidationError

        try:
            return model.model_validate(response.json())
        except (ValueError, ValidationError) as err:
            raise BasetenModelError(
                f"{call.what}: {call.endpoint.host}{call.endpoint.path} answered {response.status_code} with a body "
                f"that is not a valid {model.__name__}: {_truncate(self._redact(response.text))!r}",
                status_code=response.status_code,
            ) from err

    def _result(self, response: httpx.Response) -> BasetenResult:
        return BasetenResult(
            self._json_or_text(response), response.headers.get(REQUEST_ID_HEADER), response.status_code
        )

    # --- calls: models and chains -----------------------------------------------------------------------------

    @staticmethod
    def _inference_call(target: Target, payload: Any) -> _Call:
        action: Action = "predict" if target.kind == "model" else "run_remote"
        return _Call("POST", target.endpoint(action), f"{action} on {target.describe()}", False, payload)

    def predict(self, target: Target, model_input: Any, *, timeout: float | None = None) -> BasetenResult:
        """``POST /{env}/predict`` (models) or ``/run_remote`` (chains): the model's JSON output.

        Not idempotent: it is retried only when it provably never reached the model. Each call is billed.
        """
        call = self._inference_call(target, model_input)
        if timeout:
            call = _Call(call.method, call.endpoint, call.what, False, model_input, timeout)
        return self._result(self._send(call))

    def run_remote(self, target: Target, chain_input: Any, *, timeout: float | None = None) -> BasetenResult:
        """Run a chain (``/run_remote``); same semantics as :meth:`predict`."""
        if target.kind != "chain":
            raise BasetenConfigError("run_remote needs a chain_id; use predict for models.")
        return self.predict(target, chain_input, timeout=timeout)

    async def apredict(
        self,
        target: Target,
        model_input: Any,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float | None = None,  # noqa: ASYNC109  (the HTTP read timeout, as in predict())
    ) -> BasetenResult:
        """Async twin of :meth:`predict` (batch scoring), on the shared async client unless one is given."""
        call = self._inference_call(target, model_input)
        if timeout:
            call = _Call(call.method, call.endpoint, call.what, False, model_input, timeout)
        return self._result(await self._asend(call, client=client))

    @staticmethod
    def _submit_call(target: Target, request: AsyncPredictRequest) -> _Call:
        body = request.model_dump(mode="json", exclude_none=True)
        size = len(encode_json(body))
        if size > ASYNC_PAYLOAD_LIMIT_BYTES:
            raise BasetenPayloadTooLargeError(
                f"The async request body is {size} bytes, over Baseten's limit of {ASYNC_PAYLOAD_LIMIT_BYTES} "
                "bytes; nothing was sent.",
                status_code=413,
            )
        action: Action = "async_predict" if target.kind == "model" else "async_run_remote"
        return _Call("POST", target.endpoint(action), f"{action} on {target.describe()}", False, body, 60.0)

    def async_predict(self, target: Target, request: AsyncPredictRequest | dict[str, Any]) -> AsyncSubmitResponse:
        """Submit an async request (``async_predict`` for models, ``async_run_remote`` for chains).

        Validated and size-checked (256 KiB) before sending. Not idempotent: every accepted call queues new, billed
        work; it is retried only when it provably never reached Baseten.
        """
        if not isinstance(request, AsyncPredictRequest):
            from pydantic import ValidationError

            try:
                request = AsyncPredictRequest.model_validate(request)
            except ValidationError as err:
                raise BasetenConfigError(f"Invalid async request; nothing was sent: {err}") from None
        call = self._submit_call(target, request)
        return self._parse(AsyncSubmitResponse, self._send(call), call)

    @staticmethod
    def _status_call(target: Target, request_id: str) -> _Call:
        return _Call(
            "GET",
            target.async_request_endpoint(request_id),
            "async request status",
            True,
            None,
            DEFAULT_SHORT_TIMEOUT,
        )

    def get_async_request(self, target: Target, request_id: str) -> AsyncRequestState:
        """``GET /async_request/{id}``: status only. 404 (:class:`BasetenNotFoundError`) once Baseten forgot it."""
        call = self._status_call(target, request_id)
        return self._parse(AsyncRequestState, self._send(call), call)

    async def aget_async_request(
        self, target: Target, request_id: str, *, rate_limited: bool = True
    ) -> AsyncRequestState:
        """Async twin of :meth:`get_async_request`, inside the process-wide poll budget unless told otherwise."""
        settings = await self.aget_settings()
        if rate_limited:
            await shared_status_bucket(settings).acquire()
        call = self._status_call(target, request_id)
        return self._parse(AsyncRequestState, await self._asend(call), call)

    @staticmethod
    def _cancel_call(target: Target, request_id: str) -> _Call:
        endpoint = target.async_request_endpoint(request_id)
        return _Call("DELETE", endpoint, "cancel async request", True, None, DEFAULT_SHORT_TIMEOUT)

    def cancel_async_request(self, target: Target, request_id: str) -> CancelAsyncResponse:
        """Cancel a request; Baseten cancels only while ``QUEUED`` (``canceled: false`` otherwise)."""
        call = self._cancel_call(target, request_id)
        return self._parse(CancelAsyncResponse, self._send(call), call)

    async def acancel_async_request(self, target: Target, request_id: str) -> CancelAsyncResponse:
        call = self._cancel_call(target, request_id)
        return self._parse(CancelAsyncResponse, await self._asend(call), call)

    @staticmethod
    def _queue_call(target: Target) -> _Call:
        return _Call(
            "GET",
            target.endpoint("async_queue_status"),
            "async queue status",
            True,
            None,
            DEFAULT_SHORT_TIMEOUT,
        )

    def get_async_queue_status(self, target: Target) -> AsyncQueueStatus:
        call = self._queue_call(target)
        return self._parse(AsyncQueueStatus, self._send(call), call)

    async def aget_async_queue_status(
        self,
        target: Target,
        *,
        rate_limited: bool = True,
        max_age: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> AsyncQueueStatus:
        """Async twin of :meth:`get_async_queue_status`, inside the poll budget.

        With ``max_age``, a depth read for the same deployment by any hook in this event loop within the last
        ``max_age`` seconds (by ``clock``) is returned instead of a new request: a thousand triggers waiting on one
        deployment then spend a request or two a minute on progress lines, not a thousand.
        """
        settings = await self.aget_settings()
        call = self._queue_call(target)
        cache = _loop_resources().queue_depths
        key = (settings, call.endpoint)
        cached = cache.get(key)
        if cached is not None and clock() - cached[0] < max_age:
            return cached[1]
        if rate_limited:
            await shared_status_bucket(settings).acquire()
        status = self._parse(AsyncQueueStatus, await self._asend(call), call)
        cache[key] = (clock(), status)
        return status

    def wake(self, target: Target) -> None:
        """``POST /{env}/wake``: returns at once (202) and says nothing about readiness. Idempotent."""
        if target.kind != "model":
            raise BasetenConfigError("wake is available for models only.")
        self._send(_Call("POST", target.endpoint("wake"), f"wake {target.describe()}", True, None, 60.0))

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

    # --- connection test --------------------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Authenticated calls that cost no inference: ``/v1/users/me``, else Model APIs ``/v1/models``.

        Never raises.
        """
        try:
            user = self.get_user()
            return True, f"Connected to Baseten as {user.email or user.user_id}."
        except BasetenAuthError:
            try:
                models = self.list_model_api_models()
                return (
                    True,
                    f"Key accepted by Model APIs ({len(models)} models); it cannot use the management API.",
                )
            except Exception as err:
                return False, self._redact(str(err))
        except Exception as err:
            return False, self._redact(str(err))


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

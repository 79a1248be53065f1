"""``BasetenHook``: the one place that talks HTTP to Baseten.

Every URL, header, timeout, retry and status rule of the provider lives in this package (``hooks/``); operators,
sensors and triggers only call the typed methods here. Calls go to Baseten's hosts over HTTPS, or, when the
connection has a host, to that gateway (the local emulator, a private proxy) with the intended Baseten host in the
``Host`` header, exactly as Baseten's own edge routes.

Split along its seams, behind this one import path: the clients and per-loop resources in
:mod:`~airflow_provider_baseten.hooks.clients`, what a call is in :mod:`~airflow_provider_baseten.hooks.calls`,
chat completions and OpenAI clients in :mod:`~airflow_provider_baseten.hooks.chat` (a mixin of the hook), engine
routes (BEI embeddings, rerank, classify, any ``/sync/{route}``) in :mod:`~airflow_provider_baseten.hooks.engine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

import httpx
from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_baseten.exceptions import (
    BasetenAmbiguousSubmitError,
    BasetenAPIError,
    BasetenAuthError,
    BasetenConfigError,
    BasetenConnectionError,
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
    Target,
)
from airflow_provider_baseten.hooks.calls import (
    CUSTOMER_REQUEST_ID_HEADER,
    REQUEST_ID_HEADER,
    BasetenResult,
    ModelT,
    ResponseFormat,
    _Call,
    _truncate,
    check_response_format,
    encode_json,
)
from airflow_provider_baseten.hooks.chat import ChatMixin, iter_sse_chunks
from airflow_provider_baseten.hooks.clients import (
    _loop_resources,
    build_async_client,
    build_client,
    close_shared_async_clients,
    proxy_for,
    shared_async_client,
    shared_status_bucket,
    ssl_context,
    transport_failure,
)
from airflow_provider_baseten.hooks.connection import (
    DEFAULT_SHORT_TIMEOUT,
    ClientSettings,
    settings_from_connection,
)
from airflow_provider_baseten.hooks.engine import EngineMixin
from airflow_provider_baseten.hooks.management import BasetenManagementMixin
from airflow_provider_baseten.hooks.models import (
    ASYNC_PAYLOAD_LIMIT_BYTES,
    AsyncPredictRequest,
    AsyncQueueStatus,
    AsyncRequestState,
    AsyncSubmitResponse,
    CancelAsyncResponse,
)
from airflow_provider_baseten.hooks.ratelimit import TokenBucket, budget_feedback, shared_sync_bucket
from airflow_provider_baseten.hooks.retries import (
    RetryPolicy,
    ambiguous_answer,
    ambiguous_submit,
    deadline_bounded,
    is_retryable,
    never_reached_server,
    retry_after_of,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection
    from tenacity import RetryCallState

__all__ = [
    "BasetenHook",
    "BasetenResult",
    "Target",
    # Re-exported from the modules the hook was split into (their old import path keeps working).
    "build_async_client",
    "build_client",
    "close_shared_async_clients",
    "encode_json",
    "iter_sse_chunks",
    "shared_async_client",
    "shared_status_bucket",
    "ssl_context",
]

log = logging.getLogger(__name__)
#: The shortest timeout an attempt bounded by a deadline gets: it fails fast rather than not at all.
_MIN_ATTEMPT_S = 0.05

#: ``test_connection()``'s connect and read timeout (seconds): the connection form waits for it.
TEST_CONNECTION_TIMEOUT = 5.0


class _Attempts:
    """How many times one call was sent (retries included)."""

    count = 0


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


class BasetenHook(ChatMixin, EngineMixin, BasetenManagementMixin, BaseHook):
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
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        self.baseten_conn_id = baseten_conn_id
        self.timeout = timeout
        self._customer_request_id = customer_request_id
        self._sleep = sleep
        self._async_sleep = async_sleep
        #: The clock of the poll budget and of ``time_left`` bounds; ``sleep``/``async_sleep`` must wait on it.
        self._clock = clock or time.monotonic
        self._settings: ClientSettings | None = None
        self._read_timeout_cap: float | None = None

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

    def _build_request(
        self, client: httpx.Client | httpx.AsyncClient, call: _Call, end: float | None = None
    ) -> httpx.Request:
        settings = self._settings
        assert settings is not None
        # httpx.Headers: later values replace earlier ones whatever their case (no duplicate headers).
        headers = httpx.Headers(list(settings.headers))
        headers.update(call.extra_headers)
        headers["Authorization"] = settings.auth_header
        if settings.gateway:
            headers["Host"] = call.endpoint.host
        customer_id = self._customer_id()
        if customer_id and CUSTOMER_REQUEST_ID_HEADER not in call.extra_headers:  # a per-call id wins
            headers[CUSTOMER_REQUEST_ID_HEADER] = customer_id
        content = None
        if call.json_body is not None:
            content = encode_json(call.json_body)
            headers.setdefault("Content-Type", "application/json")
        read = self._read_timeout(call)
        if end is not None:  # bounded by the caller's deadline: every phase of this attempt ends by then
            read = max(_MIN_ATTEMPT_S, min(read, end - self._clock()))
        return client.build_request(
            call.method,
            settings.base_url(call.endpoint.host) + call.endpoint.path,
            headers=headers,
            content=content,
            timeout=httpx.Timeout(read, connect=min(settings.connect_timeout, read)),
        )

    def _read_timeout(self, call: _Call) -> float:
        assert self._settings is not None
        read = call.read_timeout or self.timeout or self._settings.timeout
        return read if self._read_timeout_cap is None else min(read, self._read_timeout_cap)

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
        error_class = _error_class(response.status_code, call.endpoint.host)
        err = error_class(
            self._redact(message),
            status_code=response.status_code,
            error=self._redact(error) if error else None,
            error_code=self._redact(str(error_code)) if error_code else None,
            detail=self._redact(str(detail)) if detail else None,
            request_id=request_id,
            retry_after=retry_after_of(response, body),
        )
        if not call.idempotent and ambiguous_answer(err):
            raise BasetenAmbiguousSubmitError(
                f"{err} Baseten's answer does not say it refused the request before the model (no error_code such "
                "as model_unavailable), so the model may have run (and been billed): it was not retried. Retrying "
                "the task sends it again."
            ) from err
        raise err

    def _on_transport_error(self, exc: httpx.TransportError, call: _Call) -> None:
        if not call.idempotent and not is_retryable(exc, idempotent=False):
            raise ambiguous_submit(exc, f"{call.what} ({call.endpoint.host}{call.endpoint.path})") from exc

    def _send_once(self, call: _Call, *, stream: bool = False, end: float | None = None) -> httpx.Response:
        request = self._build_request(self.client, call, end)
        try:
            response = self.client.send(request, stream=stream)
        except httpx.TransportError as exc:
            self._on_transport_error(exc, call)
            raise
        if stream and not response.is_success:
            response.read()
        self._check(response, call)
        return response

    def _send(
        self, call: _Call, *, stream: bool = False, budgeted: bool = False, time_left: float | None = None
    ) -> httpx.Response:
        """Send with retries. ``budgeted``: every attempt takes a token of the process's sync poll budget.
        ``time_left``: the whole call, retries included, ends within this many seconds (by the hook's clock)."""
        from tenacity import Retrying

        settings = self.settings
        budget = self._sync_budget(settings) if budgeted else None
        end = None if time_left is None else self._clock() + time_left
        retrying = Retrying(sleep=self._sleep, **self._retry_kwargs(call, end))
        attempts = _Attempts()

        def attempt() -> httpx.Response:
            attempts.count += 1
            granted = budget.acquire() if budget else None
            with budget_feedback(budget, granted):
                return self._send_once(call, stream=stream, end=end)

        try:
            return retrying(attempt)
        except httpx.TransportError as exc:
            raise self._connection_error(exc, call, attempts.count) from exc

    def _sync_budget(self, settings: ClientSettings) -> TokenBucket:
        return shared_sync_bucket(settings, settings.status_rate_limit, clock=self._clock, sleep=self._sleep)

    async def _asend_once(self, client: httpx.AsyncClient, call: _Call) -> httpx.Response:
        request = self._build_request(client, call)
        try:
            response = await client.send(request)
        except httpx.TransportError as exc:
            self._on_transport_error(exc, call)
            raise
        self._check(response, call)
        return response

    async def _asend(
        self, call: _Call, *, client: httpx.AsyncClient | None = None, budgeted: bool = False
    ) -> httpx.Response:
        """Async twin of :meth:`_send`; ``budgeted`` attempts take tokens of the event loop's shared poll budget."""
        from tenacity import AsyncRetrying

        settings = await self.aget_settings()
        client = client or shared_async_client(settings)
        budget = shared_status_bucket(settings, clock=self._clock, sleep=self._async_sleep) if budgeted else None
        retrying = AsyncRetrying(sleep=self._async_sleep, **self._retry_kwargs(call, None))
        attempts = _Attempts()

        async def attempt() -> httpx.Response:
            attempts.count += 1
            granted = await budget.acquire() if budget else None
            with budget_feedback(budget, granted):
                return await self._asend_once(client, call)

        try:
            return await retrying(attempt)
        except httpx.TransportError as exc:
            raise self._connection_error(exc, call, attempts.count) from exc

    def _retry_kwargs(self, call: _Call, end: float | None) -> dict[str, Any]:
        """The retry policy's tenacity arguments (bounded by ``end`` when given), plus a WARNING line before every
        retry (sync and async alike)."""
        policy = self.retry_policy
        kwargs = policy.tenacity_kwargs(idempotent=call.idempotent)
        if call.retry_budget is not None:
            kwargs["retry"] = call.retry_budget.gate(kwargs["retry"])
        if end is not None:
            kwargs.update(deadline_bounded(kwargs, end, self._clock))
        kwargs["before_sleep"] = lambda state: self._log_retry(call, state, policy.max_retries + 1)
        return kwargs

    def _where(self, call: _Call) -> str:
        """Where a call goes, for messages: the gateway and the Baseten host it stands for, or the Baseten host."""
        settings = self._settings
        assert settings is not None
        if settings.gateway:
            return f"the gateway {settings.gateway} (for {call.endpoint.host}{call.endpoint.path})"
        return f"{call.endpoint.host}{call.endpoint.path}"

    def _log_retry(self, call: _Call, state: RetryCallState, max_attempts: int) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        self.log_retry(call, exc, state.attempt_number, max_attempts, wait)

    def log_retry(self, call: _Call, exc: BaseException | None, attempt: int, max_attempts: int, wait: float) -> None:
        """The WARNING line before a retry (the hook's tenacity loop and the hot path's loop alike)."""
        if isinstance(exc, BasetenAPIError):
            reason = f"answered {exc.status_code}" + (f" [{exc.error_code}]" if exc.error_code else "")
        elif isinstance(exc, httpx.TransportError):
            reason = transport_failure(exc)[1]
        else:
            reason = type(exc).__name__
        log.warning(
            "%s: %s %s failed: %s; attempt %d of %d, retrying in %.1f s",
            call.what,
            call.method,
            self._where(call),
            reason,
            attempt,
            max_attempts,
            wait,
        )

    def _connection_error(self, exc: httpx.TransportError, call: _Call, attempts: int) -> BasetenConnectionError:
        """The provider's error for a transport failure: what failed, where, how often, and what to check."""
        settings = self._settings
        assert settings is not None
        url = httpx.URL(settings.base_url(call.endpoint.host) + call.endpoint.path)
        kind, description = transport_failure(exc)
        proxy = proxy_for(settings, url)
        via = ""
        if proxy:
            proxy_url = httpx.URL(proxy)
            via = f" via the proxy {proxy_url.scheme}://{proxy_url.host}:{proxy_url.port or ''}".rstrip(":")
            hint = (
                "is the proxy running and reachable? It comes from the connection's 'proxy' extra or from "
                "HTTP_PROXY/HTTPS_PROXY/ALL_PROXY; NO_PROXY bypasses it."
            )
        elif settings.gateway:
            hint = "is the gateway running? Check the connection's host."
        else:
            hint = "check this machine's network access to Baseten (DNS, firewall, proxy settings)."
        message = (
            f"{call.what}: {call.method} {self._where(call)}{via} failed: {description} "
            f"({attempts} attempt{'s' if attempts != 1 else ''}). Hint: {hint}"
        )
        return BasetenConnectionError(
            self._redact(message),
            kind=kind,
            host=url.netloc.decode(),
            attempts=attempts,
            never_sent=never_reached_server(exc),
        )

    @staticmethod
    def _json_or_text(response: httpx.Response) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def _bad_body(self, response: httpx.Response, call: _Call, expected: str, hint: str = "") -> BasetenModelError:
        """The error for a 2xx answer whose body is not what the call expects: never retried (it would not change)."""
        content_type = response.headers.get("content-type") or "no content type"
        return BasetenModelError(
            f"{call.what}: {call.endpoint.host}{call.endpoint.path} answered {response.status_code} "
            f"({content_type}) with a body that is not {expected}: {_truncate(self._redact(response.text))!r}"
            + (f". {hint}" if hint else ""),
            status_code=response.status_code,
            request_id=response.headers.get(REQUEST_ID_HEADER),
        )

    def _parse(self, model: type[ModelT], response: httpx.Response, call: _Call) -> ModelT:
        from pydantic import ValidationError

        try:
            return model.model_validate(response.json())
        except (ValueError, ValidationError) as err:
            raise self._bad_body(response, call, f"a valid {model.__name__}") from err

    def _result(self, response: httpx.Response, call: _Call, response_format: ResponseFormat) -> BasetenResult:
        """The answer as ``response_format`` says: parsed JSON (strict; empty is ``None``), text, or bytes."""
        data: Any
        if response_format == "bytes":
            data = response.content
        elif response_format == "text":
            data = response.text
        elif not response.content:
            data = None
        else:
            try:
                data = response.json()
            except ValueError:
                raise self._bad_body(
                    response,
                    call,
                    "JSON",
                    "If this model answers text or binary data, pass response_format='text' or 'bytes'",
                ) from None
        return BasetenResult(data, response.headers.get(REQUEST_ID_HEADER), response.status_code)

    # --- calls: models and chains -----------------------------------------------------------------------------

    @staticmethod
    def _inference_call(target: Target, payload: Any, timeout: float | None, response_format: ResponseFormat) -> _Call:
        check_response_format(response_format)
        action: Action = "predict" if target.kind == "model" else "run_remote"
        return _Call("POST", target.endpoint(action), f"{action} on {target.describe()}", False, payload, timeout)

    def predict(
        self,
        target: Target,
        model_input: Any,
        *,
        timeout: float | None = None,
        response_format: ResponseFormat = "json",
    ) -> BasetenResult:
        """``POST /{env}/predict`` (models) or ``/run_remote`` (chains): the model's JSON output.

        Not idempotent: it is retried only when it provably never reached the model. Each call is billed.
        ``response_format``: ``"json"`` (default; a 2xx body that is not JSON raises :class:`BasetenModelError`),
        ``"text"`` (``data`` is the decoded body) or ``"bytes"`` (``data`` is the raw body).
        """
        call = self._inference_call(target, model_input, timeout, response_format)
        return self._result(self._send(call), call, response_format)

    def run_remote(
        self,
        target: Target,
        chain_input: Any,
        *,
        timeout: float | None = None,
        response_format: ResponseFormat = "json",
    ) -> BasetenResult:
        """Run a chain (``/run_remote``); same semantics as :meth:`predict`."""
        if target.kind != "chain":
            raise BasetenConfigError("run_remote needs a chain_id; use predict for models.")
        return self.predict(target, chain_input, timeout=timeout, response_format=response_format)

    async def apredict(
        self,
        target: Target,
        model_input: Any,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float | None = None,  # noqa: ASYNC109  (the HTTP read timeout, as in predict())
        response_format: ResponseFormat = "json",
    ) -> BasetenResult:
        """Async twin of :meth:`predict` (batch scoring), on the shared async client unless one is given."""
        call = self._inference_call(target, model_input, timeout, response_format)
        return self._result(await self._asend(call, client=client), call, response_format)

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

    def get_async_request(
        self, target: Target, request_id: str, *, rate_limited: bool = True, time_left: float | None = None
    ) -> AsyncRequestState:
        """``GET /async_request/{id}``: status only. 404 (:class:`BasetenNotFoundError`) once Baseten forgot it.

        Every attempt (retries included) takes a token of the process's poll budget unless ``rate_limited=False``;
        with ``time_left`` the call, retries included, ends within that many seconds.
        """
        call = self._status_call(target, request_id)
        response = self._send(call, budgeted=rate_limited, time_left=time_left)
        return self._parse(AsyncRequestState, response, call)

    async def aget_async_request(
        self, target: Target, request_id: str, *, rate_limited: bool = True
    ) -> AsyncRequestState:
        """Async twin of :meth:`get_async_request`, inside the event loop's shared poll budget unless told otherwise."""
        call = self._status_call(target, request_id)
        return self._parse(AsyncRequestState, await self._asend(call, budgeted=rate_limited), call)

    @staticmethod
    def _cancel_call(target: Target, request_id: str) -> _Call:
        endpoint = target.async_request_endpoint(request_id)
        return _Call("DELETE", endpoint, "cancel async request", True, None, DEFAULT_SHORT_TIMEOUT)

    def cancel_async_request(self, target: Target, request_id: str) -> CancelAsyncResponse:
        """Cancel a request; Baseten cancels only while ``QUEUED`` (``canceled: false`` otherwise).

        Cancels share the status calls' limit, so every attempt takes a token of the poll budget.
        """
        call = self._cancel_call(target, request_id)
        return self._parse(CancelAsyncResponse, self._send(call, budgeted=True), call)

    async def acancel_async_request(self, target: Target, request_id: str) -> CancelAsyncResponse:
        call = self._cancel_call(target, request_id)
        return self._parse(CancelAsyncResponse, await self._asend(call, budgeted=True), call)

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

    def get_async_queue_status(self, target: Target, *, time_left: float | None = None) -> AsyncQueueStatus:
        """The deployment's queue depth, inside the poll budget (Baseten limits it like status calls)."""
        call = self._queue_call(target)
        return self._parse(AsyncQueueStatus, self._send(call, budgeted=True, time_left=time_left), call)

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
        status = self._parse(AsyncQueueStatus, await self._asend(call, budgeted=rate_limited), call)
        cache[key] = (clock(), status)
        return status

    def wake(self, target: Target) -> None:
        """``POST /{env}/wake``: returns at once (202) and says nothing about readiness. Idempotent."""
        if target.kind != "model":
            raise BasetenConfigError("wake is available for models only.")
        self._send(_Call("POST", target.endpoint("wake"), f"wake {target.describe()}", True, None, 60.0))

    # --- connection test --------------------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Authenticated calls that cost no inference: ``/v1/users/me``, else Model APIs ``/v1/models``.

        Fails fast, with the message a task would log: one attempt per call, at most
        :data:`TEST_CONNECTION_TIMEOUT` seconds to connect and to answer. Never raises.
        """
        try:
            settings = self.settings
        except Exception as err:
            return False, self._redact(str(err))
        self._settings = dataclasses.replace(
            settings,
            max_retries=0,
            connect_timeout=min(settings.connect_timeout, TEST_CONNECTION_TIMEOUT),
        )
        self._read_timeout_cap = TEST_CONNECTION_TIMEOUT
        try:
            return self._test_connection()
        finally:
            self._settings = settings
            self._read_timeout_cap = None

    def _test_connection(self) -> tuple[bool, str]:
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

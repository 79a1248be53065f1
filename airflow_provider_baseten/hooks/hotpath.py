"""The hot path: one lean async sender for batch items and trigger status polls, straight on ``aiohttp``.

The hook's async calls go through ``httpx.AsyncClient`` over httpx-aiohttp and a ``tenacity`` loop: about 0.25 ms
of client CPU per request before the retry machinery, where a bare ``aiohttp`` request costs about 0.1 ms. A batch
of thousands of predicts, or a triggerer polling for thousands of waits, pays that on every request. The
:class:`HotSender` pays it once: URL, headers, proxy and timeouts are built per endpoint on first use, and a request
is one ``session.request`` and one ``read``.

It is the hook's path in everything but speed: the session comes from the client factory
(:func:`~airflow_provider_baseten.hooks.clients.build_aiohttp_session`: the same TLS context, pool size, timeouts;
the proxy per URL from the same resolved settings, ``NO_PROXY`` included), the headers are those the hook sends
(httpx's defaults, the connection's ``headers``, ``Authorization``, the gateway's ``Host``), aiohttp errors are
renamed to the httpx errors the hook's transport raises, and a failed answer goes through the hook's own error
mapping (``BasetenHook._check``: typed errors, the 502/503 ambiguity rule, redaction) and the one retry table
(:func:`~airflow_provider_baseten.hooks.retries.is_retryable`, :class:`~airflow_provider_baseten.hooks.retries.
RetryPolicy`). Only the error path builds an ``httpx.Response``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from airflow_provider_baseten.exceptions import BasetenAPIError, BasetenConfigError
from airflow_provider_baseten.hooks.calls import (
    CUSTOMER_REQUEST_ID_HEADER,
    REQUEST_ID_HEADER,
    BasetenResult,
    ModelT,
    ResponseFormat,
    _Call,
)
from airflow_provider_baseten.hooks.clients import (
    build_aiohttp_session,
    httpx_error_class,
    proxy_for,
    shared_aiohttp_session,
)
from airflow_provider_baseten.hooks.ratelimit import budget_feedback
from airflow_provider_baseten.hooks.retries import ALWAYS_RETRIED_STATUSES, is_retryable

if TYPE_CHECKING:
    import aiohttp

    from airflow_provider_baseten.hooks.addressing import Target
    from airflow_provider_baseten.hooks.baseten import BasetenHook
    from airflow_provider_baseten.hooks.models import AsyncRequestState, Deployment, Environment
    from airflow_provider_baseten.hooks.ratelimit import AsyncTokenBucket
    from airflow_provider_baseten.hooks.retry_budget import RetryBudget

__all__ = [
    "IDEMPOTENT_SYNC_ROUTES",
    "MAX_CUSTOMER_REQUEST_ID",
    "HotSender",
    "as_raw_json",
    "customer_request_id",
    "status_budget",
    "status_poll",
    "sync_route_idempotent",
    "task_request_prefix",
]

T = TypeVar("T")

#: Sync routes of Baseten's engines (BEI) that only compute an answer from their input: retried like reads.
#: Every other route (``predict``, ``v1/chat/completions``, a custom server's own) is treated as a billed
#: predict: retried only when it provably never reached the model.
IDEMPOTENT_SYNC_ROUTES = frozenset({"v1/embeddings", "embeddings", "rerank", "v1/rerank", "classify", "v1/classify"})
#: Baseten documents no limit for ``x-baseten-customer-request-id``; ids stay within this many ASCII characters.
MAX_CUSTOMER_REQUEST_ID = 128
_UNSAFE = re.compile(r"[^A-Za-z0-9._:+~-]")
_PREFIX_KEEP = 48


def sync_route_idempotent(route: str) -> bool:
    """Whether a ``/sync/{route}`` call may be sent twice (see :data:`IDEMPOTENT_SYNC_ROUTES`)."""
    return route.strip("/") in IDEMPOTENT_SYNC_ROUTES


def task_request_prefix(*parts: object) -> str:
    """``dag.task.run.map_index.try`` as a header-safe prefix of per-item customer request ids.

    Characters outside ``[A-Za-z0-9._:+~-]`` become ``_``; a prefix too long for :data:`MAX_CUSTOMER_REQUEST_ID`
    (with room for ``:{index}``) keeps its first characters and a hash of the whole, so it stays unique.
    """
    prefix = _UNSAFE.sub("_", ".".join(str(part) for part in parts))
    if len(prefix) <= MAX_CUSTOMER_REQUEST_ID - 12:
        return prefix
    digest = hashlib.sha256(prefix.encode()).hexdigest()[:16]
    return f"{prefix[:_PREFIX_KEEP]}~{digest}"


def customer_request_id(prefix: str, index: int) -> str:
    """The ``x-baseten-customer-request-id`` of item ``index`` of a batch: ``{prefix}:{index}``."""
    return f"{prefix}:{index}"


def _raw_json_decoder() -> Callable[[bytes], Any] | None:
    try:
        import msgspec
    except ImportError:
        return None
    return msgspec.json.Decoder(msgspec.Raw).decode


_decode_raw = _raw_json_decoder()


def as_raw_json(body: bytes) -> Any | None:
    """``body`` as a ``msgspec.Raw`` if it is one line of valid UTF-8 JSON, else ``None`` (decode it instead).

    msgspec writes a ``Raw`` into an encoded document as-is: a batch output line carries the model's answer without
    parsing it into Python objects and encoding it again (the cost grows with the answer). Not one line (a
    pretty-printed answer would break the JSONL), not UTF-8, NaN, or msgspec missing: ``None``.
    """
    if _decode_raw is None or b"\n" in body or b"\r" in body:
        return None
    try:
        if not body.isascii():
            body.decode()  # msgspec checks the syntax, not the UTF-8 inside strings
        return _decode_raw(body)
    except ValueError:  # msgspec.DecodeError and UnicodeDecodeError are ValueErrors
        return None


class _Prepared:
    """What every request of one call shape (method, host, timeout, headers) reuses: base URL, headers, proxy,
    timeout. Not the path: polls of thousands of request ids share one entry (proxies match by host, never path)."""

    __slots__ = ("base", "headers", "proxy", "proxy_auth", "timeout")

    def __init__(self, base: str, headers: dict[str, str], proxy: str | None, proxy_auth: Any, timeout: Any) -> None:
        self.base = base
        self.headers = headers
        self.proxy = proxy
        self.proxy_auth = proxy_auth
        self.timeout = timeout


class Reply:
    """A 2xx answer: status, headers (case-insensitive lookup) and the whole body."""

    __slots__ = ("body", "headers", "raw_headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes, raw_headers: Any) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.raw_headers = raw_headers

    def as_httpx(self) -> httpx.Response:
        """The answer as an ``httpx.Response``, for the hook's error and body checks (never on the fast path)."""
        return httpx.Response(self.status, headers=self.raw_headers, content=self.body)


def _default_headers() -> httpx.Headers:
    """The headers httpx's client sends by default, so the hot path's requests are the hook's requests."""
    from httpx._client import USER_AGENT

    return httpx.Headers({"Accept": "*/*", "Accept-Encoding": "gzip, deflate", "Connection": "keep-alive",
                          "User-Agent": USER_AGENT})  # fmt: skip


class HotSender:
    """Send calls of one hook on one ``aiohttp.ClientSession`` with the hook's retry and error rules.

    :param hook: the hook whose settings, error mapping, retry policy, sleep and clock are used (its settings must
        be resolved: ``await hook.aget_settings()``).
    :param session: an ``aiohttp.ClientSession`` from the client factory.
    :param retry_budget: one budget for every call of this sender (a batch): once spent, a failed call is not
        retried and raises its error.
    """

    def __init__(
        self,
        hook: BasetenHook,
        session: aiohttp.ClientSession,
        *,
        retry_budget: RetryBudget | None = None,
        owns_session: bool = False,
    ) -> None:
        settings = hook._settings
        if settings is None:
            raise BasetenConfigError("HotSender needs the hook's settings resolved (await hook.aget_settings()).")
        self.hook = hook
        self.settings = settings
        self.session = session
        self.retry_budget = retry_budget
        self._owns_session = owns_session
        self._policy = hook.retry_policy
        self._sleep = hook._async_sleep
        self._clock = hook._clock
        self._prepared: dict[tuple[Any, ...], _Prepared] = {}
        self._budget_warned = False

    @classmethod
    async def open(
        cls, hook: BasetenHook, *, max_connections: int = 256, retry_budget: RetryBudget | None = None
    ) -> HotSender:
        """A sender on a session of its own (a batch; :meth:`aclose` closes it)."""
        settings = await hook.aget_settings()
        session = build_aiohttp_session(settings, max_connections=max_connections)
        return cls(hook, session, retry_budget=retry_budget, owns_session=True)

    @classmethod
    async def shared(cls, hook: BasetenHook) -> HotSender:
        """A sender on the event loop's shared session for the hook's connection (every trigger of a triggerer)."""
        settings = await hook.aget_settings()
        return cls(hook, shared_aiohttp_session(settings))

    @property
    def closed(self) -> bool:
        """Whether the session is closed (a shared one is replaced on the next :meth:`shared`)."""
        return self.session.closed

    async def aclose(self) -> None:
        if self._owns_session:
            await self.session.close()

    # --- preparing -------------------------------------------------------------------------------------------------

    def _prepare(self, call: _Call, key: tuple[Any, ...]) -> _Prepared:
        settings, hook = self.settings, self.hook
        headers = _default_headers()
        headers.update(list(settings.headers))
        headers.update(call.extra_headers)
        headers["Authorization"] = settings.auth_header
        if settings.gateway:
            headers["Host"] = call.endpoint.host
        customer_id = hook._customer_id()
        if customer_id:
            headers[CUSTOMER_REQUEST_ID_HEADER] = customer_id
        if call.method in ("POST", "PUT", "PATCH"):
            headers.setdefault("Content-Type", "application/json")
        base = settings.base_url(call.endpoint.host)
        url = base + call.endpoint.path
        read = hook._read_timeout(call)
        connect = min(settings.connect_timeout, read)
        proxy_url = proxy_for(settings, httpx.URL(url))
        proxy = proxy_auth = None
        import aiohttp

        # connect: the wait for a pooled connection and its setup (httpx's pool timeout), as httpx-aiohttp maps it.
        timeout = aiohttp.ClientTimeout(total=None, connect=read, sock_connect=connect, sock_read=read)
        if proxy_url:
            parsed = httpx.Proxy(proxy_url)
            proxy = str(parsed.url)
            proxy_auth = aiohttp.BasicAuth(*parsed.auth) if parsed.auth else None
        prepared = self._prepared[key] = _Prepared(base, dict(headers.items()), proxy, proxy_auth, timeout)
        return prepared

    # --- sending ---------------------------------------------------------------------------------------------------

    async def _exchange(self, call: _Call, prepared: _Prepared, body: bytes | None, headers: dict[str, str]) -> Reply:
        """One attempt: the answer, or the hook's typed error (non-2xx) or a named httpx transport error."""
        import aiohttp

        try:
            async with self.session.request(
                call.method,
                prepared.base + call.endpoint.path,
                data=body,
                headers=headers,
                proxy=prepared.proxy,
                proxy_auth=prepared.proxy_auth,
                timeout=prepared.timeout,
                allow_redirects=False,
            ) as answer:
                content = await answer.read()
                reply = Reply(answer.status, answer.headers, content, answer.raw_headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            error_class = httpx_error_class(exc) or (httpx.ReadTimeout if isinstance(exc, TimeoutError) else None)
            error = (error_class or httpx.ReadError)(str(exc))
            error.__cause__ = exc
            self.hook._on_transport_error(error, call)
            raise error from exc
        if not 200 <= reply.status < 300:
            self.hook._check(reply.as_httpx(), call)
        return reply

    async def request(
        self,
        call: _Call,
        body: bytes | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        budget: AsyncTokenBucket | None = None,
        granted: float | None = None,
    ) -> Reply:
        """Send ``call`` (``body``: the encoded JSON) with the hook's retry policy; ``headers`` are added per request.

        ``budget``: every attempt, retries included, takes a token of this poll budget (and a 429 shrinks it);
        ``granted``: the first attempt's token was taken already (``budget.acquire_many``) at this clock reading.
        Retried only as :func:`~airflow_provider_baseten.hooks.retries.is_retryable` says, and only while the
        sender's retry budget (if any) has a retry left. A transport failure ends as the hook's
        :class:`~airflow_provider_baseten.exceptions.BasetenConnectionError`.
        """
        key = (call.method, call.endpoint.host, call.read_timeout, tuple(call.extra_headers.items()))
        prepared = self._prepared.get(key) or self._prepare(call, key)
        sent_headers = prepared.headers if not headers else {**prepared.headers, **headers}
        policy = self._policy
        retry_budget = self.retry_budget
        if retry_budget is not None:
            retry_budget.record_request()
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                if budget is None:
                    return await self._exchange(call, prepared, body, sent_headers)
                if granted is None or attempt > 1:
                    granted = await budget.acquire()
                with budget_feedback(budget, granted):
                    return await self._exchange(call, prepared, body, sent_headers)
            except (BasetenAPIError, httpx.TransportError) as exc:
                if not self._may_retry(exc, call, attempt, started):
                    if isinstance(exc, httpx.TransportError):
                        raise self.hook._connection_error(exc, call, attempt) from exc
                    raise
                wait = policy.wait_seconds(attempt, getattr(exc, "retry_after", None))
                self.hook.log_retry(call, exc, attempt, policy.max_retries + 1, wait)
                await self._sleep(wait)

    def _may_retry(self, exc: BaseException, call: _Call, attempt: int, started: float) -> bool:
        """The hook's rule (``tenacity_kwargs``: the table, max attempts, total budget), then the retry budget."""
        policy = self._policy
        if not is_retryable(exc, idempotent=call.idempotent):
            return False
        if attempt > policy.max_retries or self._clock() - started >= policy.total_budget:
            return False
        # As RetryBudget.gate rules for the hook: 429/529 (refused cheaply, with a time to come back) spend none.
        if self.retry_budget is None or getattr(exc, "status_code", None) in ALWAYS_RETRIED_STATUSES:
            return True
        if self.retry_budget.try_spend():
            return True
        if not self._budget_warned:
            self._budget_warned = True
            self.hook.log.warning(
                "The batch's retry budget is spent (%d retries for %d requests): failed calls are no longer retried.",
                self.retry_budget.retries,
                self.retry_budget.requests,
            )
        return False

    # --- typed calls -----------------------------------------------------------------------------------------------

    def result(
        self, reply: Reply, call: _Call, response_format: ResponseFormat = "json", *, raw: bool = False
    ) -> BasetenResult:
        """The answer as the hook's ``_result`` gives it; JSON is decoded here, anything unusual by the hook.

        ``raw``: a one-line JSON answer stays undecoded, a ``msgspec.Raw`` (:func:`as_raw_json`) for a caller that
        writes it out as JSON; any other answer is decoded as without it.
        """
        if response_format == "json" and reply.body:
            data = as_raw_json(reply.body) if raw else None
            if data is None:
                try:
                    data = json.loads(reply.body)
                except ValueError:
                    return self.hook._result(reply.as_httpx(), call, response_format)
            return BasetenResult(data, reply.headers.get(REQUEST_ID_HEADER), reply.status)
        return self.hook._result(reply.as_httpx(), call, response_format)

    def parse(self, model: type[ModelT], reply: Reply, call: _Call) -> ModelT:
        """``model`` from a JSON answer; a body that is not one fails as the hook's ``_parse`` says."""
        try:
            return model.model_validate_json(reply.body)
        except ValueError:  # pydantic's ValidationError is a ValueError
            return self.hook._parse(model, reply.as_httpx(), call)

    async def predict(
        self,
        call: _Call,
        body: bytes,
        *,
        request_id: str | None = None,
        response_format: ResponseFormat = "json",
        raw: bool = False,
    ) -> BasetenResult:
        """One predict-like POST (``call`` from the hook, ``body`` already encoded) with its customer request id;
        ``raw`` as :meth:`result` says."""
        headers = {CUSTOMER_REQUEST_ID_HEADER: request_id} if request_id else None
        return self.result(await self.request(call, body, headers=headers), call, response_format, raw=raw)

    async def get_async_request(
        self, target: Target, request_id: str, budget: AsyncTokenBucket, *, granted: float | None = None
    ) -> AsyncRequestState:
        """``GET /async_request/{id}`` (the async request trigger's poll), each attempt inside ``budget``
        (``granted``: the first attempt's token is taken already, see :meth:`request`)."""
        from airflow_provider_baseten.hooks.models import AsyncRequestState

        call = self.hook._status_call(target, request_id)
        return self.parse(AsyncRequestState, await self.request(call, budget=budget, granted=granted), call)

    async def get_deployment(self, target: Target, budget: AsyncTokenBucket) -> Deployment:
        """The deployment status read of the readiness trigger, each attempt inside ``budget``."""
        hook = self.hook
        call = hook._deployment_call(target)
        reply = await self.request(call, budget=budget)
        try:
            record = json.loads(reply.body)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            record = hook._json_object(reply.as_httpx(), call.what)
        return hook._deployment_of(record, target)

    async def get_environment(self, model_id: str, environment: str, budget: AsyncTokenBucket) -> Environment:
        """``GET .../environments/{env}`` (the promotion trigger's poll), each attempt inside ``budget``."""
        from airflow_provider_baseten.hooks.models import Environment

        call = self.hook._environment_call(model_id, environment)
        return self.parse(Environment, await self.request(call, budget=budget), call)


def status_budget(hook: BasetenHook) -> AsyncTokenBucket:
    """The event loop's shared status-poll budget for the hook's connection (settings must be resolved)."""
    from airflow_provider_baseten.hooks.clients import shared_status_bucket

    assert hook._settings is not None
    return shared_status_bucket(hook._settings, clock=hook._clock, sleep=hook._async_sleep)


#: A trigger whose first poll comes within this many seconds of another's, on the same connection and event loop,
#: polls on the sender (settings, prepared URLs and headers) that one resolved: a triggerer starting a thousand
#: triggers looks the connection up once, not a thousand times (about 1 ms of CPU each). The cost: a changed
#: connection (a rotated key) reaches triggers that start after the change at most this late.
SHARED_SENDER_TTL_S = 60.0

_POLLERS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[Any, ...], tuple[asyncio.Future[HotSender], float]]
] = weakref.WeakKeyDictionary()


def _usable(opening: asyncio.Future[HotSender]) -> bool:
    if not opening.done():
        return True
    return not opening.cancelled() and opening.exception() is None and not opening.result().closed


async def _shared_poller(hook: BasetenHook) -> tuple[HotSender, AsyncTokenBucket]:
    """The event loop's sender and status budget for hooks configured like ``hook`` (see ``SHARED_SENDER_TTL_S``).

    Triggers whose first polls come together wait for one lookup; a failed lookup fails those polls only (the next
    poll looks the connection up again).
    """
    loop = asyncio.get_running_loop()
    pollers = _POLLERS.get(loop)
    if pollers is None:
        # The futures refer to their loop, so a loop closed without clean-up would stay alive as a key: drop those.
        for ended in [other for other in _POLLERS if other.is_closed()]:
            del _POLLERS[ended]
        pollers = _POLLERS[loop] = {}
    key = (type(hook), hook.baseten_conn_id, hook.timeout, hook._read_timeout_cap, hook._customer_id(),
           hook._clock, hook._async_sleep)  # fmt: skip
    entry = pollers.get(key)
    now = time.monotonic()
    if entry is None or now - entry[1] > SHARED_SENDER_TTL_S or not _usable(entry[0]):
        entry = pollers[key] = (asyncio.ensure_future(HotSender.shared(hook)), now)
    try:
        sender = await asyncio.shield(entry[0])
    except Exception:
        if pollers.get(key) is entry:
            del pollers[key]
        raise
    if hook._settings is None:  # the trigger's own calls (queue depth, cancel) need no lookup of their own either
        hook._settings = sender.settings
    return sender, status_budget(sender.hook)


def status_poll(
    hook: BasetenHook, read: Callable[[HotSender, AsyncTokenBucket], Awaitable[T]]
) -> Callable[[], Awaitable[T]]:
    """``read(sender, budget)`` as a trigger's poll, on the event loop's shared sender and status budget.

    Both are opened on the first poll (or taken from a trigger on the same connection that started within
    ``SHARED_SENDER_TTL_S``) and reused by every later one; a connection that cannot be resolved fails that poll,
    which the waiting loop turns into its event.
    """
    opened: tuple[HotSender, AsyncTokenBucket] | None = None

    async def poll() -> T:
        nonlocal opened
        if opened is None or opened[0].closed:
            opened = await _shared_poller(hook)
        return await read(*opened)

    return poll

"""The client factory and the per-event-loop resources: every HTTP client of the provider is built here.

One pooled ``httpx.Client`` per hook on the worker; one ``httpx.AsyncClient`` (on aiohttp's transport, which keeps
up at 64+ concurrent requests where httpx's own async pool does not) per connection and event loop, shared by every
trigger in a triggerer process. Both are built from one :class:`ClientSettings`, so they cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.hooks.connection import ClientSettings
from airflow_provider_baseten.hooks.ratelimit import AsyncTokenBucket, status_burst

if TYPE_CHECKING:
    import aiohttp

    from airflow_provider_baseten.hooks.addressing import Endpoint
    from airflow_provider_baseten.hooks.models import AsyncQueueStatus

TransportT = TypeVar("TransportT", httpx.BaseTransport, httpx.AsyncBaseTransport)

__all__ = [
    "build_aiohttp_session",
    "build_async_client",
    "build_client",
    "close_shared_async_clients",
    "shared_aiohttp_session",
    "shared_async_client",
    "shared_status_bucket",
    "ssl_context",
]


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


def _limits(max_connections: int) -> httpx.Limits:
    return httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)


def _timeout(settings: ClientSettings) -> httpx.Timeout:
    """The default timeouts; a call sets its own read timeout per request."""
    return httpx.Timeout(settings.timeout, connect=settings.connect_timeout)


def _mounts(settings: ClientSettings, make: Callable[[str], TransportT]) -> dict[str, TransportT | None]:
    """The proxy mounts of a client: one transport per distinct proxy URL; ``None`` (direct) for ``NO_PROXY``."""
    transports: dict[str, TransportT] = {}
    mounts: dict[str, TransportT | None] = {}
    for pattern, proxy in settings.proxy_map:
        if proxy is None:
            mounts[pattern] = None
        else:
            if proxy not in transports:
                transports[proxy] = make(proxy)
            mounts[pattern] = transports[proxy]
    return mounts


def _client_kwargs(
    settings: ClientSettings,
    transport: TransportT | None,
    transport_class: Callable[..., TransportT],
    max_connections: int,
) -> dict[str, Any]:
    """What both clients are built from: timeouts, TLS, pool limits and proxy mounts, all from ``settings``.

    ``trust_env`` is off: the environment's proxies were read once into the settings, so both clients agree.
    """
    verify = ssl_context(settings.verify)
    limits = _limits(max_connections)

    def make(proxy: str | None) -> TransportT:
        return transport_class(verify=verify, limits=limits, proxy=httpx.Proxy(proxy) if proxy else None)

    return {
        "timeout": _timeout(settings),
        "transport": transport or make(None),
        "mounts": None if transport else _mounts(settings, make),
        "follow_redirects": False,
        "trust_env": False,
    }


def build_client(
    settings: ClientSettings, *, transport: httpx.BaseTransport | None = None, max_connections: int = 64
) -> httpx.Client:
    """The worker's pooled client. No automatic redirects: an API call that redirects is an error."""
    return httpx.Client(**_client_kwargs(settings, transport, httpx.HTTPTransport, max_connections))


def _aiohttp_transport(**kwargs: Any) -> httpx.AsyncBaseTransport:
    return aiohttp_transport_class()(**kwargs)  # deferred: aiohttp is not needed at DAG-parse time


def build_async_client(
    settings: ClientSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    max_connections: int = 256,
) -> httpx.AsyncClient:
    """The triggerer's and batch operator's client, on aiohttp's transport unless one is given (tests).

    ``max_connections`` (at least 256) bounds the pool: the batch operator passes its concurrency. The transport
    names connection errors as httpx's own does (see :func:`aiohttp_transport_class`).
    """
    return httpx.AsyncClient(**_client_kwargs(settings, transport, _aiohttp_transport, max(256, max_connections)))


def httpx_error_class(cause: BaseException) -> type[httpx.TransportError] | None:
    """The httpx error class httpx's own transport raises for the aiohttp error ``cause`` (``None``: not one).

    Shared by the renaming transport below and the hot path (:mod:`~airflow_provider_baseten.hooks.hotpath`), so
    both name a failure alike and :mod:`~airflow_provider_baseten.hooks.retries` classifies it once.
    """
    import aiohttp

    connect_timeout = getattr(aiohttp, "ConnectionTimeoutError", ())
    if isinstance(cause, aiohttp.ClientHttpProxyError):  # the proxy answered; httpx calls a dead proxy ConnectError
        return httpx.ProxyError
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError
    if isinstance(cause, connect_timeout):
        return httpx.ConnectTimeout
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError
    if isinstance(cause, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return httpx.ReadError
    return None


def _renamed(exc: httpx.TransportError) -> httpx.TransportError | None:
    """The httpx error httpx's own transport raises for the aiohttp error behind ``exc`` (``None``: keep ``exc``).

    httpx-aiohttp maps every ``aiohttp.ClientConnectionError`` (a refused connection, a DNS failure, a proxy that
    is down, a disconnect mid-response) to ``httpx.ConnectTimeout``.
    """
    import aiohttp

    cause = exc.__cause__
    if not isinstance(cause, aiohttp.ClientError):
        return None
    renamed = httpx_error_class(cause)
    if renamed is None or type(exc) is renamed:
        return None
    return renamed(str(exc), request=exc._request)


@lru_cache(maxsize=1)
def aiohttp_transport_class() -> Callable[..., httpx.AsyncBaseTransport]:
    """httpx-aiohttp's transport, raising the httpx errors httpx's own transport would (built on first use)."""
    from httpx_aiohttp import AiohttpTransport

    class _RenamingStream(httpx.AsyncByteStream):
        def __init__(self, stream: httpx.AsyncByteStream) -> None:
            self._stream = stream

        async def __aiter__(self) -> AsyncIterator[bytes]:
            try:
                async for chunk in self._stream:
                    yield chunk
            except httpx.TransportError as exc:
                raise _renamed(exc) or exc from exc.__cause__

        async def aclose(self) -> None:
            await self._stream.aclose()

    class NamedErrorsAiohttpTransport(AiohttpTransport):  # type: ignore[misc]
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            try:
                response = await super().handle_async_request(request)
            except httpx.TransportError as exc:
                raise _renamed(exc) or exc from exc.__cause__
            stream = response.stream
            assert isinstance(stream, httpx.AsyncByteStream)
            response.stream = _RenamingStream(stream)
            return response

    return NamedErrorsAiohttpTransport


def proxy_for(settings: ClientSettings, url: httpx.URL) -> str | None:
    """The proxy a request to ``url`` goes through, matched as httpx matches its mounts (most specific first)."""
    from httpx._utils import URLPattern

    patterns = sorted((URLPattern(pattern), proxy) for pattern, proxy in settings.proxy_map)
    return next((proxy for pattern, proxy in patterns if pattern.matches(url)), None)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def transport_failure(exc: httpx.TransportError) -> tuple[str, str]:
    """``(kind, description)`` of a transport error, the same for httpx's transport and aiohttp's.

    The kinds are those of :class:`~airflow_provider_baseten.exceptions.BasetenConnectionError`.
    """
    chain = list(_chain(exc))
    if any(isinstance(err, socket.gaierror) or type(err).__name__ == "ClientConnectorDNSError" for err in chain):
        return "dns", "the host name could not be resolved (DNS)"
    if isinstance(exc, httpx.ProxyError):
        return "proxy", f"the proxy refused to forward it ({exc})"
    if any(isinstance(err, ConnectionRefusedError) for err in chain):
        return "refused", "the connection was refused (nothing listens on that port)"
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect_timeout", "no connection within the connect timeout"
    if isinstance(exc, httpx.PoolTimeout):
        return "pool_timeout", "no free connection in the client's pool within the timeout"
    if isinstance(exc, httpx.TimeoutException):
        return "read_timeout", "no answer within the read timeout"
    if any(isinstance(err, ssl.SSLError) for err in chain):
        return "tls", f"the TLS handshake failed ({exc})"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "disconnected", "the server closed the connection without a complete answer"
    return "network", f"{type(exc).__name__}: {exc}"


class _LoopResources:
    """Async clients and poll budgets of one event loop, keyed by connection settings.

    Released with the loop: an async generator registered with the loop is closed by ``shutdown_asyncgens()``
    (``asyncio.run``, ``asyncio.Runner``, pytest-asyncio and the triggerer all call it), and closing it closes the
    clients. Otherwise every ended loop (user code under ``asyncio.run``, ``airflow dags test``) would keep an open
    aiohttp session and its sockets, and warn ``Unclosed client session`` at exit.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.clients: dict[ClientSettings, httpx.AsyncClient] = {}
        #: The hot path's aiohttp sessions (trigger status polls), one per connection settings.
        self.sessions: dict[ClientSettings, aiohttp.ClientSession] = {}
        self.buckets: dict[ClientSettings, AsyncTokenBucket] = {}
        #: Recent queue depths per deployment: many triggers waiting on one deployment share one read.
        self.queue_depths: dict[tuple[ClientSettings, Endpoint], tuple[float, AsyncQueueStatus]] = {}
        self._loop = weakref.ref(loop)
        self._closer = self._close_with_loop()
        step = self._closer.asend(None)  # registers the generator with the running loop (its firstiter hook) ...
        with contextlib.suppress(StopIteration):
            step.send(None)  # ... and runs it to its ``yield``, so closing it runs the ``finally``

    async def _close_with_loop(self) -> AsyncGenerator[None]:
        try:
            yield
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close every client (idempotent) and forget this loop."""
        loop = self._loop()
        if loop is not None and _PER_LOOP.get(loop) is self:
            del _PER_LOOP[loop]
        clients, self.clients = list(self.clients.values()), {}
        for client in clients:
            await client.aclose()
        sessions, self.sessions = list(self.sessions.values()), {}
        for session in sessions:
            await session.close()


_PER_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopResources] = weakref.WeakKeyDictionary()


def _loop_resources() -> _LoopResources:
    loop = asyncio.get_running_loop()
    resources = _PER_LOOP.get(loop)
    if resources is None:
        for ended in [other for other in _PER_LOOP if other.is_closed()]:
            # A loop closed without shutdown_asyncgens(): nothing can close its clients any more; drop them.
            del _PER_LOOP[ended]
        resources = _PER_LOOP[loop] = _LoopResources(loop)
    return resources


def shared_async_client(settings: ClientSettings) -> httpx.AsyncClient:
    """The one ``AsyncClient`` for these settings in the running event loop (created on first use)."""
    resources = _loop_resources()
    client = resources.clients.get(settings)
    if client is None or client.is_closed:
        client = resources.clients[settings] = build_async_client(settings)
    return client


def build_aiohttp_session(settings: ClientSettings, *, max_connections: int = 256) -> aiohttp.ClientSession:
    """The hot path's ``aiohttp.ClientSession`` (call inside the event loop that will use it).

    Built from the same settings as the httpx clients: TLS context, pool size (at least 256, as
    :func:`build_async_client`), keep-alive, default timeouts; ``trust_env`` off because the proxies (connection,
    else ``HTTP(S)_PROXY``/``NO_PROXY``) were resolved into the settings and are chosen per URL by the sender
    (:func:`proxy_for`). Headers are the sender's (pre-built per endpoint), so the session adds none of its own.
    """
    import aiohttp

    connector = aiohttp.TCPConnector(
        limit=max(256, max_connections),
        ssl=ssl_context(settings.verify),
        keepalive_timeout=_limits(max_connections).keepalive_expiry or 5.0,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        timeout=aiohttp.ClientTimeout(sock_connect=settings.connect_timeout, sock_read=settings.timeout),
        raise_for_status=False,
    )
    # aiohttp silently sends an idempotent request (a status GET) again when the connection drops under it: that
    # resend bypasses the poll budget (and the retry table). Off, so the drop reaches the sender, which retries it
    # as a counted attempt. (Private flag; aiohttp's own test client clears it the same way.)
    session._retry_connection = False
    return session


def shared_aiohttp_session(settings: ClientSettings) -> aiohttp.ClientSession:
    """The one hot-path session for these settings in the running event loop (created on first use, closed with
    the loop like :func:`shared_async_client`)."""
    resources = _loop_resources()
    session = resources.sessions.get(settings)
    if session is None or session.closed:
        session = resources.sessions[settings] = build_aiohttp_session(settings)
    return session


def shared_status_bucket(
    settings: ClientSettings,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> AsyncTokenBucket:
    """The status-poll budget shared by every trigger on this connection in the running event loop.

    ``clock``/``sleep`` are those of the hook that creates it (tests inject fake ones); later callers share it.
    """
    resources = _loop_resources()
    bucket = resources.buckets.get(settings)
    if bucket is None:
        rate = settings.status_rate_limit
        bucket = AsyncTokenBucket(rate, burst=status_burst(rate), clock=clock, sleep=sleep)
        resources.buckets[settings] = bucket
    return bucket


async def close_shared_async_clients() -> None:
    """Close the running loop's shared clients (tests, benchmarks and the batch operator's end)."""
    resources = _PER_LOOP.get(asyncio.get_running_loop())
    if resources is not None:
        await resources.aclose()

"""The client factory and the per-event-loop resources: every HTTP client of the provider is built here.

One pooled ``httpx.Client`` per hook on the worker; one ``httpx.AsyncClient`` (on aiohttp's transport, which keeps
up at 64+ concurrent requests where httpx's own async pool does not) per connection and event loop, shared by every
trigger in a triggerer process. Both are built from one :class:`ClientSettings`, so they cannot drift apart.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.hooks.connection import ClientSettings
from airflow_provider_baseten.hooks.ratelimit import AsyncTokenBucket, status_burst

if TYPE_CHECKING:
    from airflow_provider_baseten.hooks.addressing import Endpoint
    from airflow_provider_baseten.hooks.models import AsyncQueueStatus

__all__ = [
    "build_async_client",
    "build_client",
    "close_shared_async_clients",
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
    resources = _PER_LOOP.pop(asyncio.get_running_loop(), None)
    if resources:
        for client in resources.clients.values():
            await client.aclose()

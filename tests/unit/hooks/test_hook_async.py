"""The async side: one shared client per settings and event loop, and the real aiohttp transport over loopback.

The loopback tests run tiny asyncio servers on 127.0.0.1 that misbehave on purpose, so the aiohttp exception
mapping (httpx-aiohttp reports a disconnect mid-response as ``httpx.ConnectTimeout``; the provider's transport
renames it ``RemoteProtocolError``, as httpx's own transport does) is exercised for real, not mocked.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from airflow_provider_baseten.exceptions import BasetenAmbiguousSubmitError, BasetenConnectionError
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.baseten import (
    BasetenHook,
    build_async_client,
    close_shared_async_clients,
    shared_async_client,
)
from airflow_provider_baseten.hooks.connection import ClientSettings

MODEL = Target.of(model_id="abc123")
SETTINGS = ClientSettings(api_key="k1")


# --- sharing -----------------------------------------------------------------------------------------------------


async def test_same_settings_share_one_client_within_a_loop() -> None:
    try:
        assert shared_async_client(SETTINGS) is shared_async_client(ClientSettings(api_key="k1"))
    finally:
        await close_shared_async_clients()


@pytest.mark.parametrize(
    "other",
    [ClientSettings(api_key="k2"), ClientSettings(api_key="k1", timeout=5), ClientSettings(api_key="k1", gateway="x")],
    ids=["key", "timeout", "gateway"],
)
async def test_different_settings_get_different_clients(other: ClientSettings) -> None:
    try:
        assert shared_async_client(SETTINGS) is not shared_async_client(other)
    finally:
        await close_shared_async_clients()


async def test_a_closed_client_is_replaced() -> None:
    first = shared_async_client(SETTINGS)
    await first.aclose()
    try:
        assert shared_async_client(SETTINGS) is not first
    finally:
        await close_shared_async_clients()


async def test_close_shared_async_clients_closes_them() -> None:
    client = shared_async_client(SETTINGS)
    await close_shared_async_clients()
    assert client.is_closed


def test_another_event_loop_gets_another_client() -> None:
    async def grab() -> httpx.AsyncClient:
        return shared_async_client(SETTINGS)

    loops = [asyncio.new_event_loop(), asyncio.new_event_loop()]
    try:
        first, second = (loop.run_until_complete(grab()) for loop in loops)
        assert first is not second
        assert loops[0].run_until_complete(grab()) is first
    finally:
        for loop in loops:
            loop.run_until_complete(close_shared_async_clients())
            loop.close()


def test_shared_client_outside_a_loop_fails_loudly() -> None:
    with pytest.raises(RuntimeError):
        shared_async_client(SETTINGS)


async def test_async_client_uses_the_aiohttp_transport_with_explicit_timeouts() -> None:
    from httpx_aiohttp import AiohttpTransport

    client = build_async_client(ClientSettings(api_key="k", timeout=99, connect_timeout=4))
    try:
        assert isinstance(client._transport, AiohttpTransport)
        assert client.timeout == httpx.Timeout(99, connect=4)
        assert client.follow_redirects is False
    finally:
        await client.aclose()


async def test_hook_calls_share_the_loop_client(hook: BasetenHook, baseten_api) -> None:
    await hook.aget_async_request(MODEL, "req1")
    await BasetenHook(customer_request_id="").aget_async_queue_status(MODEL)
    settings = await hook.aget_settings()
    assert shared_async_client(settings) is shared_async_client(settings)
    assert baseten_api.calls.call_count == 2


async def test_apredict_uses_a_given_client(hook: BasetenHook) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        result = await hook.apredict(MODEL, {"x": 1}, client=client)
    assert result.data == {"ok": True}
    assert seen[0].url == "https://model-abc123.api.baseten.co/production/predict"


async def test_status_polls_wait_for_the_shared_budget(hook: BasetenHook, baseten_api, mocker: Any) -> None:
    acquire = mocker.patch("airflow_provider_baseten.hooks.ratelimit.AsyncTokenBucket.acquire")
    await hook.aget_async_request(MODEL, "req1")
    await hook.aget_async_request(MODEL, "req1", rate_limited=False)
    await hook.aget_deployment(MODEL)
    assert acquire.await_count == 2


async def test_queue_depth_reads_are_shared_within_max_age(hook: BasetenHook, baseten_api) -> None:
    first = await hook.aget_async_queue_status(MODEL, max_age=30)
    again = await BasetenHook(customer_request_id="").aget_async_queue_status(MODEL, max_age=30)
    assert again == first
    assert baseten_api.calls.call_count == 1


async def test_queue_depth_without_max_age_always_reads(hook: BasetenHook, baseten_api) -> None:
    await hook.aget_async_queue_status(MODEL, max_age=30)
    await hook.aget_async_queue_status(MODEL)
    await hook.aget_async_queue_status(Target.of(model_id="other1"), max_age=30)
    assert baseten_api.calls.call_count == 3


# --- the real aiohttp transport on loopback ----------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


class Loopback:
    def __init__(self) -> None:
        self.connections = 0
        self.heads: list[bytes] = []

    def serve(self, respond: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                head, _ = await read_request(reader)
                self.heads.append(head)
                await respond(writer)
            finally:
                writer.close()

        return handle


@pytest.fixture
async def loopback(set_conn: Callable[..., None]) -> AsyncIterator[Callable[..., Awaitable[Loopback]]]:
    servers: list[asyncio.Server] = []

    async def start(respond: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> Loopback:
        state = Loopback()
        server = await asyncio.start_server(state.serve(respond), "127.0.0.1", 0)
        servers.append(server)
        set_conn(host=f"127.0.0.1:{server.sockets[0].getsockname()[1]}", extra={"max_retries": 2})
        return state

    yield start
    await close_shared_async_clients()
    for server in servers:
        server.close()
        await server.wait_closed()


async def hang_up(writer: asyncio.StreamWriter) -> None:
    """Read the request, then close without a byte of response (the replica died mid-predict)."""


async def half_response(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()


async def ok_json(writer: asyncio.StreamWriter) -> None:
    body = b'{"ok": true}'
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()


async def test_disconnect_after_sending_is_ambiguous_for_predict(
    loopback: Callable[..., Awaitable[Loopback]], make_hook: Callable[..., BasetenHook], sleeps: list[float]
) -> None:
    server = await loopback(hang_up)
    with pytest.raises(BasetenAmbiguousSubmitError) as info:
        await make_hook().apredict(MODEL, {"x": 1})
    assert server.connections == 1  # never sent twice
    assert sleeps == []
    # httpx-aiohttp calls it ConnectTimeout; the provider's transport names it as httpx's own transport does.
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)


async def test_truncated_response_is_ambiguous_for_predict(
    loopback: Callable[..., Awaitable[Loopback]], make_hook: Callable[..., BasetenHook]
) -> None:
    server = await loopback(half_response)
    with pytest.raises(BasetenAmbiguousSubmitError):
        await make_hook().apredict(MODEL, {"x": 1})
    assert server.connections == 1


async def test_disconnect_is_retried_for_a_status_poll(
    loopback: Callable[..., Awaitable[Loopback]], make_hook: Callable[..., BasetenHook], sleeps: list[float]
) -> None:
    server = await loopback(hang_up)
    with pytest.raises(BasetenConnectionError) as info:
        await make_hook().aget_async_request(MODEL, "req1", rate_limited=False)
    assert (info.value.kind, info.value.attempts) == ("disconnected", 3)
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)
    assert len(sleeps) == 2  # max_retries=2: three attempts
    assert server.connections >= 3  # aiohttp itself also re-sends an idempotent GET once after a disconnect


async def test_refused_connection_is_retried_even_for_predict(
    set_conn: Callable[..., None], make_hook: Callable[..., BasetenHook], sleeps: list[float]
) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    set_conn(host=f"127.0.0.1:{port}", extra={"max_retries": 2, "connect_timeout": 5})
    try:
        with pytest.raises(BasetenConnectionError) as info:
            await make_hook().apredict(MODEL, {"x": 1})
    finally:
        await close_shared_async_clients()
    assert (info.value.kind, info.value.attempts, info.value.never_sent) == ("refused", 3, True)
    assert isinstance(info.value.__cause__, httpx.ConnectError)  # httpx-aiohttp alone calls it ConnectTimeout
    assert len(sleeps) == 2  # retried: the request provably never left


async def test_gateway_host_header_reaches_the_server(
    loopback: Callable[..., Awaitable[Loopback]], make_hook: Callable[..., BasetenHook]
) -> None:
    server = await loopback(ok_json)
    result = await make_hook().apredict(Target.of(model_id="abc123", environment="staging"), {"x": 1})
    assert result.data == {"ok": True}
    request_line, *header_lines = server.heads[0].decode().split("\r\n")
    headers = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in header_lines if line}
    assert request_line == "POST /environments/staging/predict HTTP/1.1"
    assert headers["host"] == "model-abc123.api.baseten.co"


# --- per-loop resources end with their loop ------------------------------------------------------------------------


def test_a_loop_that_ends_closes_its_shared_client() -> None:
    from airflow_provider_baseten.hooks import clients

    async def grab() -> httpx.AsyncClient:
        return shared_async_client(SETTINGS)

    client = asyncio.run(grab())
    assert client.is_closed  # closed by asyncio.run's shutdown_asyncgens(), with its sockets
    assert not [loop for loop in clients._PER_LOOP if loop.is_closed()]


def test_a_loop_closed_without_shutdown_is_forgotten_on_the_next_use() -> None:
    from airflow_provider_baseten.hooks import clients

    async def grab() -> httpx.AsyncClient:
        return shared_async_client(SETTINGS)

    abandoned = asyncio.new_event_loop()
    abandoned.run_until_complete(grab())
    abandoned.close()  # no shutdown_asyncgens(): nothing could close its client
    assert abandoned in clients._PER_LOOP
    asyncio.run(grab())
    assert abandoned not in clients._PER_LOOP  # dropped, not kept (with its loop) forever

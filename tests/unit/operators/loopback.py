"""A real HTTP server on 127.0.0.1 for the batch operators' tests: their requests go out on the hot path (aiohttp),
which no transport mock sees, so a fake model answers them over loopback.

The server runs its own event loop in a thread. Each request is handed to the test's async handler as an
``httpx.Request`` (the ``Host`` header tells the Baseten host it was meant for); the ``httpx.Response`` it returns is
sent back. A handler that raises :class:`httpx.TransportError` gets the connection closed without an answer, as a
reset after the request reached the model does.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from aiohttp import web

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]
_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "content-encoding"}


class LoopbackServer:
    """``with LoopbackServer(handler) as server:`` serves ``handler`` at ``server.url`` until the block ends."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="loopback-server", daemon=True)
        self._server: web.Server | None = None
        self._listener: asyncio.AbstractServer | None = None

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = web.Server(self._handle)
        self._listener = await self._loop.create_server(self._server, "127.0.0.1", 0)
        port = self._listener.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        assert self._listener is not None
        assert self._server is not None
        self._listener.close()
        current = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not current:
                task.cancel()  # handlers still hanging (a test's "slow model")
        await self._server.shutdown(0.1)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        content = await request.read()
        outgoing = httpx.Request(
            request.method, f"http://{request.host}{request.path_qs}", headers=list(request.headers.items()),
            content=content,
        )  # fmt: skip
        try:
            answer = await self.handler(outgoing)
        except httpx.TransportError:
            assert request.transport is not None
            request.transport.abort()  # no answer at all: the client sees the connection reset
            raise
        headers: Any = [(k, v) for k, v in answer.headers.multi_items() if k.lower() not in _HOP_BY_HOP]
        return web.Response(status=answer.status_code, body=answer.content, headers=headers)

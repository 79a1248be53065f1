"""A loopback Baseten for the trigger tests: a real aiohttp server on 127.0.0.1 with respx-like routes.

The triggers poll through the hot path (``aiohttp``), which respx cannot see, so the tests answer over a real
socket instead. The connection points at the server as a gateway, so every request carries the Baseten host it was
meant for in ``Host`` and a route is written with the URL the hook builds for Baseten
(``https://model-abc123.api.baseten.co/async_request/req1``). An answer is an ``httpx.Response``, a function of
the request (sync or async) returning one, or an ``httpx.TransportError``, which hangs up without answering.
A request no route matches is answered 418 and fails the test at teardown.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import pytest
from aiohttp import web
from airflow_testing import KEY

Answer = httpx.Response | BaseException | Callable[[httpx.Request], Any]


class Route:
    """Requests of one method to one URL (or URL pattern), answered from a list (in order) or one repeated answer."""

    def __init__(self, method: str, url: str | None, regex: str | None) -> None:
        self.method = method
        self.url = url
        self.regex = re.compile(regex) if regex else None
        self.calls: list[httpx.Request] = []
        self._answers: list[Answer] | None = None
        self._repeat: Answer = httpx.Response(200)

    def matches(self, method: str, url: str) -> bool:
        if method != self.method:
            return False
        return bool(self.regex.match(url)) if self.regex else url == self.url

    def respond(self, status_code: int = 200, **kwargs: Any) -> Route:
        self._answers, self._repeat = None, httpx.Response(status_code, **kwargs)
        return self

    def mock(self, side_effect: Iterable[Answer] | Callable[[httpx.Request], Any]) -> Route:
        if callable(side_effect):
            self._answers, self._repeat = None, side_effect
        else:
            self._answers = list(side_effect)
        return self

    def next_answer(self) -> Answer:
        if self._answers is None:
            return self._repeat
        if not self._answers:
            raise AssertionError(f"{self.method} {self.url or self.regex}: more requests than scripted answers")
        return self._answers.pop(0)

    @property
    def call_count(self) -> int:
        return len(self.calls)

    @property
    def called(self) -> bool:
        return bool(self.calls)


class StatusServer:
    """The loopback server, and ``baseten_default`` pointed at it (no retries, a budget that never waits)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self.routes: list[Route] = []
        self.calls: list[httpx.Request] = []
        self.unmatched: list[str] = []
        self.errors: list[BaseException] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    # --- routes, as respx writes them ----------------------------------------------------------------------------

    def route(self, method: str, url: str | None = None, *, url__regex: str | None = None) -> Route:
        route = Route(method, url, url__regex)
        self.routes.append(route)
        return route

    def get(self, url: str | None = None, **kwargs: Any) -> Route:
        return self.route("GET", url, **kwargs)

    def post(self, url: str | None = None, **kwargs: Any) -> Route:
        return self.route("POST", url, **kwargs)

    def delete(self, url: str | None = None, **kwargs: Any) -> Route:
        return self.route("DELETE", url, **kwargs)

    def methods(self) -> list[str]:
        return [request.method for request in self.calls]

    # --- the connection ------------------------------------------------------------------------------------------

    def connect(self, conn_id: str = "baseten_default", **extra: Any) -> None:
        """Point ``conn_id`` at this server; ``extra`` overrides no retries and a huge poll budget."""
        extra = {"max_retries": 0, "status_rate_limit": 1_000_000, **extra}
        conn = {"conn_type": "baseten", "password": KEY, "host": self.url, "extra": extra}
        self._monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))

    # --- serving -------------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        url = f"https://{request.headers.get('Host', '')}{request.path_qs}"
        seen = httpx.Request(request.method, url, headers=dict(request.headers), content=await request.read())
        self.calls.append(seen)
        route = next((route for route in self.routes if route.matches(request.method, url)), None)
        if route is None:
            self.unmatched.append(f"{request.method} {url}")
            return web.Response(status=418, text="no route")
        route.calls.append(seen)
        try:
            answer = route.next_answer()
            if callable(answer) and not isinstance(answer, httpx.Response):
                answer = answer(seen)
                if inspect.isawaitable(answer):
                    answer = await answer
        except Exception as err:  # a broken script fails the test at teardown, not as a 500 the trigger retries
            self.errors.append(err)
            return web.Response(status=418, text=f"script error: {err}")
        if isinstance(answer, BaseException):
            assert request.transport is not None
            request.transport.close()  # hang up: the client sees the server disconnect
            return web.Response(status=200)
        assert isinstance(answer, httpx.Response)
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in ("content-length", "content-encoding")}
        return web.Response(status=answer.status_code, body=answer.content, headers=headers)

    async def __aenter__(self) -> StatusServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        from airflow_provider_baseten.hooks.clients import close_shared_async_clients

        await close_shared_async_clients()
        assert self._runner is not None
        await self._runner.cleanup()

    def check(self) -> None:
        """Fail on requests no route expected and on scripts that broke."""
        assert not self.unmatched, f"requests no route matched: {self.unmatched}"
        if self.errors:
            raise self.errors[0]

"""The hot path (``hooks.hotpath.HotSender``) on a real aiohttp session against loopback servers.

respx cannot see aiohttp, so every test here talks to a tiny server on 127.0.0.1: an ``aiohttp.web`` app answering
from a script, or a raw asyncio server that hangs up. The retry and ambiguity rows come from the hook's own table
(``test_hook_retries.CLASSIFICATION``), so the hot path and the hook are held to one table.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from aiohttp import web
from hook_testing import API_KEY, ASYNC_STATE, DEPLOYMENT
from test_hook_retries import CLASSIFICATION

from airflow_provider_baseten.exceptions import (
    BasetenAmbiguousSubmitError,
    BasetenAPIError,
    BasetenAuthError,
    BasetenConnectionError,
    BasetenModelError,
)
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.baseten import BasetenHook
from airflow_provider_baseten.hooks.calls import CUSTOMER_REQUEST_ID_HEADER, encode_json
from airflow_provider_baseten.hooks.clients import close_shared_async_clients, shared_aiohttp_session
from airflow_provider_baseten.hooks.hotpath import (
    MAX_CUSTOMER_REQUEST_ID,
    HotSender,
    customer_request_id,
    sync_route_idempotent,
    task_request_prefix,
)
from airflow_provider_baseten.hooks.retry_budget import RetryBudget

MODEL = Target.of(model_id="abc123")

#: (status, error_code, retried for a GET, retried for a predict POST) for every status row of the hook's table.
STATUS_ROWS = [
    pytest.param(exc.status_code, exc.error_code, get, post, id=name)
    for name, exc, get, post in CLASSIFICATION
    if type(exc) is BasetenAPIError and exc.status_code is not None
]


class Script:
    """What the loopback app answers, in order (the last answer repeats), and what it saw."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, Any, dict[str, str]]] = [(200, {"ok": True}, {})]
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []

    def answer(self, *answers: tuple[int, Any, dict[str, str]]) -> None:
        self.answers = list(answers)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.path, dict(request.headers), await request.read()))
        status, body, headers = self.answers[min(len(self.seen), len(self.answers)) - 1]
        return web.Response(status=status, body=json.dumps(body).encode(), headers=headers,
                            content_type="application/json")  # fmt: skip


@pytest.fixture
async def app(set_conn: Callable[..., None]) -> AsyncIterator[Script]:
    script = Script()
    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", script.handle)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    set_conn(host=f"127.0.0.1:{port}", extra={"max_retries": 1})
    yield script
    await close_shared_async_clients()
    await runner.cleanup()


async def sender_of(make_hook: Callable[..., BasetenHook], **kwargs: Any) -> HotSender:
    hook = make_hook()
    await hook.aget_settings()
    return HotSender(hook, shared_aiohttp_session(hook._settings), **kwargs)  # type: ignore[arg-type]


async def predict(sender: HotSender, payload: Any = None, **kwargs: Any) -> Any:
    call = sender.hook._inference_call(MODEL, None, None, "json")
    return await sender.predict(call, encode_json(payload or {"x": 1}), **kwargs)


async def poll(sender: HotSender) -> Any:
    return await sender.get_async_request(MODEL, "req1", budget=CountingBudget())


class CountingBudget:
    """Stands in for the status budget: counts the tokens taken."""

    def __init__(self) -> None:
        self.taken = 0
        self.limited: list[float | None] = []

    async def acquire(self) -> float:
        self.taken += 1
        return 0.0

    def rate_limited(self, retry_after: float | None, *, sent_at: float | None = None) -> None:
        self.limited.append(retry_after)


# --- one table: every status row of the hook's retry classification --------------------------------------------


@pytest.mark.parametrize(("status", "error_code", "get_retried", "post_retried"), STATUS_ROWS)
@pytest.mark.parametrize("kind", ["GET", "POST"])
async def test_status_rows_of_the_hooks_table(
    app: Script,
    make_hook: Callable[..., BasetenHook],
    sleeps: list[float],
    kind: str,
    status: int,
    error_code: str | None,
    get_retried: bool,
    post_retried: bool,
) -> None:
    body = {"error": "nope", **({"error_code": error_code} if error_code else {})}
    app.answer((status, body, {}), (200, ASYNC_STATE if kind == "GET" else {"ok": True}, {}))
    sender = await sender_of(make_hook)
    retried = get_retried if kind == "GET" else post_retried
    if retried:
        await (poll(sender) if kind == "GET" else predict(sender))
        assert len(app.seen) == 2
        assert len(sleeps) == 1
        return
    with pytest.raises((BasetenAPIError, BasetenAmbiguousSubmitError)) as info:
        await (poll(sender) if kind == "GET" else predict(sender))
    assert len(app.seen) == 1
    ambiguous = kind == "POST" and status in (502, 503)  # the hook's 502/503 rule for billed POSTs
    assert isinstance(info.value, BasetenAmbiguousSubmitError) is ambiguous


async def test_a_retried_429_honours_retry_after_and_shrinks_the_budget(
    app: Script, make_hook: Callable[..., BasetenHook], sleeps: list[float]
) -> None:
    app.answer((429, {"error": "slow down"}, {"Retry-After": "7"}), (200, ASYNC_STATE, {}))
    sender = await sender_of(make_hook)
    budget = CountingBudget()
    state = await sender.get_async_request(MODEL, "req1", budget=budget)  # type: ignore[arg-type]
    assert state.status == "QUEUED"
    assert budget.taken == 2  # every attempt takes a token, retries included
    assert budget.limited == [7.0]
    assert sleeps == [7.0]


async def test_errors_are_the_hooks_typed_errors_and_never_echo_the_key(
    app: Script, make_hook: Callable[..., BasetenHook]
) -> None:
    app.answer((401, {"error": f"bad key {API_KEY}"}, {"X-BASETEN-REQUEST-ID": "bt-9"}))
    sender = await sender_of(make_hook)
    with pytest.raises(BasetenAuthError) as info:
        await predict(sender)
    assert API_KEY not in str(info.value)
    assert "***" in str(info.value)
    assert info.value.request_id == "bt-9"


async def test_a_2xx_body_that_is_not_json_fails_as_the_hook_says(
    app: Script, make_hook: Callable[..., BasetenHook]
) -> None:
    sender = await sender_of(make_hook)
    app.answer((200, None, {}))
    assert (await predict(sender)).data is None  # JSON null
    with pytest.raises(BasetenModelError, match="AsyncRequestState"):
        await poll(sender)


# --- what is sent -----------------------------------------------------------------------------------------------


async def test_sends_the_hooks_headers_and_one_customer_request_id_per_item(
    app: Script, make_hook: Callable[..., BasetenHook]
) -> None:
    sender = await sender_of(make_hook)
    result = await predict(sender, {"n": 1}, request_id="dag.task.run.-1.1:0")
    await predict(sender, {"n": 2}, request_id="dag.task.run.-1.1:1")
    assert result.data == {"ok": True}
    (method, path, first, body), (_, _, second, _) = app.seen
    assert (method, path, json.loads(body)) == ("POST", "/production/predict", {"n": 1})
    assert first["Host"] == "model-abc123.api.baseten.co"
    assert first["Authorization"] == f"Api-Key {API_KEY}"
    assert first["Content-Type"] == "application/json"
    assert first["User-Agent"].startswith("python-httpx/")  # the same client identity as the hook's requests
    assert [first[CUSTOMER_REQUEST_ID_HEADER], second[CUSTOMER_REQUEST_ID_HEADER]] == [
        "dag.task.run.-1.1:0",
        "dag.task.run.-1.1:1",
    ]


async def test_the_deployment_read(app: Script, make_hook: Callable[..., BasetenHook]) -> None:
    app.answer((200, DEPLOYMENT, {}))
    sender = await sender_of(make_hook)
    budget = CountingBudget()
    deployment = await sender.get_deployment(MODEL, budget)  # type: ignore[arg-type]
    assert (deployment.status, budget.taken) == ("ACTIVE", 1)
    assert app.seen[0][:2] == ("GET", "/v1/models/abc123/deployments/production")
    assert app.seen[0][2]["Host"] == "api.baseten.co"


def test_request_ids_are_header_safe_and_bounded() -> None:
    prefix = task_request_prefix("dag", "task", "manual__2026-01-01T00:00:00+00:00", -1, 1)
    assert customer_request_id(prefix, 7) == "dag.task.manual__2026-01-01T00:00:00+00:00.-1.1:7"
    assert task_request_prefix("my dag", "t/1", "r", 0, 2) == "my_dag.t_1.r.0.2"
    long_one = task_request_prefix("d" * 200, "task", "run", 3, 1)
    other = task_request_prefix("d" * 200, "task", "run", 4, 1)
    assert long_one != other  # the hash keeps long prefixes apart
    assert len(customer_request_id(long_one, 10**9)) <= MAX_CUSTOMER_REQUEST_ID


@pytest.mark.parametrize(
    ("route", "idempotent"),
    [("v1/embeddings", True), ("/rerank/", True), ("classify", True), ("predict", False),
     ("v1/chat/completions", False), ("v1/completions", False)],
)  # fmt: skip
def test_sync_route_retry_rule(route: str, idempotent: bool) -> None:
    assert sync_route_idempotent(route) is idempotent


# --- the batch-wide retry budget --------------------------------------------------------------------------------


async def test_a_spent_retry_budget_stops_retries_across_calls(
    app: Script, make_hook: Callable[..., BasetenHook], sleeps: list[float]
) -> None:
    app.answer((503, {"error": "busy", "error_code": "model_unavailable"}, {}))
    budget = RetryBudget(fraction=0.0, minimum=1)
    sender = await sender_of(make_hook, retry_budget=budget)
    for _ in range(3):
        with pytest.raises(BasetenAPIError, match="503"):
            await predict(sender)
    assert len(app.seen) == 4  # 3 calls, one retry in all (max_retries=1 would have allowed three)
    assert len(sleeps) == 1
    assert (budget.requests, budget.retries, budget.refused) == (3, 1, 2)


async def test_rate_limits_spend_no_retry_budget(
    app: Script, make_hook: Callable[..., BasetenHook], sleeps: list[float]
) -> None:
    app.answer((429, {"error": "busy"}, {}), (200, {"ok": True}, {}))
    budget = RetryBudget(fraction=0.0, minimum=0)
    sender = await sender_of(make_hook, retry_budget=budget)
    assert (await predict(sender)).data == {"ok": True}  # as RetryBudget.gate rules for the hook
    assert (len(app.seen), budget.retries) == (2, 0)


# --- transport failures: named as the hook names them -------------------------------------------------------------


async def raw_server(respond: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> tuple[asyncio.Server, list[int]]:
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await reader.readuntil(b"\r\n\r\n")
            await respond(writer)
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), connections


async def hang_up(writer: asyncio.StreamWriter) -> None:
    """Close without a byte of answer: the replica died with the request."""


@pytest.mark.parametrize("kind", ["GET", "POST"])
async def test_a_disconnect_after_sending(
    set_conn: Callable[..., None], make_hook: Callable[..., BasetenHook], sleeps: list[float], kind: str
) -> None:
    server, connections = await raw_server(hang_up)
    set_conn(host=f"127.0.0.1:{server.sockets[0].getsockname()[1]}", extra={"max_retries": 1})
    try:
        sender = await sender_of(make_hook)
        if kind == "POST":
            with pytest.raises(BasetenAmbiguousSubmitError) as ambiguous:
                await predict(sender)
            assert isinstance(ambiguous.value.__cause__, httpx.RemoteProtocolError)
            assert len(connections) == 1  # a billed predict is never sent twice
        else:
            budget = CountingBudget()
            with pytest.raises(BasetenConnectionError) as failed:
                await sender.get_async_request(MODEL, "req1", budget=budget)  # type: ignore[arg-type]
            assert (failed.value.kind, failed.value.attempts) == ("disconnected", 2)
            assert len(sleeps) == 1
            # aiohttp's silent resend of an idempotent GET is off: every send is a counted, budgeted attempt.
            assert len(connections) == budget.taken == 2
    finally:
        await close_shared_async_clients()
        server.close()
        await server.wait_closed()


async def test_a_refused_connection_is_retried_even_for_a_predict(
    set_conn: Callable[..., None], make_hook: Callable[..., BasetenHook], sleeps: list[float]
) -> None:
    with socket.socket() as sock:  # free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    set_conn(host=f"127.0.0.1:{port}", extra={"max_retries": 2})
    try:
        sender = await sender_of(make_hook)
        with pytest.raises(BasetenConnectionError) as info:
            await predict(sender)
    finally:
        await close_shared_async_clients()
    assert (info.value.kind, info.value.attempts, info.value.never_sent) == ("refused", 3, True)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert "Hint: is the gateway running?" in str(info.value)
    assert len(sleeps) == 2


async def test_polls_of_many_request_ids_share_one_prepared_shape(
    app: Script, make_hook: Callable[..., BasetenHook]
) -> None:
    """A batch trigger polls thousands of ids: URL base, headers and proxy are built once per host, not per id."""
    sender = await sender_of(make_hook)
    app.answer((200, {**ASYNC_STATE, "request_id": "reqA"}, {}))
    for request_id in ("reqA", "reqB", "reqC"):
        await sender.get_async_request(MODEL, request_id, budget=CountingBudget())  # type: ignore[arg-type]
    assert [path for _, path, _, _ in app.seen] == ["/async_request/reqA", "/async_request/reqB", "/async_request/reqC"]
    assert len(sender._prepared) == 1


async def test_triggers_on_one_connection_share_one_lookup_and_sender(
    app: Script, make_hook: Callable[..., BasetenHook], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A triggerer starting 50 triggers resolves the connection once (about 1 ms each); later starters, after
    ``SHARED_SENDER_TTL_S``, resolve it again (a rotated key reaches them)."""
    import types

    from airflow.providers.common.compat import connection as compat_connection

    from airflow_provider_baseten.hooks import hotpath

    lookups: list[str] = []
    real_lookup = compat_connection.get_async_connection

    async def counting_lookup(conn_id: str) -> Any:
        lookups.append(conn_id)
        return await real_lookup(conn_id)

    monkeypatch.setattr(compat_connection, "get_async_connection", counting_lookup)
    now = [1000.0]
    monkeypatch.setattr(hotpath, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    app.answer((200, ASYNC_STATE, {}))

    def trigger_poll() -> Callable[[], Awaitable[Any]]:
        hook = make_hook()
        return hotpath.status_poll(hook, lambda sender, budget: sender.get_async_request(MODEL, "req1", budget))

    polls = [trigger_poll() for _ in range(50)]
    states = await asyncio.gather(*(poll() for poll in polls))
    assert {state.status for state in states} == {ASYNC_STATE["status"]}
    assert (len(lookups), len(app.seen)) == (1, 50)
    now[0] += hotpath.SHARED_SENDER_TTL_S + 1
    await trigger_poll()()
    assert len(lookups) == 2


def test_shared_pollers_of_closed_loops_are_dropped(set_conn: Callable[..., None]) -> None:
    """The cached openings refer to their event loop: a closed loop's entry goes when the next loop polls."""
    from airflow_provider_baseten.hooks import hotpath

    set_conn(host="127.0.0.1:9")

    async def open_one() -> None:
        hook = BasetenHook(customer_request_id="")
        await hotpath._shared_poller(hook)

    asyncio.run(open_one())
    asyncio.run(open_one())
    assert len([loop for loop in hotpath._POLLERS if loop.is_closed()]) <= 1

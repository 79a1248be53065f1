"""The ASGI application: routing on the ``Host`` header, auth, limits, faults, the journal, and admin routes.

Per request: parse the ``Host`` (:func:`~airflow_provider_baseten.emulator.routing.parse_host`), authenticate
(``Api-Key`` or ``Bearer``; 401), route to the service's handler (:mod:`.inference`, :mod:`.management` with 403 for
invoke-only keys, :mod:`.model_apis`), apply the route's rate limit (429) and fault plan, run the handler, answer,
and journal it. ``/_emulator/...`` (any host, no key) is the emulator's own admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.responses import Response

from airflow_provider_baseten.emulator import inference, management, model_apis
from airflow_provider_baseten.emulator.clock import Stopped
from airflow_provider_baseten.emulator.faults import RESET_AFTER, RESET_BEFORE, STATUS_BODIES, Fault
from airflow_provider_baseten.emulator.journal import JournalEntry
from airflow_provider_baseten.emulator.limits import retry_after_seconds, retry_hint
from airflow_provider_baseten.emulator.responses import BodyTooLarge, Call, Handler, error, json_response
from airflow_provider_baseten.emulator.state import EmulatorOptions, EmulatorState

if TYPE_CHECKING:
    from starlette.types import Message, Receive, Scope, Send

    from airflow_provider_baseten.emulator.routing import ParsedHost
    from airflow_provider_baseten.emulator.world import KeyScope, World

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = b"x-baseten-request-id"
CUSTOMER_REQUEST_ID_HEADER = b"x-baseten-customer-request-id"
#: Journal status of a request answered with a connection reset.
RESET_STATUS = 0


class _Reset:
    """The answer "reset the connection" (a fault), in place of a response."""


RESET = _Reset()


@functools.lru_cache(maxsize=4096)
def _parse_host(host: str) -> ParsedHost | None:
    from airflow_provider_baseten.emulator.routing import parse_host

    return parse_host(host)


def _authenticate(keys: dict[str, KeyScope], header: str) -> KeyScope | None:
    scheme, _, key = header.partition(" ")
    if scheme.lower() not in ("api-key", "bearer"):
        return None
    return keys.get(key.strip())


def _fault_response(fault: Fault) -> Response:
    status = fault.status or 500
    message, code = STATUS_BODIES.get(status, (f"Injected fault {status}", "internal_baseten_error"))
    headers = {"Retry-After": retry_after_seconds(fault.retry_after)} if fault.retry_after is not None else None
    return error(status, message, code, headers=headers)


def _rate_limited(call: Call, wait: float) -> Response:
    headers, extra = retry_hint(call.state.limits.retry_after, wait)
    return error(429, f"Rate limit exceeded for {call.route}; slow down.", "rate_limited", headers=headers, extra=extra)


async def _reset_connection(send: Send) -> None:
    """Abort the TCP connection (RST) without an answer. Needs uvicorn's protocol objects (its ``send`` is a bound
    method of the request cycle, which holds the transport); on another server the fault raises instead."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("connection reset is not supported by this server")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    for _ in range(10):  # let uvicorn see the disconnect before it looks at our (absent) answer
        if getattr(cycle, "disconnected", True):
            break
        await asyncio.sleep(0)


class EmulatorApp:
    """The ASGI app. ``state`` is swapped wholesale by :meth:`reset`; requests keep the state they started with."""

    def __init__(self, world: World, options: EmulatorOptions) -> None:
        self.world = world
        self.options = options
        self.state: EmulatorState | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    # --- lifecycle of the app ----------------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.loop = asyncio.get_running_loop()
                self.state = self._new_state(self.world, self.options)
                _warm_up()
                await send({"type": "lifespan.startup.complete"})
                self.ready.set()
            elif message["type"] == "lifespan.shutdown":
                if self.state is not None:
                    await self.state.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    def _new_state(world: World, options: EmulatorOptions) -> EmulatorState:
        state = EmulatorState(world, options)
        state.start()
        return state

    async def reset(self, world: World | None = None, options: EmulatorOptions | None = None) -> EmulatorState:
        """A fresh state from ``world``/``options`` (default: those the app was started with)."""
        old = self.state
        self.state = self._new_state(world or self.world, options or self.options)
        if old is not None:
            await old.close()
        return self.state

    # --- requests ----------------------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        assert state is not None, "the emulator has not started"
        arrived = state.scheduler.now()
        path: str = scope["path"]
        if path.startswith("/_emulator/"):
            await self._admin(scope, receive, send)
            return
        host = auth = ""
        for key, value in scope["headers"]:
            if key == b"host":
                host = value.decode("latin-1")
            elif key == b"authorization":
                auth = value.decode("latin-1")
        call = Call(state, scope["method"], host, path, scope["query_string"], scope["headers"], receive, arrived)
        try:
            answer = await self._answer(call, auth)
        except Stopped:
            answer = error(503, "The emulator is stopping or was reset.", "model_unavailable")
        except BodyTooLarge:
            answer = error(
                413, f"Request body exceeds the {state.limits.edge_payload_bytes} byte limit.", "payload_too_large"
            )
        except Exception as err:
            log.exception("Emulator: %s %s%s failed", call.method, host, path)
            answer = error(500, f"Internal emulator error: {type(err).__name__}: {err}", "internal_baseten_error")
        status = RESET_STATUS
        if isinstance(answer, _Reset):
            await _reset_connection(send)
        else:
            status = answer.status_code
            await answer(scope, receive, send)
        customer_id = call.header(CUSTOMER_REQUEST_ID_HEADER)
        entry = JournalEntry(
            time.time(), call.method, host, path, status, call.model_ran, call.route, call.inputs, customer_id
        )
        state.journal.record(entry)

    async def _answer(self, call: Call, auth: str) -> Response | _Reset:
        parsed = _parse_host(call.host)
        if parsed is None:
            return error(404, f"Unknown host {call.host!r}: expected a Baseten host such as model-<id>.api.baseten.co.")
        scope = _authenticate(call.state.keys, auth)
        if scope is None:
            missing = "Missing" if not auth else "Invalid"
            return error(401, f"{missing} API key: send 'Authorization: Api-Key <key>' (or Bearer).", "unauthorized")
        routed: Handler | Response
        if parsed.service == "target":
            routed = inference.route(call, parsed)
        elif parsed.service == "management":
            if scope != "full":
                return error(403, "This API key can invoke models but cannot use the management API.", "unauthorized")
            routed = management.route(call)
        else:
            routed = model_apis.route(call)
        response = await self._serve(call, routed)
        if isinstance(response, Response) and parsed.service != "management":
            response.raw_headers.append((REQUEST_ID_HEADER, os.urandom(16).hex().encode()))
        return response

    async def _serve(self, call: Call, routed: Handler | Response) -> Response | _Reset:
        """Rate limit, faults before the model, the handler, faults after it."""
        if isinstance(routed, Response):
            return routed
        state = call.state
        wait = state.limiter.check(call.route)
        if wait is not None:
            return _rate_limited(call, wait)
        fault = state.faults.decide(call.route, call.target_id) if state.faults.active else None
        if fault is not None and not fault.after_model:
            if fault.action == RESET_BEFORE:
                return RESET
            if fault.status is not None:
                return _fault_response(fault)
        response: Response = await routed(call)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.after_model:
                if fault.action == RESET_AFTER:
                    return RESET
                if fault.status is not None:
                    return _fault_response(fault)
        return response

    # --- /_emulator/ --------------------------------------------------------------------------------------------

    async def _admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        assert state is not None
        method, name = scope["method"], scope["path"].removeprefix("/_emulator/").strip("/")
        query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
        body = await _read_json(receive)
        try:
            response = await self._admin_answer(state, method, name, query, body)
        except (ValueError, TypeError, KeyError) as err:
            response = error(400, f"Invalid admin request: {err}")
        await response(scope, receive, send)

    async def _admin_answer(
        self, state: EmulatorState, method: str, name: str, query: dict[str, str], body: Any
    ) -> Response:
        if name == "health" and method == "GET":
            return json_response(
                {
                    "status": "ok",
                    "emulated_time": state.clock.now(),
                    "time_scale": state.clock.time_scale,
                    "manual_clock": state.options.manual_clock,
                    "visible_floor": state.options.visible_floor,
                }
            )
        if name == "journal" and method == "GET":
            criteria: dict[str, Any] = {k: query[k] for k in ("method", "path_suffix", "host", "route") if k in query}
            if "status" in query:
                criteria["status"] = int(query["status"])
            entries = state.journal.filter(**criteria)
            limit = int(query.get("limit", 1000))
            return json_response({"total": len(entries), "entries": state.journal.as_json(entries[-limit:])})
        if name == "counters" and method == "GET":
            counters = state.journal.counters()
            counters["async_pending"] = state.queue.pending
            counters["async_requests"] = len(state.queue.records)
            return json_response(counters)
        if name == "faults":
            if method == "POST":
                state.faults.load(body)
            elif method == "DELETE":
                state.faults.clear()
            return json_response({"plans": state.faults.as_json()})
        if name == "advance" and method == "POST":
            await state.scheduler.advance(float((body or {}).get("seconds", 0)))
            return json_response({"emulated_time": state.clock.now()})
        if name == "reset" and method == "POST":
            await self.reset()
            return json_response({"status": "reset"})
        if name == "requests" and method == "GET":
            return json_response({"requests": [r.as_json() for r in state.queue.records.values()]})
        if name == "webhooks" and method == "GET":
            deliveries = [
                {
                    "request_id": d.request_id,
                    "url": d.url,
                    "attempts": d.attempts,
                    "sent": d.sent,
                    "delivered": d.delivered,
                }
                for d in state.webhooks.deliveries
            ]
            return json_response({"deliveries": deliveries})
        return error(404, f"No admin route {method} /_emulator/{name}.")


async def _read_json(receive: Receive) -> Any:
    chunks: list[bytes] = []
    more = True
    while more:
        message: Message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    raw = b"".join(chunks)
    return json.loads(raw) if raw.strip() else None


def _warm_up() -> None:
    """Build the pydantic validators now, not on the first async submit (they are ``defer_build``)."""
    from airflow_provider_baseten.hooks.models import AsyncPredictRequest, ChatCompletionRequest

    AsyncPredictRequest.model_validate({"model_input": {}})
    with contextlib.suppress(ValueError):
        ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}]})

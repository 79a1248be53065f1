"""The request context handlers share and the few response shapes Baseten uses (JSON, ``{"error": ...}``, streams)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.responses import Response, StreamingResponse

if TYPE_CHECKING:
    from starlette.types import Receive

    from airflow_provider_baseten.emulator.behaviours import Reply
    from airflow_provider_baseten.emulator.clock import Scheduler
    from airflow_provider_baseten.emulator.lifecycle import DeploymentRuntime, TargetRuntime
    from airflow_provider_baseten.emulator.state import EmulatorState


class BodyTooLarge(Exception):
    """The request body is over the edge limit (413)."""


@dataclass
class Call:
    """One request as the handlers see it, plus what the dispatcher journals about it."""

    state: EmulatorState
    method: str
    host: str
    path: str
    query_string: bytes
    headers: list[tuple[bytes, bytes]]
    receive: Receive
    arrived: float | None = None
    """Emulated time the request reached the app: a model's latency counts from here (a deadline, not a sleep
    after the emulator's own parsing and queueing). ``None`` (a call built without it): from when the model runs."""
    route: str = "unknown"
    target_id: str | None = None
    model_ran: bool = False
    target: TargetRuntime | None = None
    deployment: DeploymentRuntime | None = None
    params: tuple[str, ...] = ()
    inputs: int = 0
    """Inputs the request carried (texts of a BEI request), for the journal."""
    _body: bytes | None = field(default=None, repr=False)

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    async def body(self) -> bytes:
        """The whole body (read once); :class:`BodyTooLarge` past the edge limit."""
        if self._body is None:
            limit = self.state.limits.edge_payload_bytes
            chunks: list[bytes] = []
            size = 0
            more = True
            while more:
                message = await self.receive()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(size)
                chunks.append(chunk)
                more = message.get("more_body", False)
            self._body = b"".join(chunks)
        return self._body

    async def json(self) -> Any:
        """The body as JSON; the raw bytes when it is not JSON (Baseten forwards bodies verbatim); ``None`` if empty."""
        raw = await self.body()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw


Handler = Callable[[Call], Awaitable[Response]]


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json.dumps(payload, separators=(",", ":")).encode(),
        status_code=status,
        headers=dict(headers) if headers else None,
        media_type="application/json",
    )


def error(
    status: int,
    message: str,
    code: str | None = None,
    *,
    detail: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """Baseten's error body: ``{"error": message}`` plus ``error_code``/``detail`` (the spec's ``ErrorResponse``)."""
    body: dict[str, Any] = {"error": message}
    if code:
        body["error_code"] = code
    if detail:
        body["detail"] = detail
    body.update(extra or {})
    return json_response(body, status, headers)


def reply_response(reply: Reply, scheduler: Scheduler) -> Response:
    """A model's :class:`Reply` as HTTP: JSON, raw bytes/text, or a chunked stream paced in emulated time."""
    headers = dict(reply.headers) if reply.headers else None
    if reply.chunks is not None:
        return StreamingResponse(
            _paced(reply.chunks, reply.chunk_interval, scheduler),
            status_code=reply.status,
            headers=headers,
            media_type=reply.content_type,
        )
    if isinstance(reply.body, bytes | str):
        return Response(reply.body, status_code=reply.status, headers=headers, media_type=reply.content_type)
    return json_response(reply.body, reply.status, headers)


async def _paced(chunks: Any, interval: float, scheduler: Scheduler) -> AsyncIterator[bytes]:
    for index, chunk in enumerate(chunks):
        if index and interval > 0:
            await scheduler.sleep(interval)
        yield chunk.encode() if isinstance(chunk, str) else chunk

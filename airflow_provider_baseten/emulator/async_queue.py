"""Async inference: per-deployment queues, the run with retries, webhooks, expiry, cancel and status retention.

Each deployment has a queue ordered by ``priority`` (0 first) then arrival. Requests run at most
``async_concurrency`` (a world option; default ``predict_concurrency``) at a time, and only on an ``ACTIVE``
deployment: a queue on a scaled-to-zero deployment wakes it. A request still ``QUEUED`` after
``max_time_in_queue_seconds`` (cold-start time counts) is ``EXPIRED``. A run answers like a sync predict; a
500/502/503/504 is retried per ``inference_retry_config`` (exponential backoff from ``initial_delay_ms`` capped at
``max_delay_ms``); a run over one hour fails with ``MODEL_PREDICT_TIMEOUT``. With a webhook the request stays
``IN_PROGRESS`` until delivery ends: ``SUCCEEDED``, or ``WEBHOOK_FAILED`` (the output is lost). Baseten keeps a
status one hour after completion; then the id is unknown. Submits beyond the organization's ``QUEUED`` +
``IN_PROGRESS`` cap (``Limits.org_queue_limit``) answer 429.

Built for tens of thousands of requests: a status read is a dict lookup, the queue counts are kept as requests
move (never recounted), a submit or a start is a heap push or pop, and a canceled or expired request leaves its
heap entry to be skipped when popped; nothing scans all requests per request or per clock tick.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_baseten.emulator.behaviours import RETRYABLE_MODEL_STATUSES, Reply
from airflow_provider_baseten.emulator.clock import Stopped
from airflow_provider_baseten.emulator.lifecycle import DeploymentRuntime
from airflow_provider_baseten.hooks.models import AsyncErrorCode, AsyncPredictRequest, AsyncRequestStatus, WebhookStatus

if TYPE_CHECKING:
    from airflow_provider_baseten.emulator.clock import Scheduler, Timer
    from airflow_provider_baseten.emulator.webhooks import WebhookSender

log = logging.getLogger(__name__)

RETENTION_SECONDS = 3600.0
RUN_LIMIT_SECONDS = 3600.0

_Status = AsyncRequestStatus


def iso(epoch: float) -> str:
    """UTC ISO 8601 with a ``Z``, as Baseten writes timestamps."""
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class AsyncRecord:
    """One async request. ``output`` is kept for tests only: Baseten never returns it (webhook only)."""

    request_id: str
    deployment: DeploymentRuntime
    request: AsyncPredictRequest
    created_at: float
    status: AsyncRequestStatus = _Status.QUEUED
    status_at: float = 0.0
    webhook_status: WebhookStatus = WebhookStatus.NO_WEBHOOK_PROVIDED
    errors: list[dict[str, str]] = field(default_factory=list)
    attempts: int = 0
    output: Any = None
    expiry: Timer | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return self.deployment.target.kind

    @property
    def target_id(self) -> str:
        return self.deployment.target.id

    def as_json(self) -> dict[str, Any]:
        """``GET /async_request/{id}`` (``AsyncRequestStatusResponse``)."""
        return {
            "request_id": self.request_id,
            f"{self.kind}_id": self.target_id,
            "deployment_id": self.deployment.spec.id,
            "status": self.status.value,
            "webhook_status": self.webhook_status.value,
            "created_at": iso(self.created_at),
            "status_at": iso(self.status_at),
            "errors": list(self.errors),
        }


def _error_code(status: int) -> AsyncErrorCode:
    if status in (400, 422):
        return AsyncErrorCode.MODEL_INVALID_INPUT
    if status in (503, 529):
        return AsyncErrorCode.MODEL_UNAVAILABLE
    if status == 504:
        return AsyncErrorCode.MODEL_PREDICT_TIMEOUT
    return AsyncErrorCode.MODEL_PREDICT_ERROR


def _message(reply: Reply) -> str:
    body = reply.body
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    text = body.decode(errors="replace") if isinstance(body, bytes) else json.dumps(body) if body is not None else ""
    return f"model answered {reply.status}: {text[:500]}"


def _output(reply: Reply) -> Any:
    if reply.chunks is not None:  # async requests do not stream: the chunks arrive joined
        return "".join(c.decode() if isinstance(c, bytes) else c for c in reply.chunks)
    return reply.body.decode(errors="replace") if isinstance(reply.body, bytes) else reply.body


class AsyncQueue:
    """Every async request of the emulator, by id, and the queues of the deployments they wait on."""

    def __init__(
        self,
        scheduler: Scheduler,
        webhooks: WebhookSender,
        *,
        retention_seconds: float = RETENTION_SECONDS,
        run_limit_seconds: float = RUN_LIMIT_SECONDS,
    ) -> None:
        self.scheduler = scheduler
        self.webhooks = webhooks
        self.retention_seconds = retention_seconds
        self.run_limit_seconds = run_limit_seconds
        self.records: dict[str, AsyncRecord] = {}
        self.pending = 0
        """``QUEUED`` + ``IN_PROGRESS`` requests (the organization limit counts these)."""
        self._arrival = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dispatchers: dict[str, Callable[[], None]] = {}
        self._closed = False

    # --- API handlers ------------------------------------------------------------------------------------------

    def submit(self, deployment: DeploymentRuntime, request: AsyncPredictRequest) -> AsyncRecord:
        now = self.scheduler.now()
        record = AsyncRecord(
            uuid.uuid4().hex,
            deployment,
            request,
            created_at=now,
            status_at=now,
            webhook_status=WebhookStatus.PENDING if request.webhook_endpoint else WebhookStatus.NO_WEBHOOK_PROVIDED,
        )
        self.records[record.request_id] = record
        self.pending += 1
        heapq.heappush(deployment.queue, (request.priority, next(self._arrival), record.request_id))
        deployment.queued += 1
        deployment.touch()
        record.expiry = self.scheduler.call_later(request.max_time_in_queue_seconds, lambda: self._expire(record))
        self._dispatch(deployment)
        return record

    def get(self, request_id: str) -> AsyncRecord | None:
        return self.records.get(request_id)

    def cancel(self, record: AsyncRecord) -> tuple[bool, str]:
        """Baseten cancels only ``QUEUED`` requests."""
        if record.status is not _Status.QUEUED:
            return False, f"Request is {record.status.value}; only QUEUED requests can be canceled."
        self._leave_queue(record)
        self._finish(record, _Status.CANCELED, webhook=WebhookStatus.CANCELED)
        return True, "Request canceled."

    @staticmethod
    def queue_status(deployment: DeploymentRuntime) -> dict[str, Any]:
        """``GET /async_queue_status`` (for a chain, ``model_id`` carries the chain id: the spec requires it)."""
        return {
            "model_id": deployment.target.id,
            "deployment_id": deployment.spec.id,
            "num_queued_requests": deployment.queued,
            "num_in_progress_requests": deployment.running,
        }

    # --- the queue -----------------------------------------------------------------------------------------

    @staticmethod
    def concurrency(deployment: DeploymentRuntime) -> int:
        """Async requests a deployment runs at once (``async_concurrency``, else ``predict_concurrency``)."""
        return deployment.spec.async_concurrency or deployment.spec.predict_concurrency

    def _dispatcher(self, deployment: DeploymentRuntime) -> Callable[[], None]:
        key = f"{deployment.target.kind}/{deployment.spec.id}"
        if key not in self._dispatchers:
            self._dispatchers[key] = lambda: self._dispatch(deployment)
        return self._dispatchers[key]

    def _dispatch(self, deployment: DeploymentRuntime) -> None:
        """Start queued requests while the deployment has free slots; wake it when it has none running."""
        while deployment.queue and not self._closed:
            if not deployment.ready:
                problem = deployment.unavailable()
                if problem is None:
                    deployment.when_ready(self._dispatcher(deployment))
                    return
                if problem[0] != 503:
                    return  # inactive or failed: requests wait, then expire
            if deployment.running >= self.concurrency(deployment):
                return
            _, _, request_id = heapq.heappop(deployment.queue)
            record = self.records.get(request_id)
            if record is None or record.status is not _Status.QUEUED:
                continue  # canceled or expired while queued
            deployment.queued -= 1
            deployment.running += 1
            self._set(record, _Status.IN_PROGRESS)
            if record.expiry:
                record.expiry.cancel()
            task = asyncio.get_running_loop().create_task(self._run(record))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, record: AsyncRecord) -> None:
        deployment = record.deployment
        try:
            status, errors, output = await self._attempts(record)
            record.errors, record.output = errors, output
            webhook = record.request.webhook_endpoint
            if webhook:
                delivered = await self.webhooks.deliver(webhook, self._webhook_body(record))
                record.webhook_status = WebhookStatus.SUCCEEDED if delivered else WebhookStatus.FAILED
                if status is _Status.SUCCEEDED and not delivered:
                    status = _Status.WEBHOOK_FAILED
            self._finish(record, status)
        except (asyncio.CancelledError, Stopped):
            raise
        except Exception as err:  # a bug in a behaviour must not wedge the queue
            log.exception("Emulator: async request %s crashed", record.request_id)
            record.errors = [{"code": AsyncErrorCode.INTERNAL_SERVER_ERROR.value, "message": str(err)}]
            self._finish(record, _Status.FAILED)
        finally:
            deployment.running -= 1
            deployment.touch()
            self._dispatch(deployment)

    async def _attempts(self, record: AsyncRecord) -> tuple[AsyncRequestStatus, list[dict[str, str]], Any]:
        deployment = record.deployment
        config = record.request.inference_retry_config
        attempts = config.max_attempts if config else 1
        delay_ms = config.initial_delay_ms if config else 0
        route = "predict" if record.kind == "model" else "run_remote"
        reply: Reply | None = None
        for attempt in range(1, attempts + 1):
            record.attempts = attempt
            problem = deployment.unavailable()
            if problem:
                reply = Reply({"error": problem[1]}, status=problem[0])
            else:
                reply = await deployment.invoke(
                    record.request.model_input, route=route, time_limit=self.run_limit_seconds, is_async=True
                )
            if reply is None:
                message = f"The model ran longer than the {self.run_limit_seconds:.0f} s limit of async requests."
                return _Status.FAILED, [{"code": AsyncErrorCode.MODEL_PREDICT_TIMEOUT.value, "message": message}], None
            if reply.ok:
                return _Status.SUCCEEDED, [], _output(reply)
            if reply.status not in RETRYABLE_MODEL_STATUSES or attempt == attempts:
                break
            assert config is not None
            await self.scheduler.sleep(min(delay_ms, config.max_delay_ms) / 1000)
            delay_ms = max(1, delay_ms) * 2
        assert reply is not None
        return _Status.FAILED, [{"code": _error_code(reply.status).value, "message": _message(reply)}], None

    def _webhook_body(self, record: AsyncRecord) -> dict[str, Any]:
        body: dict[str, Any] = {
            "request_id": record.request_id,
            "model_id": record.target_id,
            "deployment_id": record.deployment.spec.id,
            "type": "async_request_completed",
            "time": iso(time.time()),  # wall time, as a receiver's replay check expects, however fast the clock runs
            "data": record.output if not record.errors else None,
            "errors": record.errors,
        }
        if record.kind == "chain":
            body["chain_id"] = record.target_id
        return body

    def _expire(self, record: AsyncRecord) -> None:
        if record.status is not _Status.QUEUED:
            return
        deployment = record.deployment
        self._leave_queue(record)
        if not deployment.ready:
            record.errors = [
                {
                    "code": AsyncErrorCode.MODEL_NOT_READY.value,
                    "message": f"Deployment {deployment.spec.id} was not ready ({deployment.status.value}) within "
                    f"max_time_in_queue_seconds={record.request.max_time_in_queue_seconds}.",
                }
            ]
        self._finish(record, _Status.EXPIRED, webhook=WebhookStatus.CANCELED)

    @staticmethod
    def _leave_queue(record: AsyncRecord) -> None:
        record.deployment.queued -= 1  # its heap entry is skipped when popped
        if record.expiry:
            record.expiry.cancel()

    def _set(self, record: AsyncRecord, status: AsyncRequestStatus) -> None:
        record.status = status
        record.status_at = self.scheduler.now()

    def _finish(self, record: AsyncRecord, status: AsyncRequestStatus, *, webhook: WebhookStatus | None = None) -> None:
        if webhook is not None and record.webhook_status is WebhookStatus.PENDING:
            record.webhook_status = webhook
        self._set(record, status)
        self.pending -= 1
        retention = self.scheduler.hold(self.retention_seconds)  # a poller must see the end state before it goes
        self.scheduler.call_later(retention, lambda: self.records.pop(record.request_id, None))

    def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()

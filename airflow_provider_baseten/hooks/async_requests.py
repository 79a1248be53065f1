"""What an async request's status means for a task, and the one waiting loop the worker and the triggerer share.

The meaning of each status is decided here, once: only ``SUCCEEDED`` finishes a task green; ``WEBHOOK_FAILED`` fails
unless the caller opts out; ``FAILED``, ``EXPIRED``, ``CANCELED``, a 404 ("status no longer available") and any
status this provider does not know fail. The operator, the sensor and the trigger import these helpers and never
compare status strings of their own (no operator/sensor cross-import).

Events (the dicts a trigger yields and ``execute_complete`` receives) are allow-listed::

    {"status": "success" | "failed" | "timeout" | "lost" | "error",
     "request_id": str, "request_status": str | None, "message": str, "manifest": {...}}

The waiting loop is written once, without I/O (:func:`wait_plan`): it asks its driver to poll, to fetch the queue
depth or to sleep, and decides everything else (deadline first on every turn, jittered intervals, backoff for
transient errors within a budget, state-change and once-a-minute progress logs). :func:`wait_sync` drives it on the
worker with the sync client, :func:`wait_async` in the triggerer with the shared hot-path sender and poll budget.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_baseten.exceptions import (
    BasetenAsyncRequestError,
    BasetenConfigError,
    BasetenNotFoundError,
)
from airflow_provider_baseten.hooks._stepper import Read, Sleep, adrive, drive, time_left
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.statuses import AsyncRequestStatus

if TYPE_CHECKING:
    from airflow_provider_baseten.hooks.baseten import BasetenHook
    from airflow_provider_baseten.hooks.models import (
        AsyncPredictRequest,
        AsyncQueueStatus,
        AsyncRequestState,
        CancelAsyncResponse,
    )

__all__ = [
    "EVENT_STATUSES",
    "TRIGGER_FIELDS",
    "AsyncRequestWatch",
    "BasetenAsyncRequestTimeoutError",
    "build_async_request",
    "build_manifest",
    "event_for_state",
    "is_terminal",
    "log_cancel_result",
    "make_event",
    "manifest_or_raise",
    "validate_event",
    "wait_async",
    "wait_sync",
]

EventStatus = Literal["success", "failed", "timeout", "lost", "error"]
#: Every status a trigger event may carry; anything else (or no event) fails the task.
EVENT_STATUSES: frozenset[str] = frozenset({"success", "failed", "timeout", "lost", "error"})

#: Seconds between progress lines while waiting (state changes are logged as they happen).
PROGRESS_EVERY_S = 60.0
#: Triggers waiting on one deployment share a queue-depth read this recent: at most two requests per deployment a
#: minute, however many triggers wait on it.
QUEUE_DEPTH_MAX_AGE = PROGRESS_EVERY_S / 2
#: Consecutive failing polls (each already retried by the hook) are tolerated this long before an ``error`` event.
DEFAULT_ERROR_BUDGET_S = 900.0
#: ``max_time_in_queue_seconds`` accepted by Baseten.
MIN_QUEUE_SECONDS, MAX_QUEUE_SECONDS = 10, 259_200
#: The :class:`AsyncRequestWatch` fields the trigger carries (as kwargs of the same names) to continue a wait.
TRIGGER_FIELDS = ("poll_interval", "deadline", "started_at", "fail_on_webhook_failure", "output_uri", "last_status")

_log = logging.getLogger(__name__)


def _random() -> float:
    return random.random()  # looked up at call time, so tests can pin the jitter


class BasetenAsyncRequestTimeoutError(BasetenAsyncRequestError, TimeoutError):
    """The request did not finish before the task's deadline (``timeout`` / ``execution_timeout``)."""


#: A stdlib ``logging.Logger`` or the structlog logger of an operator or trigger: only ``%s``-style calls are made.
_Log = Any


# --- statuses and events -----------------------------------------------------------------------------------------


def is_terminal(status: str | None) -> bool:
    """True unless ``status`` is a known pending status: an unknown or missing status ends the wait (and fails)."""
    try:
        return status is None or not AsyncRequestStatus(status).is_pending
    except ValueError:
        return True


def build_manifest(
    request_id: str,
    target: Target,
    state: AsyncRequestState | None = None,
    *,
    output_uri: str | None = None,
) -> dict[str, Any]:
    """The small JSON record the operator and the sensor return (never the prediction: Baseten keeps none)."""
    id_key = f"{target.kind}_id"
    own_id = getattr(state, id_key, None) if state else None
    manifest: dict[str, Any] = {
        "request_id": request_id,
        id_key: own_id or target.id,
        "deployment_id": (state.deployment_id if state else None) or target.deployment_id,
        "status": state.status if state else None,
        "webhook_status": state.webhook_status if state else None,
        "created_at": state.created_at if state else None,
        "status_at": state.status_at if state else None,
        "errors": [error.model_dump(mode="json") for error in state.errors] if state else [],
    }
    if output_uri:
        manifest["output_uri"] = output_uri
    return manifest


def make_event(status: EventStatus, message: str, manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": status,
        "request_id": manifest["request_id"],
        "request_status": manifest.get("status"),
        "message": message,
        "manifest": manifest,
    }


def _errors_text(state: AsyncRequestState) -> str:
    return "; ".join(f"{error.code}: {error.message}" for error in state.errors)


def is_success(status: str | None, *, fail_on_webhook_failure: bool = True) -> bool:
    """Whether a status finishes a task green: ``SUCCEEDED``, or ``WEBHOOK_FAILED`` when the caller opted out."""
    if status == AsyncRequestStatus.SUCCEEDED:
        return True
    return status == AsyncRequestStatus.WEBHOOK_FAILED and not fail_on_webhook_failure


def event_for_state(
    state: AsyncRequestState,
    target: Target,
    *,
    fail_on_webhook_failure: bool = True,
    output_uri: str | None = None,
) -> dict[str, Any] | None:
    """The terminal event for a status, or ``None`` while it is ``QUEUED``/``IN_PROGRESS``. The allow-list."""
    known = state.known_status
    if known is not None and known.is_pending:
        return None
    manifest = build_manifest(state.request_id, target, state, output_uri=output_uri)
    name = f"Async request {state.request_id} on {target.describe()}"
    if known is AsyncRequestStatus.WEBHOOK_FAILED:
        message = f"{name} ran, but Baseten could not deliver its output to the webhook: the output is lost."
        if is_success(known, fail_on_webhook_failure=fail_on_webhook_failure):
            return make_event("success", message, manifest)
        return make_event("failed", f"{message} (Pass fail_on_webhook_failure=False to accept this.)", manifest)
    if is_success(known):
        return make_event("success", f"{name} succeeded.", manifest)
    if known is None:
        return make_event(
            "error",
            f"{name} has status {state.status!r}, which this provider does not know; it is not treated as a "
            "success. Upgrade airflow-provider-baseten or check the request in Baseten.",
            manifest,
        )
    details = _errors_text(state)
    hint = " It waited longer than max_time_in_queue_seconds." if known is AsyncRequestStatus.EXPIRED else ""
    return make_event(
        "failed", f"{name} ended {known.value}.{hint}{f' Errors: {details}' if details else ''}", manifest
    )


def validate_event(event: Any) -> dict[str, Any]:
    """Return ``event`` if it is a well-formed event with an allow-listed status; raise a clear error otherwise.

    Events cross the triggerer/worker boundary through the database: a resumed task can see ``None`` or a status
    written by another version, and neither may finish it green.
    """
    if not isinstance(event, dict):
        raise BasetenAsyncRequestError(
            f"The task resumed without a valid trigger event (got {type(event).__name__}); the async request's "
            "outcome is unknown."
        )
    status = event.get("status")
    if status not in EVENT_STATUSES:
        raise BasetenAsyncRequestError(
            f"Unexpected trigger event status {status!r}; expected one of {sorted(EVENT_STATUSES)}."
        )
    if not isinstance(event.get("manifest"), dict) or not event.get("request_id"):
        raise BasetenAsyncRequestError(f"Malformed trigger event with status {status!r}: no request id or manifest.")
    return event


def manifest_or_raise(event: Any) -> dict[str, Any]:
    """The manifest of a ``success`` event; any other event raises with the manifest attached."""
    event = validate_event(event)
    manifest: dict[str, Any] = event["manifest"]
    message = str(event.get("message") or f"Async request {event['request_id']} ended {event['status']}.")
    if event["status"] == "success":
        return manifest
    if event["status"] == "timeout":
        raise BasetenAsyncRequestTimeoutError(message, manifest=manifest)
    raise BasetenAsyncRequestError(message, manifest=manifest)


def lost_event(
    request_id: str, target: Target, last: AsyncRequestState | None, output_uri: str | None
) -> dict[str, Any]:
    manifest = build_manifest(request_id, target, last, output_uri=output_uri)
    return make_event(
        "lost",
        f"Async request {request_id} on {target.describe()} is no longer known to Baseten (404). Baseten keeps a "
        f"status for 1 hour after completion, so the outcome cannot be confirmed (last seen: "
        f"{manifest['status'] or 'never'}); it is not treated as a success.",
        manifest,
    )


# --- submission --------------------------------------------------------------------------------------------------


def default_queue_seconds(deadline: float | None, now: float) -> int | None:
    """``max_time_in_queue_seconds`` that fits the time left before ``deadline`` (``None``: Baseten's default)."""
    if deadline is None:
        return None
    return int(min(MAX_QUEUE_SECONDS, max(MIN_QUEUE_SECONDS, deadline - now)))


def _submission_fields(
    model_input: Any,
    webhook_endpoint: str | None,
    priority: int | None,
    max_time_in_queue_seconds: int | None,
    inference_retry_config: dict[str, Any] | None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {"model_input": model_input, "webhook_endpoint": webhook_endpoint or None}
    if priority is not None:
        fields["priority"] = priority
    if max_time_in_queue_seconds is not None:
        fields["max_time_in_queue_seconds"] = max_time_in_queue_seconds
    if inference_retry_config is not None:
        fields["inference_retry_config"] = inference_retry_config
    return fields


def _validated(fields: dict[str, Any], where: str) -> AsyncPredictRequest:
    from pydantic import ValidationError

    from airflow_provider_baseten.hooks.models import AsyncPredictRequest

    try:
        return AsyncPredictRequest.model_validate(fields)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'request'}: {error['msg']}" for error in err.errors()
        )
        raise BasetenConfigError(f"Invalid async request for {where}: {problems}. Nothing was sent.") from None


def check_async_options(
    *,
    webhook_endpoint: str | None = None,
    priority: int | None = None,
    max_time_in_queue_seconds: int | None = None,
    inference_retry_config: dict[str, Any] | None = None,
) -> None:
    """Validate literal submission options when a DAG is parsed (templated values are checked after rendering)."""
    fields = _submission_fields({}, webhook_endpoint, priority, max_time_in_queue_seconds, inference_retry_config)
    _validated(fields, "this task")


def build_async_request(
    target: Target,
    model_input: Any,
    *,
    webhook_endpoint: str | None = None,
    priority: int | None = None,
    max_time_in_queue_seconds: int | None = None,
    inference_retry_config: dict[str, Any] | None = None,
) -> AsyncPredictRequest:
    """Validate a submission (ranges, webhook URL, the 256 KiB limit) before anything is sent.

    ``model_input`` may be a JSON string (a template rendered without native types).

    :raises BasetenConfigError: a field is invalid.
    :raises BasetenPayloadTooLargeError: the body is over Baseten's async limit.
    """
    if isinstance(model_input, str):
        import json

        try:
            model_input = json.loads(model_input)
        except ValueError:
            raise BasetenConfigError("model_input is a string that is not JSON; pass a dict.") from None
    if not isinstance(model_input, dict):
        raise BasetenConfigError(
            f"model_input must be a JSON object (a dict) for an async request, got {type(model_input).__name__}."
        )
    fields = _submission_fields(
        model_input, webhook_endpoint, priority, max_time_in_queue_seconds, inference_retry_config
    )
    request = _validated(fields, target.describe())
    from airflow_provider_baseten.hooks.baseten import BasetenHook

    BasetenHook._submit_call(target, request)  # the hook's own size check, so both refuse exactly the same bodies
    return request


# --- deadlines and cancel ------------------------------------------------------------------------------------------

#: How long past the deadline ``defer(timeout=...)`` waits: only a backstop, the trigger reports the timeout itself.
DEFER_BACKSTOP_MARGIN_S = 120.0


def reattach_supported() -> bool:
    """Whether this Airflow has the task state store (3.3+), through which a retry re-attaches to its request."""
    from airflow.providers.common.compat.sdk import ResumableJobMixin

    return ResumableJobMixin.__module__.startswith("airflow.sdk")


def retry_note() -> str:
    """What a task retry does with a request that may still run, true for this Airflow version."""
    if reattach_supported():
        return "a retry of the task re-attaches to it (the task state store keeps its id)."
    return (
        "on this Airflow (no task state store before 3.3) a retry of BasetenAsyncPredictOperator submits a new "
        "request, while a retry of BasetenAsyncRequestSensor waits for this one again."
    )


def task_deadline(context: Any, now: float, *, timeout: float | None, execution_timeout: Any) -> float | None:
    """:func:`absolute_deadline` of a running task: ``timeout`` from ``now`` and the try's ``execution_timeout``
    (a ``timedelta`` or ``None``) from the try's start."""
    start = getattr(context.get("ti"), "start_date", None)
    return absolute_deadline(
        now,
        timeout=timeout,
        try_started_at=start.timestamp() if start is not None and hasattr(start, "timestamp") else None,
        execution_timeout=execution_timeout.total_seconds() if execution_timeout else None,
    )


def absolute_deadline(
    now: float,
    *,
    timeout: float | None = None,
    try_started_at: float | None = None,
    execution_timeout: float | None = None,
) -> float | None:
    """The wall-clock epoch deadline of a wait: ``now + timeout`` and the try's ``execution_timeout``, whichever
    comes first (Airflow does not enforce ``execution_timeout`` while a task is deferred, so the wait must)."""
    candidates = []
    if timeout is not None:
        candidates.append(now + timeout)
    if execution_timeout is not None:
        candidates.append((try_started_at if try_started_at is not None else now) + execution_timeout)
    return min(candidates) if candidates else None


def defer_timeout(deadline: float | None, now: float, poll_interval: float) -> timedelta | None:
    """``defer(timeout=...)``: the deadline plus a margin, so the trigger's own ``timeout`` event always wins."""
    if deadline is None:
        return None
    return timedelta(seconds=max(0.0, deadline - now) + max(DEFER_BACKSTOP_MARGIN_S, poll_interval))


def log_cancel_result(log: _Log, request_id: str, response: CancelAsyncResponse) -> None:
    if response.canceled:
        log.info("Canceled async request %s.", request_id)
    else:
        log.warning(
            "Baseten did not cancel async request %s (%s): only QUEUED requests can be canceled; it runs to the end.",
            request_id,
            response.message or "no longer queued",
        )


def cancel_quietly(hook: BasetenHook, target: Target, request_id: str | None, log: _Log, reason: str) -> None:
    """Best-effort cancel (timeout, kill): logs the outcome, never raises, so it never masks the real failure."""
    if not request_id:
        return
    log.info("Canceling async request %s: %s.", request_id, reason)
    try:
        response = hook.cancel_async_request(target, request_id)
    except Exception as err:
        log.warning("Could not cancel async request %s: %s: %s", request_id, type(err).__name__, err)
        return
    log_cancel_result(log, request_id, response)


# --- the waiting loop --------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def parse_timestamp(value: str | None) -> float | None:
    """Epoch seconds of an ISO-8601 timestamp from Baseten, or ``None``."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class PollStep:
    """What the loop does after one poll: finish with ``event``, or wait ``delay`` (and maybe log progress)."""

    event: dict[str, Any] | None = None
    delay: float = 0.0
    wants_queue_depth: bool = False


@dataclass
class AsyncRequestWatch:
    """The state of one wait on an async request. No I/O; the worker and the trigger share it.

    :param deadline: absolute wall-clock deadline (epoch seconds), checked before every poll; ``None`` for none.
    :param started_at: epoch seconds the wait started (the submit), for "time waited".
    :param last_status: the status already seen (so only real changes are logged).
    :param error_budget: seconds of consecutive failing polls tolerated before an ``error`` event.
    """

    target: Target
    request_id: str
    poll_interval: float
    deadline: float | None = None
    started_at: float = field(default_factory=time.time)
    fail_on_webhook_failure: bool = True
    output_uri: str | None = None
    last_status: str | None = None
    error_budget: float = DEFAULT_ERROR_BUDGET_S
    log: _Log = field(default=_log)
    jitter: Callable[[], float] = _random
    progress_every: float = PROGRESS_EVERY_S
    last_state: AsyncRequestState | None = field(default=None, init=False, repr=False)
    _first_error_at: float | None = field(default=None, init=False, repr=False)
    _errors: int = field(default=0, init=False, repr=False)
    _last_progress_at: float | None = field(default=None, init=False, repr=False)
    _queue_depth_available: bool = field(default=True, init=False, repr=False)

    def describe(self, now: float) -> str:
        """``async request ID on TARGET (poll every ~N s, deadline in M s)``: the wait, for a deferral's log line."""
        deadline = "" if self.deadline is None else f", deadline in {max(0.0, self.deadline - now):.0f} s"
        return (
            f"async request {self.request_id} on {self.target.describe()} (poll every ~{self.poll_interval:g} s"
            f"{deadline})"
        )

    def jittered(self, seconds: float | None = None) -> float:
        """``seconds`` (default: the poll interval) spread by +/-25% so many waiters do not poll in lockstep."""
        base = self.poll_interval if seconds is None else seconds
        return base * (0.75 + 0.5 * self.jitter())

    def deadline_event(self, now: float) -> dict[str, Any] | None:
        if self.deadline is None or now < self.deadline:
            return None
        manifest = build_manifest(self.request_id, self.target, self.last_state, output_uri=self.output_uri)
        return make_event(
            "timeout",
            f"Async request {self.request_id} on {self.target.describe()} did not finish before the task's deadline "
            f"(waited {_duration(now - self.started_at)}; last status {manifest['status'] or 'unknown'}).",
            manifest,
        )

    def observe(self, state: AsyncRequestState, now: float) -> PollStep:
        """A status was read: log a change, finish on a terminal status, else schedule the next poll.

        Only the changes a reader could not infer are logged: not the first ``QUEUED`` (a submitted request is
        queued) and not the terminal status (the event's message says it, and the task logs that message), so a
        trigger among thousands writes one line of its own per change while it waits, not per poll.
        """
        self._first_error_at, self._errors = None, 0
        self.last_state = state
        if state.status != self.last_status:
            if not is_terminal(state.status) and (self.last_status, state.status) != (None, "QUEUED"):
                self.log.info(
                    "Async request %s: %s -> %s after %s.",
                    self.request_id,
                    self.last_status or "submitted",
                    state.status,
                    _duration(now - self.started_at),
                )
            self.last_status = state.status
        event = event_for_state(
            state,
            self.target,
            fail_on_webhook_failure=self.fail_on_webhook_failure,
            output_uri=self.output_uri,
        )
        if event is not None:
            return PollStep(event=event)
        if self._last_progress_at is None:
            self._last_progress_at = now
        due = now - self._last_progress_at >= self.progress_every
        return PollStep(delay=self.jittered(), wants_queue_depth=due)

    def poll_failed(self, exc: BaseException, now: float) -> PollStep:
        """A poll failed after the hook's own retries: 404 is ``lost``; transient errors wait within the budget."""
        from airflow_provider_baseten.hooks.retries import RetryPolicy, is_retryable

        deadline_passed = self.deadline_event(now)
        if deadline_passed is not None:
            return PollStep(event=deadline_passed)
        if isinstance(exc, BasetenNotFoundError):
            return PollStep(event=lost_event(self.request_id, self.target, self.last_state, self.output_uri))
        if not is_retryable(exc, idempotent=True):
            manifest = build_manifest(self.request_id, self.target, self.last_state, output_uri=self.output_uri)
            return PollStep(
                event=make_event(
                    "error",
                    f"Could not read the status of async request {self.request_id}: {type(exc).__name__}: {exc}",
                    manifest,
                )
            )
        if self._first_error_at is None:
            self._first_error_at = now
        self._errors += 1
        if now - self._first_error_at >= self.error_budget:
            manifest = build_manifest(self.request_id, self.target, self.last_state, output_uri=self.output_uri)
            return PollStep(
                event=make_event(
                    "error",
                    f"Gave up reading the status of async request {self.request_id} after {self._errors} failed "
                    f"polls over {_duration(now - self._first_error_at)}: {type(exc).__name__}: {exc}. The request "
                    f"may still be running; {retry_note()}",
                    manifest,
                )
            )
        backoff = RetryPolicy(max_wait=120.0, jitter=self.jitter).wait_seconds(
            self._errors, getattr(exc, "retry_after", None)
        )
        delay = max(self.jittered(), backoff)
        self.log.warning(
            "Polling async request %s failed (%s: %s); retrying in %.1f s.",
            self.request_id,
            type(exc).__name__,
            exc,
            delay,
        )
        return PollStep(delay=delay)

    def step(self, outcome: AsyncRequestState | BaseException, now: float) -> PollStep:
        if isinstance(outcome, BaseException):
            return self.poll_failed(outcome, now)
        return self.observe(outcome, now)

    def report_progress(self, queue: AsyncQueueStatus | None, now: float) -> None:
        """The once-a-minute line: status, time waited and (when known) the deployment's queue depth."""
        self._last_progress_at = now
        if queue is None:
            self.log.info(
                "Async request %s is %s after %s.", self.request_id, self.last_status, _duration(now - self.started_at)
            )
            return
        self.log.info(
            "Async request %s is %s after %s; deployment queue: %s queued, %s in progress.",
            self.request_id,
            self.last_status,
            _duration(now - self.started_at),
            queue.num_queued_requests,
            queue.num_in_progress_requests,
        )

    def queue_depth_failed(self, exc: BaseException) -> None:
        """Queue depth is a nicety: one failure is logged at debug level and not asked for again in this wait."""
        self._queue_depth_available = False
        _log.debug("No queue depth for %s: %s", self.target.describe(), exc)

    def sleep_until(self, wake_at: float, now: float) -> float:
        """Seconds to sleep before ``wake_at``, never past the deadline (so a timeout is reported on time)."""
        if self.deadline is not None:
            wake_at = min(wake_at, self.deadline)
        return max(0.0, wake_at - now)


_POLL, _QUEUE = "poll", "queue_depth"


def wait_plan(
    watch: AsyncRequestWatch, clock: Callable[[], float], *, first_delay: float | None = None
) -> Generator[Read | Sleep, Any, dict[str, Any]]:
    """The waiting loop as a generator of I/O requests; returns the one terminal event.

    The driver answers a ``_POLL`` read with an ``AsyncRequestState`` or the exception the poll raised, a ``_QUEUE``
    read with an ``AsyncQueueStatus`` or an exception, and :class:`Sleep` with nothing. Each read is bounded by the
    time left before the deadline.
    """
    next_poll_at = clock() + (watch.jittered() if first_delay is None else first_delay)
    while True:
        now = clock()
        event = watch.deadline_event(now)
        if event is not None:
            return event
        if now < next_poll_at:
            yield Sleep(watch.sleep_until(next_poll_at, now))
            continue
        step = watch.step((yield Read(_POLL, time_left(watch.deadline, now))), clock())
        if step.event is not None:
            return step.event
        if step.wants_queue_depth:
            queue = (yield Read(_QUEUE, time_left(watch.deadline, clock()))) if watch._queue_depth_available else None
            if isinstance(queue, BaseException):
                watch.queue_depth_failed(queue)
                queue = None
            watch.report_progress(queue, clock())
        next_poll_at = clock() + step.delay


def wait_sync(
    hook: BasetenHook,
    watch: AsyncRequestWatch,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
    first_delay: float | None = None,
) -> dict[str, Any]:
    """Drive :func:`wait_plan` on the worker with the sync client and the process's poll budget."""
    reads = {
        _POLL: lambda left: hook.get_async_request(watch.target, watch.request_id, time_left=left),
        _QUEUE: lambda left: hook.get_async_queue_status(watch.target, time_left=left),
    }
    return drive(wait_plan(watch, clock, first_delay=first_delay), reads, sleep)


async def wait_async(
    hook: BasetenHook,
    watch: AsyncRequestWatch,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.time,
    first_delay: float | None = None,
) -> dict[str, Any]:
    """Drive :func:`wait_plan` in the triggerer: status polls on the shared hot-path sender and poll budget
    (:func:`~airflow_provider_baseten.hooks.hotpath.status_poll`), no blocking call.

    ``CancelledError`` is never caught here (it is not an ``Exception``): a triggerer that stops the trigger stops it.
    """
    from airflow_provider_baseten.hooks.hotpath import status_poll

    target, request_id = watch.target, watch.request_id
    reads = {
        _POLL: status_poll(hook, lambda sender, budget: sender.get_async_request(target, request_id, budget)),
        _QUEUE: lambda: hook.aget_async_queue_status(watch.target, max_age=QUEUE_DEPTH_MAX_AGE, clock=clock),
    }
    return await adrive(wait_plan(watch, clock, first_delay=first_delay), reads, sleep)

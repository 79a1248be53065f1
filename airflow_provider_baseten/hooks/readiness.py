"""Waiting for a woken deployment to become ``ACTIVE``: one state machine for the worker and the triggerer.

:class:`ReadinessWatch` decides, read by read, whether to keep waiting, succeed or fail; its polling loop is written
once, free of I/O (a generator that asks for a status read or a sleep), and driven either by :meth:`ReadinessWatch.run`
(the operator on a worker, blocking calls) or :meth:`ReadinessWatch.arun` (the trigger, awaited calls). So the poll
interval, the deadline, the stale-read grace, the error budget and the messages cannot differ between the modes.

What a status means is decided in :func:`~airflow_provider_baseten.hooks.statuses.readiness_after_wake`:

- ``ACTIVE``: done. Pending statuses (``WAKING_UP``, ``LOADING_MODEL``, ...): keep waiting.
- ``SCALED_TO_ZERO``: pending during the stale-read grace after the wake; later, the wake did not take: failed.
- ``INACTIVE``/``DEACTIVATING``: failed (wake does not activate), except within the grace after an activation.
- ``BUILD_FAILED``, ``BUILD_STOPPED``, ``DEPLOY_FAILED``, ``FAILED``: failed at once.
- ``UNHEALTHY`` (running but failing health checks): keep waiting with a warning, since a replica can recover; at the
  deadline the timeout message says the deployment was ``UNHEALTHY``.
- A status this provider does not know: keep waiting with a warning (Baseten adds statuses); the deadline bounds it.

The deadline is checked before every read and bounds each read (a slow read ends at the deadline, as
``timeout``). Messages say what was observed (how many reads, which statuses since the wake), not a guess. A
transient read error (network, 5xx, 429, after the hook's own retries) counts against a budget of consecutive
failures; one blip never ends the wait. Any other error ends it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_provider_baseten.exceptions import BasetenDeploymentError
from airflow_provider_baseten.hooks._stepper import READ, OneReadWatch, Read, Sleep, time_left
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.models import Deployment, DeploymentStatus, Readiness, readiness_after_wake
from airflow_provider_baseten.hooks.retries import is_retryable

__all__ = [
    "EVENT_STATUSES",
    "TRIGGER_FIELDS",
    "ReadinessWatch",
    "Verdict",
    "deployment_from_event",
    "describe_transitions",
    "failed_message",
    "format_duration",
    "inactive_message",
]

log = logging.getLogger(__name__)

Outcome = Literal["pending", "success", "failed", "timeout", "error"]
#: The ``status`` values of a readiness event; only ``success`` finishes a task green.
EVENT_STATUSES: frozenset[str] = frozenset({"success", "failed", "timeout", "error"})
#: Consecutive failed status reads (each already retried by the hook) tolerated before giving up.
MAX_CONSECUTIVE_ERRORS = 5

#: The :class:`ReadinessWatch` fields the trigger carries (as kwargs of the same names) to continue a wait.
TRIGGER_FIELDS = (
    "woke_at",
    "deadline",
    "poll_interval",
    "stale_read_grace",
    "last_status",
    "activated",
    "min_replicas",
)


def format_duration(seconds: float) -> str:
    """``2 s``, ``3 min 10 s``, ``1 h 2 min``: how long a cold start took, for people."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


@dataclass(frozen=True)
class Verdict:
    """The watch's answer to one read: keep waiting (``pending``) or a terminal outcome with its message."""

    outcome: Outcome
    message: str = ""
    deployment: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.outcome != "pending"


@dataclass
class ReadinessWatch(OneReadWatch[Deployment]):
    """The state of one wait for ``ACTIVE`` after a wake. Times are epoch seconds (they survive a triggerer move).

    :param target: the woken model deployment.
    :param woke_at: when the wake was sent.
    :param deadline: when to give up (``timeout`` outcome).
    :param poll_interval: seconds between status reads.
    :param stale_read_grace: seconds after the wake during which a ``SCALED_TO_ZERO`` (or, after an activation,
        ``INACTIVE``) read is taken as stale.
    :param last_status: the status read before the wake, so the first change is logged as a transition.
    :param activated: whether the deployment was activated just before the wake.
    :param min_replicas: also wait until ``active_replica_count`` reaches this (a batch window's floor).
    :param logger: where transitions and warnings go (the task's or the trigger's log).
    """

    target: Target
    woke_at: float
    deadline: float
    poll_interval: float
    stale_read_grace: float = 30.0
    last_status: str | None = None
    activated: bool = False
    min_replicas: int = 0
    logger: Any = field(default=log, repr=False)
    max_consecutive_errors: int = MAX_CONSECUTIVE_ERRORS
    transitions: list[dict[str, Any]] = field(default_factory=list)
    _errors: int = field(default=0, repr=False)
    _last_record: dict[str, Any] | None = field(default=None, repr=False)
    _unhealthy_seen: bool = field(default=False, repr=False)
    _reads: int = field(default=0, repr=False)
    _seen: list[str] = field(default_factory=list, repr=False)

    # --- decisions ------------------------------------------------------------------------------------------------

    def since_wake(self, now: float) -> float:
        return max(0.0, now - self.woke_at)

    def check_deadline(self, now: float) -> Verdict | None:
        """Checked before every read: past the deadline, the wait ends with ``timeout``."""
        if now < self.deadline:
            return None
        waited = format_duration(now - self.woke_at)
        message = f"{self.target.describe()} did not become ACTIVE within {waited} of the wake"
        if self.min_replicas > 1:
            replicas = (self._last_record or {}).get("active_replica_count")
            message = message.replace("become ACTIVE", f"reach {self.min_replicas} active replicas", 1)
            message += f" ({_reads_text(self._reads)}; last status {self.last_status}, {replicas} active replicas)."
        else:
            message += f" ({_reads_text(self._reads)}; last status {self.last_status})." if self.last_status else "."
        if self._unhealthy_seen:
            message += (
                " It was UNHEALTHY (running but failing its health checks) during the wait: check the model's logs "
                "in Baseten."
            )
        return Verdict("timeout", message, self._last_record)

    def observe(self, deployment: Deployment, now: float) -> Verdict:
        """Judge one status read."""
        self._errors = 0
        self._last_record = deployment.model_dump(mode="json")
        status = deployment.status
        self._reads += 1
        if status not in self._seen:
            self._seen.append(status)
        since = self.since_wake(now)
        self._note_transition(status, since)
        readiness = readiness_after_wake(
            status, seconds_since_wake=since, stale_read_grace=self.stale_read_grace, activated=self.activated
        )
        what = self.target.describe()
        if readiness is Readiness.READY and (deployment.active_replica_count or 0) < self.min_replicas:
            return Verdict("pending", deployment=self._last_record)  # ACTIVE, more replicas still starting
        if readiness is Readiness.READY:
            return Verdict("success", f"{what} is ACTIVE {format_duration(since)} after the wake.", self._last_record)
        if readiness is Readiness.FAILED and status == DeploymentStatus.SCALED_TO_ZERO:
            return self._failed(
                scaled_to_zero_message(
                    what,
                    woke_at=self.woke_at,
                    since=since,
                    reads=self._reads,
                    seen=self._seen,
                    poll_interval=self.poll_interval,
                    grace=self.stale_read_grace,
                )
            )
        if readiness is Readiness.FAILED:
            return self._failed(failed_message(what, status))
        if readiness is Readiness.INACTIVE:
            if self.activated:
                return self._failed(
                    f"{what} is still {status} {format_duration(since)} after it was activated: the activation did "
                    "not take."
                )
            return self._failed(inactive_message(what, status))
        if readiness is Readiness.UNHEALTHY:
            self._unhealthy_seen = True
        return Verdict("pending", deployment=self._last_record)

    def observe_error(self, exc: Exception, now: float) -> Verdict:
        """Judge a failed read: transient errors within the budget keep the wait going."""
        what = self.target.describe()
        if not is_retryable(exc, idempotent=True):
            return Verdict("error", f"Reading the status of {what} failed: {exc}", self._last_record)
        self._errors += 1
        if self._errors > self.max_consecutive_errors:
            return Verdict(
                "error",
                f"Reading the status of {what} failed {self._errors} times in a row; last error: {exc}",
                self._last_record,
            )
        self.logger.warning(
            "Reading the status of %s failed (%s of %s tolerated in a row); retrying in the next poll: %s",
            what,
            self._errors,
            self.max_consecutive_errors,
            exc,
        )
        return Verdict("pending", deployment=self._last_record)

    def next_wait(self, now: float) -> float:
        """Seconds until the next read: the poll interval, cut short by the deadline."""
        return max(0.0, min(self.poll_interval, self.deadline - now))

    def event(self, verdict: Verdict, now: float) -> dict[str, Any]:
        """The terminal record: the trigger's event payload, and what the worker loop hands back."""
        return {
            "status": verdict.outcome,
            "message": verdict.message,
            "deployment": verdict.deployment,
            "transitions": list(self.transitions),
            "target": self.target.describe(),
            "waited_s": round(self.since_wake(now), 3),
        }

    def _failed(self, message: str) -> Verdict:
        return Verdict("failed", message, self._last_record)

    def _note_transition(self, status: str, since: float) -> None:
        if status == self.last_status:
            return
        self.transitions.append({"from": self.last_status, "to": status, "after_s": round(since, 3)})
        previous = self.last_status or "(unknown)"
        self.last_status = status
        note = _status_note(status)
        # Unhealthy and unknown statuses are worth a warning: the wait goes on, but it may end at the deadline.
        emit = self.logger.warning if note else self.logger.info
        emit("%s: %s → %s after %s%s", self.target.describe(), previous, status, format_duration(since), note)

    # --- the polling loop, written once --------------------------------------------------------------------------

    def _steps(
        self, clock: Callable[[], float]
    ) -> Generator[Read | Sleep, Deployment | Exception | None, dict[str, Any]]:
        """Yields a :class:`Read` (send back a :class:`Deployment` or the exception) or a :class:`Sleep` (``None``)."""
        while True:
            verdict = self.check_deadline(clock())
            if verdict is not None:
                return self.event(verdict, clock())
            reply = yield Read(READ, time_left(self.deadline, clock()))
            if isinstance(reply, Exception):
                # A read cut off by the deadline (or failing after it) is a timeout, not a read error.
                verdict = self.check_deadline(clock()) or self.observe_error(reply, clock())
            else:
                assert reply is not None
                verdict = self.observe(reply, clock())
            if verdict.done:
                return self.event(verdict, clock())
            yield Sleep(self.next_wait(clock()))


def _reads_text(reads: int) -> str:
    return f"{reads} status read{'' if reads == 1 else 's'}"


def scaled_to_zero_message(
    what: str, *, woke_at: float, since: float, reads: int, seen: list[str], poll_interval: float, grace: float
) -> str:
    """Why a wait ended on ``SCALED_TO_ZERO`` past the grace, from what the reads saw (worker and trigger alike)."""
    from datetime import UTC, datetime

    woke = datetime.fromtimestamp(woke_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    reads_text = _reads_text(reads)
    if seen == [DeploymentStatus.SCALED_TO_ZERO]:
        observed = (
            f"{what} was SCALED_TO_ZERO at every read since the wake at {woke} ({reads_text} over "
            f"{format_duration(since)}; a SCALED_TO_ZERO read counts as stale for {format_duration(grace)})"
        )
    else:
        observed = (
            f"{what} was SCALED_TO_ZERO again {format_duration(since)} after the wake at {woke} ({reads_text}; "
            f"statuses seen: {', '.join(seen)})"
        )
    return (
        f"{observed}. Either the wake did not take, or the deployment woke and scaled down between reads: if it "
        f"may have scaled down between reads, lower poll_interval (now {poll_interval:g} s). Retrying the task wakes "
        "it again."
    )


def failed_message(what: str, status: str) -> str:
    return f"{what} is {status}: it cannot become ACTIVE until the deployment is fixed in Baseten."


def inactive_message(what: str, status: str) -> str:
    """Why a task stops at an ``INACTIVE`` deployment: every operator with ``activate_if_inactive`` says this."""
    return (
        f"{what} is {status} (Baseten deactivates deployments after about two weeks without traffic; a wake does "
        "not activate them). Pass activate_if_inactive=True to activate it and wait until it is ready, or activate "
        "it in Baseten; activation starts replicas, which are billed while they run."
    )


def describe_transitions(transitions: list[dict[str, Any]]) -> str:
    """``SCALED_TO_ZERO → WAKING_UP after 2 s → ACTIVE after 3 min 10 s`` from an event's ``transitions``."""
    parts: list[str] = []
    for step in transitions:
        if not parts and step.get("from"):
            parts.append(str(step["from"]))
        parts.append(f"{step.get('to')} after {format_duration(float(step.get('after_s') or 0))}")
    return " → ".join(parts)


def _status_note(status: str) -> str:
    if status == DeploymentStatus.UNHEALTHY:
        return " (running but failing health checks; still waiting until the deadline)"
    if readiness_after_wake(status, seconds_since_wake=0, stale_read_grace=0) is None:
        return " (a status this provider does not know; still waiting until the deadline)"
    return ""


def deployment_from_event(event: object) -> dict[str, Any]:
    """Validate a readiness event by allow-list and return it; anything but an explicit success raises.

    ``None``, a non-dict, an unknown ``status`` and ``failed``/``timeout``/``error`` raise
    :class:`~airflow_provider_baseten.exceptions.BasetenDeploymentError` with the event's message.
    """
    if not isinstance(event, dict):
        raise BasetenDeploymentError(f"The deployment readiness trigger sent no valid event: {event!r}.")
    status = event.get("status")
    if status not in EVENT_STATUSES:
        raise BasetenDeploymentError(f"The deployment readiness trigger sent an unknown status {status!r}: {event!r}.")
    if status != "success":
        message = event.get("message") or f"waiting for the deployment ended with {status}"
        raise BasetenDeploymentError(f"{message} [{status}]")
    if not isinstance(event.get("deployment"), dict):
        raise BasetenDeploymentError(f"The readiness event reports success without a deployment record: {event!r}.")
    return event

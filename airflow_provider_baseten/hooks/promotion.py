"""Waiting for a promotion to end: one I/O-free loop for the worker and the triggerer, and what each state means.

Read by read (the environment record: ``in_progress_promotion``, ``candidate_deployment``, ``current_deployment``):

- ``SUCCEEDED``, or no promotion record while the environment already serves the deployment: ``success``.
- ``FAILED`` / ``CANCELED``: ``failed``, with Baseten's ``error_message``.
- ``RELEASING``, ``RAMPING_UP``, ``RAMPING_DOWN``, ``PAUSED``: keep waiting (a paused promotion waits for a resume).
- A promotion of another deployment: ``failed`` (someone else promoted over this one).
- A status this provider does not know: keep waiting with a warning; the deadline bounds it.

The deadline is checked before every read; transient read errors count against a budget of consecutive failures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_baseten.exceptions import BasetenDeploymentError
from airflow_provider_baseten.hooks._stepper import READ, OneReadWatch, Read, Sleep, time_left
from airflow_provider_baseten.hooks.models import Environment, PromotionStatus
from airflow_provider_baseten.hooks.readiness import EVENT_STATUSES, MAX_CONSECUTIVE_ERRORS, format_duration
from airflow_provider_baseten.hooks.retries import is_retryable

__all__ = ["PROMOTION_TRIGGER_FIELDS", "PromotionWatch", "promotion_from_event"]

log = logging.getLogger(__name__)

#: The :class:`PromotionWatch` fields the trigger carries as kwargs of the same names.
PROMOTION_TRIGGER_FIELDS = ("model_id", "environment", "deployment_id", "started_at", "deadline", "poll_interval")
#: Seconds after the promote during which "no promotion yet, old deployment still current" is a stale read.
STALE_READ_GRACE = 30.0


@dataclass
class PromotionWatch(OneReadWatch[Environment]):
    """One wait for the promotion of ``deployment_id`` to ``environment``. Times are epoch seconds."""

    model_id: str
    environment: str
    deployment_id: str
    started_at: float
    deadline: float
    poll_interval: float
    logger: Any = field(default=log, repr=False)
    _errors: int = field(default=0, repr=False)
    _last: dict[str, Any] | None = field(default=None, repr=False)
    _last_status: str | None = field(default=None, repr=False)

    @property
    def what(self) -> str:
        return f"the promotion of deployment {self.deployment_id} to {self.environment} (model {self.model_id})"

    def event(self, status: str, message: str, now: float) -> dict[str, Any]:
        return {
            "status": status,
            "message": message,
            "environment": self._last,
            "deployment_id": self.deployment_id,
            "waited_s": round(max(0.0, now - self.started_at), 3),
        }

    def observe(self, env: Environment, now: float) -> dict[str, Any] | None:
        """Judge one read: the terminal event, or ``None`` to keep waiting."""
        self._errors = 0
        self._last = env.model_dump(mode="json")
        promotion = env.in_progress_promotion
        candidate = env.candidate_deployment.id if env.candidate_deployment else None
        current = env.current_deployment.id if env.current_deployment else None
        waited = format_duration(now - self.started_at)
        if promotion is None or (candidate is not None and candidate != self.deployment_id):
            if current == self.deployment_id:
                return self.event("success", f"{self.what} is done: {self.environment} serves it ({waited}).", now)
            if promotion is not None and (promotion.known_status or PromotionStatus.RELEASING).is_pending:
                return self.event("failed", f"{self.what} was overtaken by a promotion of {candidate}.", now)
            if now - self.started_at <= STALE_READ_GRACE:
                return None
            return self.event(
                "failed", f"{self.what} ended without a status; {self.environment} serves {current}.", now
            )
        status = promotion.known_status
        if promotion.status != self._last_status:
            self.logger.info(
                "%s: %s (%s%% of traffic) after %s",
                self.what,
                promotion.status,
                promotion.percent_traffic_to_new_version,
                waited,
            )
            self._last_status = promotion.status
        if status is None:
            self.logger.warning(
                "%s has a status this provider does not know (%s); still waiting.", self.what, promotion.status
            )
            return None
        if status is PromotionStatus.SUCCEEDED:
            return self.event("success", f"{self.what} SUCCEEDED after {waited}.", now)
        if status in (PromotionStatus.FAILED, PromotionStatus.CANCELED):
            reason = promotion.error_message or "Baseten gave no message"
            return self.event("failed", f"{self.what} ended {status.value}: {reason}", now)
        return None

    def observe_error(self, exc: Exception, now: float) -> dict[str, Any] | None:
        if not is_retryable(exc, idempotent=True):
            return self.event("error", f"Reading {self.what} failed: {exc}", now)
        self._errors += 1
        if self._errors > MAX_CONSECUTIVE_ERRORS:
            return self.event("error", f"Reading {self.what} failed {self._errors} times in a row: {exc}", now)
        self.logger.warning("Reading %s failed (%s in a row); retrying: %s", self.what, self._errors, exc)
        return None

    def _steps(
        self, clock: Callable[[], float]
    ) -> Generator[Read | Sleep, Environment | Exception | None, dict[str, Any]]:
        while True:
            now = clock()
            if now >= self.deadline:
                return self.event(
                    "timeout", f"{self.what} did not end within {format_duration(now - self.started_at)}.", now
                )
            reply = yield Read(READ, time_left(self.deadline, now))
            now = clock()
            done = self.observe_error(reply, now) if isinstance(reply, Exception) else self.observe(reply, now)  # type: ignore[arg-type]
            if done is not None:
                return done
            yield Sleep(max(0.0, min(self.poll_interval, self.deadline - clock())))


def promotion_from_event(event: object) -> dict[str, Any]:
    """Validate a promotion event by allow-list; anything but an explicit ``success`` raises."""
    if not isinstance(event, dict) or event.get("status") not in EVENT_STATUSES:
        raise BasetenDeploymentError(f"The promotion trigger sent no valid event: {event!r}.")
    if event["status"] != "success":
        raise BasetenDeploymentError(f"{event.get('message') or 'the promotion did not succeed'} [{event['status']}]")
    return event

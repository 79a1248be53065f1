"""Promotions over emulated time: a candidate deployment takes over an environment, or fails, or is canceled.

A promotion is ``RELEASING`` until its candidate is ``ACTIVE`` (a scaled-to-zero or inactive candidate is started),
then ``RAMPING_UP`` in four traffic steps over the candidate's ``promotion_seconds``, then ``SUCCEEDED``: the
environment serves the candidate, and the previous deployment leaves it (scaled down to ``min_replica`` 0 when asked).
A candidate with ``promotion_failure`` set ends ``FAILED`` with that message halfway through the ramp, and a failed
candidate (``BUILD_FAILED``, ...) ends ``FAILED`` at once. ``cancel`` ends it ``CANCELED``; ``pause`` freezes it as
``PAUSED`` until ``resume``. The last promotion's record stays on the environment after it ends.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from airflow_provider_baseten.hooks.models import PromotionStatus, Readiness

if TYPE_CHECKING:
    from airflow_provider_baseten.emulator.clock import Timer
    from airflow_provider_baseten.emulator.lifecycle import DeploymentRuntime, TargetRuntime

_STEPS = 4

#: Promotions per target and environment (weak: a reset drops the targets, and with them their promotions).
_PROMOTIONS: weakref.WeakKeyDictionary[TargetRuntime, dict[str, Promotion]] = weakref.WeakKeyDictionary()


class PromotionError(Exception):
    """A promotion request Baseten would refuse (answered 400)."""


def promotion_of(target: TargetRuntime, environment: str) -> Promotion | None:
    return _PROMOTIONS.get(target, {}).get(environment)


def start_promotion(
    target: TargetRuntime, environment: str, candidate: DeploymentRuntime, *, scale_down_previous: bool
) -> Promotion:
    current = promotion_of(target, environment)
    if current is not None and current.pending:
        raise PromotionError(
            f"Environment {environment} of model {target.spec.id} already has a promotion in progress "
            f"(deployment {current.candidate.spec.id}, {current.status.value})."
        )
    promotion = Promotion(target, environment, candidate, scale_down_previous=scale_down_previous)
    _PROMOTIONS.setdefault(target, {})[environment] = promotion
    promotion.start()
    return promotion


class Promotion:
    def __init__(
        self, target: TargetRuntime, environment: str, candidate: DeploymentRuntime, *, scale_down_previous: bool
    ) -> None:
        self.target = target
        self.environment = environment
        self.candidate = candidate
        self.scale_down_previous = scale_down_previous
        self.status = PromotionStatus.RELEASING
        self.percent = 0
        self.error_message: str | None = None
        self._paused_from: PromotionStatus | None = None
        self._timer: Timer | None = None

    @property
    def pending(self) -> bool:
        return self.status.is_pending

    def record(self) -> dict[str, Any]:
        """``InProgressPromotionV1``."""
        return {
            "status": self.status.value,
            "percent_traffic_to_new_version": self.percent,
            "error_message": self.error_message,
            "rolling_deploy": False,
        }

    # --- progress ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        candidate = self.candidate
        readiness = candidate.status.readiness
        if readiness is Readiness.FAILED:
            self._end(PromotionStatus.FAILED, f"Deployment {candidate.spec.id} is {candidate.status.value}.")
            return
        if readiness is Readiness.INACTIVE:
            candidate.activate()
        if candidate.ready:
            self._ramp()
        else:
            candidate.when_ready(self._ramp)

    def _ramp(self) -> None:
        if self.status is not PromotionStatus.RELEASING:
            return
        self.status = PromotionStatus.RAMPING_UP
        self._schedule()

    def _schedule(self) -> None:
        step = max(0.0, self.candidate.spec.promotion_seconds) / _STEPS
        self._timer = self.candidate.scheduler.call_later(step, self._step)

    def _step(self) -> None:
        self._timer = None
        if self.status is not PromotionStatus.RAMPING_UP:
            return
        self.percent = min(100, self.percent + 100 // _STEPS)
        failure = self.candidate.spec.promotion_failure
        if failure and self.percent >= 50:
            self.percent = 0
            self._end(PromotionStatus.FAILED, failure)
            return
        if self.percent >= 100:
            self._swap()
            self._end(PromotionStatus.SUCCEEDED)
            return
        self._schedule()

    def _swap(self) -> None:
        target, candidate = self.target, self.candidate
        previous = target.by_environment.get(self.environment)
        target.by_environment[self.environment] = candidate
        candidate.spec.environment = self.environment
        if previous is not None and previous is not candidate:
            previous.spec.environment = None
            if self.scale_down_previous:
                previous.autoscaler.update({"min_replica": 0})

    def _end(self, status: PromotionStatus, message: str | None = None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.status = status
        self.error_message = message

    # --- signals -------------------------------------------------------------------------------------------------

    def cancel(self) -> str:
        if not self.pending:
            raise PromotionError(f"The promotion to {self.environment} already ended ({self.status.value}).")
        self.percent = 0
        self._end(PromotionStatus.CANCELED, "The promotion was canceled.")
        return PromotionStatus.CANCELED.value

    def pause(self) -> None:
        if not self.pending:
            raise PromotionError(f"The promotion to {self.environment} already ended ({self.status.value}).")
        if self.status is PromotionStatus.PAUSED:
            return
        self._paused_from = self.status
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.status = PromotionStatus.PAUSED

    def resume(self) -> None:
        if self.status is not PromotionStatus.PAUSED:
            raise PromotionError(f"The promotion to {self.environment} is not paused ({self.status.value}).")
        self.status = self._paused_from or PromotionStatus.RELEASING
        if self.status is PromotionStatus.RAMPING_UP:
            self._schedule()
        elif self.candidate.ready:
            self._ramp()

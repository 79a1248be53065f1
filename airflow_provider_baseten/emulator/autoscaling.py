"""Autoscaling settings and replica counts over emulated time, and deactivation after two weeks without traffic.

Each deployment's settings start from its world spec (``min_replicas``, ``max_replicas``, ``scale_down_delay``,
``predict_concurrency`` as the concurrency target) and change only through the management API, field by field:

- raising ``min_replica`` to N wakes a scaled-to-zero deployment and brings the extra replicas up one after another
  over the cold start, so ``active_replica_count`` rises to N by the end of it;
- lowering it removes the extra replicas ``scale_down_delay`` seconds later; with 0, the deployment scales to zero
  the usual way (``scale_down_delay`` after its last request);
- a deployment that may scale to zero (``min_replica`` 0) and has no traffic for ``inactive_after`` emulated seconds
  (14 days by default, a world option) becomes ``INACTIVE``, as Baseten deactivates idle deployments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_baseten.hooks.models import DeploymentStatus, Readiness

if TYPE_CHECKING:
    from airflow_provider_baseten.emulator.clock import Timer
    from airflow_provider_baseten.emulator.lifecycle import DeploymentRuntime

#: Baseten deactivates deployments after about two weeks without traffic.
INACTIVE_AFTER_SECONDS = 14 * 86400.0

#: Fields of ``UpdateAutoscalingSettingsV1`` the emulator keeps (beyond those that drive its behaviour).
_PASSIVE_DEFAULTS: dict[str, Any] = {
    "autoscaling_window": 60,
    "target_utilization_percentage": 70,
    "target_in_flight_tokens": None,
    "max_scale_down_rate": None,
}


class Autoscaler:
    """One deployment's autoscaling settings and its ready replicas beyond the first."""

    def __init__(self, deployment: DeploymentRuntime) -> None:
        self.deployment = deployment
        spec = deployment.spec
        self.passive = dict(_PASSIVE_DEFAULTS)
        self.concurrency_target = spec.predict_concurrency
        now = deployment.scheduler.now()
        #: When each replica beyond the first is (or will be) ready.
        self.extra_ready_at: list[float] = [now] * max(0, spec.min_replicas - 1)
        self._trim_timer: Timer | None = None
        self._inactive_timer: Timer | None = None
        self._arm_inactivity(deployment.last_activity + self.inactive_after)

    @property
    def inactive_after(self) -> float:
        value = getattr(self.deployment.spec, "inactive_after", INACTIVE_AFTER_SECONDS)
        return float(value) if value is not None else float("inf")

    # --- what callers see -----------------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """``AutoscalingSettingsV1``."""
        spec = self.deployment.spec
        return {
            "min_replica": spec.min_replicas,
            "max_replica": max(spec.max_replicas, spec.min_replicas, 1),
            "scale_down_delay": int(spec.scale_down_delay),
            "concurrency_target": self.concurrency_target,
            **self.passive,
        }

    def active_replicas(self) -> int:
        if self.deployment.status not in (DeploymentStatus.ACTIVE, DeploymentStatus.UNHEALTHY):
            return 0
        now = self.deployment.scheduler.now()
        return 1 + sum(1 for when in self.extra_ready_at if when <= now)

    # --- changes ------------------------------------------------------------------------------------------------

    def update(self, changes: dict[str, Any]) -> str:
        """Apply an ``UpdateAutoscalingSettingsV1`` body; ``ACCEPTED`` or ``UNCHANGED`` (nothing differed)."""
        before = self.settings()
        changed = {name: value for name, value in changes.items() if value is not None and before.get(name) != value}
        if not changed:
            return "UNCHANGED"
        spec = self.deployment.spec
        if "max_replica" in changed:
            spec.max_replicas = int(changed["max_replica"])
        if "scale_down_delay" in changed:
            spec.scale_down_delay = float(changed["scale_down_delay"])
        if "concurrency_target" in changed:
            self.concurrency_target = int(changed["concurrency_target"])
        for name in self.passive:
            if name in changed:
                self.passive[name] = changed[name]
        if "min_replica" in changed:
            self._set_min(int(changed["min_replica"]))
        return "ACCEPTED"

    def _set_min(self, count: int) -> None:
        deployment = self.deployment
        previous = deployment.spec.min_replicas
        deployment.spec.min_replicas = count
        scheduler = deployment.scheduler
        if count > previous:
            if self._trim_timer is not None:
                self._trim_timer.cancel()
                self._trim_timer = None
            have = 1 + len(self.extra_ready_at)
            new = max(0, count - have)
            cold = max(0.0, deployment.spec.cold_start_seconds)
            now = scheduler.now()
            self.extra_ready_at += [now + cold * (k + 1) / new for k in range(new)]
            deployment.wake()  # scaled to zero: the first replica starts too
            return
        # Fewer replicas: the extra ones go after the scale-down delay; to zero the usual (idle) way.
        if self._trim_timer is not None:
            self._trim_timer.cancel()
        self._trim_timer = scheduler.call_later(deployment.spec.scale_down_delay, self._trim)
        if count == 0 and deployment.status is DeploymentStatus.ACTIVE and deployment._idle_timer is None:
            due = max(scheduler.now(), deployment.last_activity) + deployment.spec.scale_down_delay
            deployment._idle_timer = scheduler.call_at(due, deployment._idle)

    def _trim(self) -> None:
        self._trim_timer = None
        keep = max(0, self.deployment.spec.min_replicas - 1)
        self.extra_ready_at = sorted(self.extra_ready_at)[:keep]

    # --- two weeks without traffic ------------------------------------------------------------------------------

    def _arm_inactivity(self, when: float) -> None:
        if self.inactive_after == float("inf"):
            return
        self._inactive_timer = self.deployment.scheduler.call_at(when, self._check_inactive)

    def _check_inactive(self) -> None:
        deployment = self.deployment
        now = deployment.scheduler.now()
        due = deployment.last_activity + self.inactive_after
        idle_ok = deployment.spec.min_replicas == 0 and not deployment.busy
        if deployment.status.readiness in (Readiness.INACTIVE, Readiness.FAILED) or not idle_ok or now < due:
            self._arm_inactivity(max(due, now + min(self.inactive_after, 3600.0)))
            return
        deployment.deactivate()
        self.extra_ready_at.clear()
        self._arm_inactivity(now + self.inactive_after)

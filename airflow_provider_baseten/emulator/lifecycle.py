"""Deployments over emulated time: scale to zero, wake, cold start, activate, deactivate, and calling the model.

States follow Baseten: a scaled-to-zero deployment woken (by ``/wake``, a sync predict or its async queue) goes
``WAKING_UP`` -> ``LOADING_MODEL`` -> ``ACTIVE`` over ``cold_start_seconds``; an idle ``ACTIVE`` deployment with
``min_replicas=0`` returns to ``SCALED_TO_ZERO`` ``scale_down_delay`` seconds after its last request (on a running
clock never sooner than the scheduler's wall-clock floor, so a client polling for ``ACTIVE`` sees it); ``INACTIVE``
answers 404 and only ``activate`` (not ``wake``) brings it back; failed builds never serve; ``UNHEALTHY`` answers 503.
A deployment that starts in a pending state (``BUILDING``, ``DEPLOYING``, ``UPDATING``, ``WAKING_UP``,
``LOADING_MODEL``) becomes ``ACTIVE`` after its cold start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from airflow_provider_baseten.emulator.autoscaling import Autoscaler
from airflow_provider_baseten.emulator.behaviours import Behaviour, ModelRequest, Reply, resolve_reply
from airflow_provider_baseten.emulator.clock import resolve
from airflow_provider_baseten.emulator.world import DeploymentSpec, ModelSpec
from airflow_provider_baseten.hooks.models import DeploymentStatus, Readiness

if TYPE_CHECKING:
    from airflow_provider_baseten.emulator.clock import Scheduler, Timer
    from airflow_provider_baseten.emulator.routing import ParsedPath

#: Share of a cold start spent ``WAKING_UP`` (getting a replica) before ``LOADING_MODEL``.
WAKING_SHARE = 0.3

_S = DeploymentStatus


#: How Baseten answers requests to deployments that cannot serve: (HTTP status, error_code, message).
_REFUSALS: dict[Readiness, tuple[int, str, str]] = {
    Readiness.INACTIVE: (404, "model_does_not_exist", "Deployment {id} is not active ({status}); activate it first."),
    Readiness.FAILED: (404, "model_does_not_exist", "Deployment {id} failed ({status}) and cannot serve requests."),
    Readiness.UNHEALTHY: (503, "model_unavailable", "Deployment {id} is unhealthy: no replica passes health checks."),
}


class DeploymentRuntime:
    """A deployment's running state: its status over emulated time, calls in flight, parked requests, its queue."""

    def __init__(self, target: ModelSpec, spec: DeploymentSpec, scheduler: Scheduler, created_at: float) -> None:
        self.target = target
        self.spec = replace(spec)  # a copy: the management API changes its autoscaling, never the world
        self.scheduler = scheduler
        self.created_at = created_at
        self.status = DeploymentStatus(spec.status)
        self.calls = 0
        self.in_flight = 0
        self.last_activity = scheduler.now()
        self.wake_started_at: float | None = None
        self._waiters: list[asyncio.Future[bool]] = []
        self._ready_callbacks: list[Callable[[], object]] = []
        self._timers: list[Timer] = []
        self._idle_timer: Timer | None = None
        # The async queue (managed by AsyncQueue): a heap of (priority, arrival, request id), and running jobs.
        self.queue: list[tuple[int, int, str]] = []
        self.queued = 0
        self.running = 0
        self.autoscaler = Autoscaler(self)
        if self.status.readiness is Readiness.PENDING and self.status is not _S.SCALED_TO_ZERO:
            self._boot(self.status)
        elif self.status is _S.ACTIVE:
            self.touch()

    # --- what callers see ------------------------------------------------------------------------------------

    @property
    def behaviour(self) -> Behaviour:
        behaviour = self.spec.behaviour or self.target.behaviour
        assert isinstance(behaviour, Behaviour)
        return behaviour

    @property
    def ready(self) -> bool:
        return self.status is _S.ACTIVE

    @property
    def active_replicas(self) -> int:
        return self.autoscaler.active_replicas()

    def unavailable(self) -> tuple[int, str, str] | None:
        """``(HTTP status, message, error_code)`` when this deployment cannot take requests at all, else ``None``."""
        refusal = _REFUSALS.get(self.status.readiness)
        if refusal is None:
            return None
        status, code, message = refusal
        return status, message.format(id=self.spec.id, status=self.status.value), code

    # --- lifecycle -------------------------------------------------------------------------------------------

    def wake(self) -> None:
        """Start a cold start if scaled to zero; anything else (booting, active, inactive, failed) is unchanged."""
        if self.status is _S.SCALED_TO_ZERO:
            self._boot(_S.WAKING_UP)

    def activate(self) -> bool:
        """Bring an ``INACTIVE`` deployment back (it boots over its cold start); ``False`` for a failed one."""
        readiness = self.status.readiness
        if readiness is Readiness.FAILED:
            return False
        if readiness is Readiness.INACTIVE:
            self._boot(_S.WAKING_UP)
        return True

    def deactivate(self) -> None:
        """``INACTIVE`` at once; parked requests are released with a failure."""
        self._cancel_timers()
        self.status = _S.INACTIVE
        self._release(False)

    def set_status(self, status: str | DeploymentStatus) -> None:
        """Force a status (tests): a pending status boots to ``ACTIVE`` over the cold start like a wake."""
        status = DeploymentStatus(status)
        self._cancel_timers()
        if status.readiness is Readiness.PENDING and status is not _S.SCALED_TO_ZERO:
            self._boot(status)
            return
        self.status = status
        if status is _S.ACTIVE:
            self._become_active()
        elif status.readiness is not Readiness.PENDING:
            self._release(False)

    def _boot(self, start: DeploymentStatus) -> None:
        self._cancel_timers()
        self.wake_started_at = self.scheduler.now()
        cold = max(0.0, self.spec.cold_start_seconds)
        if cold == 0:
            self._become_active()
            return
        self.status = start
        if start is not _S.LOADING_MODEL:
            self._timers.append(self.scheduler.call_later(cold * WAKING_SHARE, self._loading))
        self._timers.append(self.scheduler.call_later(cold, self._become_active))

    def _loading(self) -> None:
        if self.status.readiness is Readiness.PENDING:
            self.status = _S.LOADING_MODEL

    def _become_active(self) -> None:
        self._cancel_timers()
        self.status = _S.ACTIVE
        self.touch()
        self._release(True)

    def _release(self, ready: bool) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            resolve(waiter, ready)
        if ready:
            callbacks, self._ready_callbacks = self._ready_callbacks, []
            for callback in callbacks:
                callback()

    def _cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    # --- traffic and scale to zero -----------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self.in_flight or self.queued or self.running)

    @property
    def scale_down_hold(self) -> float:
        """Emulated idle time before scaling to zero: ``scale_down_delay``, floored in wall time on a running clock."""
        return self.scheduler.hold(self.spec.scale_down_delay)

    def touch(self) -> None:
        """Record activity; an autoscaled deployment scales to zero ``scale_down_delay`` after the last one."""
        self.last_activity = self.scheduler.now()
        if self.spec.min_replicas == 0 and self._idle_timer is None and self.status is _S.ACTIVE:
            self._idle_timer = self.scheduler.call_at(self.last_activity + self.scale_down_hold, self._idle)

    def _idle(self) -> None:
        self._idle_timer = None
        if self.status is not _S.ACTIVE or self.spec.min_replicas > 0:
            return
        now = self.scheduler.now()
        due = self.last_activity + self.scale_down_hold
        if self.busy or now < due:
            self._idle_timer = self.scheduler.call_at(max(due, now + 1.0) if self.busy else due, self._idle)
            return
        self.status = _S.SCALED_TO_ZERO

    async def wait_ready(self, limit: float) -> bool:
        """Park until ``ACTIVE`` (waking it if scaled to zero): ``False`` after ``limit`` emulated seconds."""
        if self.ready:
            return True
        if self.unavailable() is not None:
            return False
        self.wake()
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        timer = self.scheduler.call_later(limit, lambda: resolve(waiter, False))
        try:
            return await waiter
        finally:
            timer.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def when_ready(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` once when this deployment next becomes ``ACTIVE`` (waking it if scaled to zero)."""
        if callback not in self._ready_callbacks:
            self._ready_callbacks.append(callback)
        self.wake()

    async def invoke(
        self, payload: Any, *, route: str, time_limit: float, is_async: bool = False, arrived: float | None = None
    ) -> Reply | None:
        """Run the model once; ``None`` if its work takes longer than ``time_limit`` emulated seconds.

        The model's time runs from ``arrived`` (the request's arrival; now if not given): the reply is due at
        ``arrived + delay``, so the emulator's own work before this call does not add to the latency.
        """
        self.calls += 1
        self.in_flight += 1
        self.last_activity = self.scheduler.now()
        try:
            request = ModelRequest(
                payload, route, self.target.id, self.spec.id, self.calls, self.last_activity, is_async
            )
            reply = await resolve_reply(self.behaviour, request)
            spent = 0.0 if arrived is None else max(0.0, self.scheduler.now() - arrived)
            if reply.delay > time_limit:
                await self.scheduler.sleep(time_limit - spent)
                return None
            await self.scheduler.sleep(reply.delay - spent)  # returns at once when nothing is left
            return reply
        finally:
            self.in_flight -= 1
            self.touch()

    def close(self) -> None:
        self._cancel_timers()
        if self._idle_timer:
            self._idle_timer.cancel()
        self._release(False)


class TargetRuntime:
    """A model or chain and its deployments, with the lookups every path prefix needs."""

    def __init__(self, spec: ModelSpec, scheduler: Scheduler, created_at: float) -> None:
        self.spec = spec
        self.deployments = {d.id: DeploymentRuntime(spec, d, scheduler, created_at) for d in spec.deployments}
        self.by_environment = {d.spec.environment: d for d in self.deployments.values() if d.spec.environment}
        self.development = next((d for d in self.deployments.values() if d.spec.development), None)

    def select(self, path: ParsedPath, regional_environment: str | None) -> DeploymentRuntime | str:
        """The deployment a request reaches, or the reason it reaches none (answered as 404)."""
        what = f"{self.spec.kind} {self.spec.id}"
        if regional_environment is not None:
            if regional_environment not in self.spec.regional_environments:
                return f"{what} has no regional endpoint for environment {regional_environment!r}."
            found = self.by_environment.get(regional_environment)
            return found or f"{what} has no deployment in environment {regional_environment!r}."
        if path.selector == "development":
            return self.development or f"{what} has no development deployment."
        if path.selector == "deployment":
            return self.deployments.get(path.name or "") or f"{what} has no deployment {path.name!r}."
        found = self.by_environment.get(path.name or "")
        return found or f"{what} has no deployment in environment {path.name!r}."

    def close(self) -> None:
        for deployment in self.deployments.values():
            deployment.close()

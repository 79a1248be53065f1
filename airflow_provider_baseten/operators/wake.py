"""``BasetenWakeOperator``: wake a scaled-to-zero model ahead of a batch window and wait until it is ``ACTIVE``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import conf

from airflow_provider_baseten.exceptions import BasetenAuthError, BasetenDeploymentError
from airflow_provider_baseten.hooks.statuses import DeploymentStatus
from airflow_provider_baseten.operators._base import (
    ADDRESS_TEMPLATE_FIELDS,
    BasetenBaseOperator,
    check_seconds,
)
from airflow_provider_baseten.operators.links import BasetenModelLink

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_baseten.hooks.addressing import Target
    from airflow_provider_baseten.hooks.models import Deployment

DEFAULT_TIMEOUT = timedelta(minutes=20)


class BasetenWakeOperator(BasetenBaseOperator):
    """Wake a model deployment (``POST /wake``) and, by default, wait until its status is ``ACTIVE``.

    Before waking, the deployment's status is read once: a failed deployment (``BUILD_FAILED``, ``DEPLOY_FAILED``,
    ...) fails the task without a wake, and an ``INACTIVE`` one fails with a clear message unless
    ``activate_if_inactive=True``, which activates it through the management API first. An ``ACTIVE`` deployment is
    woken (which resets its scale-down timer) and returned at once.

    Waiting polls the management API every ``poll_interval`` seconds until ``ACTIVE``, a failure status, or
    ``timeout`` after the wake, either on the worker (``deferrable=False``) or in the triggerer without holding a
    worker slot (``deferrable=True``, through :class:`~airflow_provider_baseten.triggers.baseten.
    BasetenDeploymentReadyTrigger`); both modes share one polling loop, so the parameters mean the same in each. The
    task log shows every status change with the time since the wake (``SCALED_TO_ZERO → WAKING_UP after 2 s``,
    ``WAKING_UP → ACTIVE after 3 min 10 s``). What each status means is described in
    :mod:`airflow_provider_baseten.hooks.readiness`: in short, ``UNHEALTHY`` keeps the wait going with a warning
    (the timeout message then says it was unhealthy), and ``SCALED_TO_ZERO`` is a stale read only during
    ``stale_read_grace`` after the wake.

    **Cost, retries, idempotency.** A wake runs no prediction, and is idempotent: a task retry simply wakes again.
    The woken replica is billed while it runs, until Baseten scales it down (``scale_down_delay`` after the last
    request). Status reads need a key that may use the management API; with ``wait_for_ready=False`` an invoke-only
    key still wakes the model (the status read is skipped with a warning).

    Returns the last deployment status record (``DeploymentV1`` as a dict): the ``ACTIVE`` one after a wait, or the
    one read before the wake when not waiting.

    :param model_id: the model to wake (templated).
    :param environment: ``production`` (default), ``development`` or a named environment (templated).
    :param deployment_id: pin one deployment instead of an environment (templated).
    :param regional: send the wake to the regional host ``model-{id}-{environment}.api.baseten.co``.
    :param baseten_conn_id: the ``baseten`` connection (templated).
    :param wait_for_ready: wait until the deployment is ``ACTIVE`` (default), or return right after the wake.
    :param deferrable: wait in the triggerer instead of on the worker; default from
        ``[operators] default_deferrable``.
    :param poll_interval: seconds between status reads (default 10).
    :param timeout: how long to wait after the wake, in seconds or a ``timedelta`` (default 20 minutes). Carried
        into the trigger as an absolute deadline together with the try's ``execution_timeout`` (whichever ends
        first), so both hold while deferred, where Airflow itself does not enforce ``execution_timeout``. Each
        status read is bounded by the time left.
    :param stale_read_grace: seconds after the wake during which a ``SCALED_TO_ZERO`` read is taken as stale
        (default 30); later, it means the wake did not take and the task fails.
    :param activate_if_inactive: activate an ``INACTIVE`` deployment before waking it, instead of failing.
    """

    template_fields: Sequence[str] = ADDRESS_TEMPLATE_FIELDS
    operator_extra_links = (BasetenModelLink(),)
    target_kind = "model"
    ui_color = "#fff4d6"

    def __init__(
        self,
        *,
        model_id: str | None = None,
        wait_for_ready: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 10.0,
        timeout: float | timedelta = DEFAULT_TIMEOUT,
        stale_read_grace: float = 30.0,
        activate_if_inactive: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_id=model_id, **kwargs)
        self.wait_for_ready = bool(wait_for_ready)
        self.deferrable = bool(deferrable)
        self.poll_interval = check_seconds(poll_interval, "poll_interval")
        self.timeout = check_seconds(timeout, "timeout")
        self.stale_read_grace = check_seconds(stale_read_grace, "stale_read_grace", allow_zero=True)
        self.activate_if_inactive = bool(activate_if_inactive)

    # Injection points for tests; the worker loop and the trigger read the same epoch clock.
    def _now(self) -> float:
        return time.time()

    def _pause(self, seconds: float) -> None:
        time.sleep(seconds)

    def execute(self, context: Context) -> dict[str, Any] | None:
        target = self.target
        BasetenModelLink.persist(context, self)
        try:
            return self._wake_and_wait(target, context)
        finally:
            self.hook.close()

    def _wake_and_wait(self, target: Target, context: Context) -> dict[str, Any] | None:
        before = self._read_before_wake(target)
        activated = self._activate_if_needed(target, before, context)
        self.hook.wake(target)
        woke_at = self._now()
        last_status = before.status if before else None
        self.log.info("Woke %s (status before the wake: %s).", target.describe(), last_status or "not read")
        record = before.model_dump(mode="json") if before else None
        if not self.wait_for_ready:
            return record
        if before is not None and before.known_status is DeploymentStatus.ACTIVE and not activated:
            self.log.info("%s was already ACTIVE; the wake reset its scale-down timer.", target.describe())
            return record
        deadline = woke_at + self.timeout
        if self.deferrable:
            # Airflow does not enforce execution_timeout while a task is deferred: the trigger's deadline must.
            from airflow_provider_baseten.hooks.async_requests import task_deadline

            deadline = (
                task_deadline(context, woke_at, timeout=self.timeout, execution_timeout=self.execution_timeout)
                or deadline
            )
        self.log.info(
            "Waiting for %s to become ACTIVE (poll every %s s, timeout %s s, %s).",
            target.describe(),
            self.poll_interval,
            self.timeout,
            "in the triggerer" if self.deferrable else "on the worker",
        )
        from airflow_provider_baseten.hooks.readiness import ReadinessWatch

        watch = ReadinessWatch(
            target=target,
            woke_at=woke_at,
            deadline=deadline,
            poll_interval=self.poll_interval,
            stale_read_grace=self.stale_read_grace,
            last_status=last_status,
            activated=activated,
            logger=self.log,
        )
        return self.wait_until_ready(watch, clock=self._now, sleep=self._pause)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: only an explicit ``success`` event finishes green."""
        return self.readiness_result(event)

    def _read_before_wake(self, target: Target) -> Deployment | None:
        try:
            return self.hook.get_deployment(target)
        except BasetenAuthError:
            if self.wait_for_ready or self.activate_if_inactive:
                raise
            self.log.warning(
                "This key cannot read the status of %s (management API); waking it without checking.",
                target.describe(),
            )
            return None

    def _activate_if_needed(self, target: Target, before: Deployment | None, context: Context) -> bool:
        """Fail fast on a failed or inactive deployment; activate an inactive one when asked. True if activated."""
        from airflow_provider_baseten.hooks.readiness import failed_message, inactive_message
        from airflow_provider_baseten.hooks.statuses import Readiness

        status = before.known_status if before else None
        readiness = status.readiness if status else None
        what = target.describe()
        if readiness is Readiness.FAILED:
            raise BasetenDeploymentError(f"{failed_message(what, str(status))} Not waking it.")
        if readiness is not Readiness.INACTIVE:
            return False
        if not self.activate_if_inactive:
            raise BasetenDeploymentError(inactive_message(what, str(status)))
        self.request_activation(target, str(status), context)  # before the wake; a retry does not ask twice
        return True

"""``BasetenDeploymentReadyTrigger``: waits in the triggerer until a woken deployment is ``ACTIVE``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from airflow_provider_baseten.hooks.readiness import ReadinessWatch

CLASSPATH = "airflow_provider_baseten.triggers.baseten.BasetenDeploymentReadyTrigger"


class BasetenDeploymentReadyTrigger(BaseTrigger):
    """Poll a model deployment's status (management API, reads only) until it is ``ACTIVE``, fails, or the deadline.

    The wake itself is sent by the operator on the worker; this trigger never sends anything but ``GET``s, so running
    it twice (a triggerer restart or move) is harmless. It shares :class:`~airflow_provider_baseten.hooks.readiness.
    ReadinessWatch` with the operator's worker mode, so both wait the same way. It has no ``on_kill``: it holds no
    remote work to cancel (a wake cannot be taken back; the deployment scales down on its own when idle).

    Exactly one event, then the trigger returns: ``{"status": "success" | "failed" | "timeout" | "error",
    "message", "deployment" (the last status record, or None), "transitions" ([{"from", "to", "after_s"}]),
    "target", "waited_s"}``.

    :param model_id: the model whose deployment is awaited.
    :param deadline: epoch seconds after which the trigger emits ``timeout`` (checked before every read).
    :param woke_at: epoch seconds when the wake was sent (transitions are timed from it).
    :param baseten_conn_id: the ``baseten`` connection.
    :param environment: ``production``, ``development`` or a named environment.
    :param deployment_id: a pinned deployment instead of an environment.
    :param regional: whether the operator addressed the regional host (no effect on the management API read).
    :param poll_interval: seconds between reads.
    :param stale_read_grace: seconds after the wake during which a ``SCALED_TO_ZERO`` read counts as stale.
    :param last_status: the status read before the wake (for the first transition's log line).
    :param activated: whether the operator activated the deployment just before the wake.
    :param min_replicas: also wait until ``active_replica_count`` reaches this (batch windows; default 0).
    :param clock: epoch clock (tests); not serialized.
    :param sleep: async sleep (tests); not serialized. Also used for the hook's retry backoff.
    """

    def __init__(
        self,
        *,
        model_id: str,
        deadline: float,
        woke_at: float,
        baseten_conn_id: str = "baseten_default",
        environment: str = "production",
        deployment_id: str | None = None,
        regional: bool = False,
        poll_interval: float = 10.0,
        stale_read_grace: float = 30.0,
        last_status: str | None = None,
        activated: bool = False,
        min_replicas: int = 0,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
    ) -> None:
        super().__init__()
        self.model_id = model_id
        self.deadline = float(deadline)
        self.woke_at = float(woke_at)
        self.baseten_conn_id = baseten_conn_id
        self.environment = environment
        self.deployment_id = deployment_id
        self.regional = bool(regional)
        self.poll_interval = float(poll_interval)
        self.stale_read_grace = float(stale_read_grace)
        self.last_status = last_status
        self.activated = bool(activated)
        self.min_replicas = int(min_replicas)
        self._clock = clock or time.time
        self._sleep = sleep or asyncio.sleep
        self._hook_clock = clock  # an injected clock also runs the hook's poll budget (tests)

    @classmethod
    def for_watch(cls, watch: ReadinessWatch, *, baseten_conn_id: str) -> BasetenDeploymentReadyTrigger:
        """The trigger that continues ``watch`` (a wait the operator started) in the triggerer."""
        from airflow_provider_baseten.hooks.readiness import TRIGGER_FIELDS

        return cls(
            baseten_conn_id=baseten_conn_id,
            **watch.target.to_kwargs(),
            **{name: getattr(watch, name) for name in TRIGGER_FIELDS},
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        # min_replicas only when set: a wake's kwargs stay exactly what released triggers carry.
        extra = {"min_replicas": self.min_replicas} if self.min_replicas else {}
        return (
            CLASSPATH,
            {
                **extra,
                "model_id": self.model_id,
                "deadline": self.deadline,
                "woke_at": self.woke_at,
                "baseten_conn_id": self.baseten_conn_id,
                "environment": self.environment,
                "deployment_id": self.deployment_id,
                "regional": self.regional,
                "poll_interval": self.poll_interval,
                "stale_read_grace": self.stale_read_grace,
                "last_status": self.last_status,
                "activated": self.activated,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        yield TriggerEvent(await self._wait())

    async def _wait(self) -> dict[str, Any]:
        """The terminal event payload. Errors become an ``error`` event; ``CancelledError`` propagates."""
        from airflow_provider_baseten.hooks.addressing import Target
        from airflow_provider_baseten.hooks.baseten import BasetenHook
        from airflow_provider_baseten.hooks.hotpath import status_poll
        from airflow_provider_baseten.hooks.readiness import TRIGGER_FIELDS, ReadinessWatch

        try:
            target = Target.of(
                model_id=self.model_id,
                environment=self.environment,
                deployment_id=self.deployment_id,
                regional=self.regional,
            )
        except Exception as err:
            return {"status": "error", "message": str(err), "deployment": None, "transitions": []}
        hook = BasetenHook(self.baseten_conn_id, async_sleep=self._sleep, clock=self._hook_clock)
        watch = ReadinessWatch(target=target, logger=self.log, **{name: getattr(self, name) for name in TRIGGER_FIELDS})
        self.log.info(
            "Waiting for %s to become ACTIVE (poll every %s s, deadline in %.0f s).",
            target.describe(),
            self.poll_interval,
            self.deadline - self._clock(),
        )
        read = status_poll(hook, lambda sender, budget: sender.get_deployment(target, budget))
        event = await watch.arun(read, clock=self._clock, sleep=self._sleep)
        (self.log.info if event["status"] == "success" else self.log.warning)("%s", event["message"])
        return event

"""``BasetenPromotionTrigger``: waits in the triggerer until a promotion ends (reads only; ``on_kill`` cancels)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

CLASSPATH = "airflow_provider_baseten.triggers.baseten.BasetenPromotionTrigger"
#: ``on_kill`` is bounded by the triggerer (``[triggerer] on_kill_timeout``, 30 s); the cancel gets less than that.
CANCEL_TIMEOUT_S = 20.0


class BasetenPromotionTrigger(BaseTrigger):
    """Poll an environment (``GET .../environments/{env}``) until the promotion of one deployment ends.

    The promote itself is sent by the operator on the worker; this trigger only reads, so running it twice (a
    triggerer restart or move) is harmless. It polls on the hot path (:func:`~airflow_provider_baseten.hooks.
    hotpath.status_poll`: the event loop's shared ``aiohttp`` session and status budget, the hook's retry table)
    and shares :class:`~airflow_provider_baseten.hooks.promotion.PromotionWatch` with the operator's worker mode.
    A user who kills the deferred task cancels the promotion (``on_kill``, Airflow 3.3+) unless
    ``cancel_on_kill=False``.

    One event: ``{"status": "success" | "failed" | "timeout" | "error", "message", "environment", "deployment_id",
    "waited_s"}``.
    """

    def __init__(
        self,
        *,
        model_id: str,
        environment: str,
        deployment_id: str,
        started_at: float,
        deadline: float,
        poll_interval: float = 15.0,
        baseten_conn_id: str = "baseten_default",
        cancel_on_kill: bool = True,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
    ) -> None:
        super().__init__()
        self.model_id = model_id
        self.environment = environment
        self.deployment_id = deployment_id
        self.started_at = float(started_at)
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)
        self.baseten_conn_id = baseten_conn_id
        self.cancel_on_kill = bool(cancel_on_kill)
        self._clock = clock or time.time
        self._sleep = sleep or asyncio.sleep
        self._hook_clock = clock  # an injected clock also runs the hook's poll budget (tests)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        from airflow_provider_baseten.hooks.promotion import PROMOTION_TRIGGER_FIELDS

        kwargs = {name: getattr(self, name) for name in PROMOTION_TRIGGER_FIELDS}
        return CLASSPATH, {**kwargs, "baseten_conn_id": self.baseten_conn_id, "cancel_on_kill": self.cancel_on_kill}

    def _hook(self) -> Any:
        from airflow_provider_baseten.hooks.baseten import BasetenHook

        return BasetenHook(
            self.baseten_conn_id, customer_request_id="", async_sleep=self._sleep, clock=self._hook_clock
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_baseten.hooks.hotpath import status_poll
        from airflow_provider_baseten.hooks.promotion import PROMOTION_TRIGGER_FIELDS, PromotionWatch

        watch = PromotionWatch(logger=self.log, **{name: getattr(self, name) for name in PROMOTION_TRIGGER_FIELDS})
        model_id, environment = self.model_id, self.environment
        read = status_poll(self._hook(), lambda sender, budget: sender.get_environment(model_id, environment, budget))
        event = await watch.arun(read, clock=self._clock, sleep=self._sleep)
        (self.log.info if event["status"] == "success" else self.log.warning)("%s", event["message"])
        yield TriggerEvent(event)

    async def on_kill(self) -> None:
        """Cancel the promotion when a user kills the deferred task (Airflow 3.3+). Never on a restart or move."""
        if not self.cancel_on_kill:
            return
        self.log.info("Task killed by a user: canceling the promotion to %s.", self.environment)
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT_S):
                await self._hook().acancel_promotion(self.model_id, self.environment)
        except Exception as err:
            self.log.warning("Could not cancel the promotion to %s: %s: %s", self.environment, type(err).__name__, err)

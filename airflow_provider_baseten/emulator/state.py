"""Everything one emulator run holds, rebuilt from the world on every reset: clock, deployments, queue, journal."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TypedDict

from airflow_provider_baseten.emulator.async_queue import RETENTION_SECONDS, AsyncQueue
from airflow_provider_baseten.emulator.clock import VISIBLE_FLOOR_SECONDS, Clock, ManualClock, ScaledClock, Scheduler
from airflow_provider_baseten.emulator.faults import FaultInjector
from airflow_provider_baseten.emulator.journal import Journal
from airflow_provider_baseten.emulator.lifecycle import DeploymentRuntime, TargetRuntime
from airflow_provider_baseten.emulator.limits import Limits, RateLimiter
from airflow_provider_baseten.emulator.webhooks import WebhookSender
from airflow_provider_baseten.emulator.world import DEMO_API_KEY, KeyScope, TargetKind, World, iter_targets, keys_of

#: Records claim to have been created this long before the emulator started.
_CREATED_BEFORE_START = 7 * 86400.0


class Where(TypedDict, total=False):
    """Which deployment of a target, as :meth:`EmulatorState.deployment` takes it after the target id."""

    environment: str
    deployment_id: str | None
    kind: TargetKind


@dataclass
class EmulatorOptions:
    """How an emulator runs a world (everything but the world itself)."""

    api_key: str | None = DEMO_API_KEY
    keys: dict[str, KeyScope] = field(default_factory=dict)
    """Extra keys and their scope: ``"full"`` or ``"invoke"`` (models only; the management API answers 403)."""
    time_scale: float = 1.0
    manual_clock: bool = False
    limits: Limits = field(default_factory=Limits)
    webhook_timeout: float = 10.0
    deliver_external_webhooks: bool = False
    retention_seconds: float = RETENTION_SECONDS
    visible_floor: float = VISIBLE_FLOOR_SECONDS
    """Wall seconds a scale-down delay and a status retention last at least on a running clock (``Scheduler.hold``)."""
    journal_size: int = 100_000

    def clock(self) -> Clock:
        if self.manual_clock:
            return ManualClock(time_scale=self.time_scale)
        return ScaledClock(self.time_scale)


class EmulatorState:
    """One run of a world. Built and used on the server's event loop thread."""

    def __init__(self, world: World, options: EmulatorOptions) -> None:
        self.world = world
        self.options = options
        self.clock = options.clock()
        self.scheduler = Scheduler(self.clock, visible_floor=options.visible_floor)
        created_at = self.clock.now() - _CREATED_BEFORE_START
        self.targets: dict[tuple[TargetKind, str], TargetRuntime] = {
            (spec.kind, spec.id): TargetRuntime(spec, self.scheduler, created_at) for spec in iter_targets(world)
        }
        self.created_at = created_at
        self.keys = keys_of(world, options.api_key, options.keys)
        self.journal = Journal(options.journal_size)
        self.faults = FaultInjector()
        self.limiter = RateLimiter(options.limits)
        self.webhooks = WebhookSender(
            world.webhook_secrets, timeout=options.webhook_timeout, deliver_external=options.deliver_external_webhooks
        )
        self.queue = AsyncQueue(self.scheduler, self.webhooks, retention_seconds=options.retention_seconds)
        self._driver: asyncio.Task[None] | None = None

    @property
    def limits(self) -> Limits:
        return self.options.limits

    def start(self) -> None:
        """Start firing timers (call on the loop)."""
        self._driver = asyncio.get_running_loop().create_task(self.scheduler.drive())

    async def close(self) -> None:
        self.queue.close()
        for target in self.targets.values():
            target.close()
        self.scheduler.clear()
        if self._driver is not None:
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver
        await self.webhooks.aclose()

    def deployment(
        self,
        target_id: str,
        *,
        environment: str = "production",
        deployment_id: str | None = None,
        kind: TargetKind = "model",
    ) -> DeploymentRuntime:
        """A deployment by environment (``development`` for the development deployment) or id; ``KeyError`` if none."""
        target = self.targets[(kind, target_id)]
        if deployment_id is not None:
            return target.deployments[deployment_id]
        if environment == "development" and target.development is not None:
            return target.development
        return target.by_environment[environment]

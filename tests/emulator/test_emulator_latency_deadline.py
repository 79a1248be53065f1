"""A model's latency counts from the request's arrival (a deadline), not from after the emulator's own work."""

from __future__ import annotations

import asyncio

from airflow_provider_baseten.emulator import DeploymentSpec, ModelSpec
from airflow_provider_baseten.emulator.behaviours import Echo, Sleep
from airflow_provider_baseten.emulator.clock import ManualClock, Scheduler
from airflow_provider_baseten.emulator.lifecycle import DeploymentRuntime

SPEC = ModelSpec("deadline01", Sleep(0.05, Echo()), deployments=[DeploymentSpec("deadlineprod01", min_replicas=1)])


async def _due_after(spent: float | None) -> tuple[bool, bool]:
    """Invoke a 50 ms model whose request arrived ``spent`` s ago (None: no arrival given); done at +19 ms, +21 ms."""
    scheduler = Scheduler(ManualClock(start=1000.0))
    deployment = DeploymentRuntime(SPEC, SPEC.deployments[0], scheduler, 1000.0)
    arrived = None if spent is None else scheduler.now() - spent
    task = asyncio.ensure_future(deployment.invoke({"text": "hi"}, route="predict", time_limit=60.0, arrived=arrived))
    await scheduler.advance(0.019)
    early = task.done()
    await scheduler.advance(0.002)
    late = task.done()
    if late:
        assert task.result() is not None
    task.cancel()
    scheduler.clear()
    return early, late


def test_the_reply_is_due_at_arrival_plus_the_models_latency() -> None:
    # 30 ms of the emulator's parsing and queueing already passed: 20 ms of the model's 50 ms are left.
    assert asyncio.run(_due_after(0.03)) == (False, True)


def test_without_an_arrival_the_whole_latency_runs_from_now() -> None:
    assert asyncio.run(_due_after(None)) == (False, False)

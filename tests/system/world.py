"""The emulator world of the system tests: the default demo world plus one model per scenario.

A model per scenario keeps the journal unambiguous: "one ``async_predict`` POST per task" is counted on that
scenario's own host (``model-<id>.api.baseten.co``). A *gated* model is scaled to zero with a cold start that never
ends on its own, so its async requests stay ``QUEUED`` until the test calls :func:`open_gate` (or never, for the
cancel scenarios).
"""

from __future__ import annotations

from typing import Any

#: A cold start no scenario outlives (emulated seconds): the gate stays shut until the test opens it.
GATE_COLD_START_S = 10_000_000.0

FLEET_MODEL = "sysfleet01"  # triggerer SIGKILLed while tasks are deferred
RETRY_MODEL = "sysretry01"  # worker killed after submit; the retry re-attaches
CANCEL_MODEL = "syscancel01"  # a user marks the deferred task failed
TIMEOUT_MODEL = "systimeout01"  # execution_timeout passes while deferred
SOAK_ASYNC_MODEL = "syssoak01"  # 200 async requests under injected faults
SOAK_BATCH_MODEL = "sysbatch01"  # a 2,000-input batch under injected faults
COLD_MODEL = "syscold01"  # woken before a batch window
HA_MODEL = "sysha01"  # two triggerers on PostgreSQL, one SIGKILLed
SECRETS_MODEL = "syssecret01"  # the secrets scenario's own sync traffic
SECRETS_ASYNC_MODEL = "syssecretq01"  # ... and its deferred async request
ASYNC_BATCH_MODEL = "sysabatch01"  # one async batch task; its triggerer SIGKILLed mid-wait
WINDOW_MODEL = "syswindow01"  # scaled up for a batch window (setup retried), restored after a failed batch

GATED = (FLEET_MODEL, RETRY_MODEL, CANCEL_MODEL, TIMEOUT_MODEL, HA_MODEL, SECRETS_ASYNC_MODEL, ASYNC_BATCH_MODEL)


def system_world(cold_start_s: float) -> Any:
    """``World.default()`` plus the scenario models; ``cold_start_s`` is the wake scenario's emulated cold start."""
    from airflow_provider_baseten.emulator.world import DeploymentSpec, ModelSpec, World

    world = World.default()
    for model_id in GATED:
        world.add(
            ModelSpec(
                model_id,
                "echo",
                deployments=[
                    DeploymentSpec(
                        f"{model_id[:-2]}dep",
                        status="SCALED_TO_ZERO",
                        cold_start_seconds=GATE_COLD_START_S,
                        predict_concurrency=64,
                    )
                ],
            )
        )
    for model_id in (SOAK_ASYNC_MODEL, SOAK_BATCH_MODEL, SECRETS_MODEL):
        world.add(
            ModelSpec(
                model_id,
                "echo",
                deployments=[DeploymentSpec(f"{model_id[:-2]}dep", min_replicas=1, predict_concurrency=128)],
            )
        )
    world.add(
        ModelSpec(
            COLD_MODEL,
            "sentiment",
            deployments=[
                DeploymentSpec(
                    "syscolddep",
                    status="SCALED_TO_ZERO",
                    cold_start_seconds=cold_start_s,
                    scale_down_delay=3600,
                    predict_concurrency=16,
                )
            ],
        )
    )
    world.add(
        ModelSpec(
            WINDOW_MODEL,
            "echo",
            deployments=[DeploymentSpec("syswindowdep", status="SCALED_TO_ZERO", cold_start_seconds=150)],
        )
    )
    return world

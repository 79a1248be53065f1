"""A local Baseten: a real HTTP server that routes on the ``Host`` header like Baseten's edge.

The embedded default for the demo, this project's tests and users' own DAG tests. Start it from Python
(``with Emulator() as emu: ...``), from the command line (``python -m airflow_provider_baseten.emulator``) or with
the ``baseten_emulator`` pytest fixture; point a ``baseten`` connection's host at ``emu.url``. See
``docs/emulator.md``.

Imports are lazy: ``import airflow_provider_baseten.emulator`` costs nothing until a name is used, and nothing here
imports Airflow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_baseten.emulator.behaviours import Behaviour, ModelError, ModelRequest, Reply
    from airflow_provider_baseten.emulator.faults import FaultPlan
    from airflow_provider_baseten.emulator.limits import Limits
    from airflow_provider_baseten.emulator.server import Emulator
    from airflow_provider_baseten.emulator.world import (
        DEMO_API_KEY,
        DEMO_WEBHOOK_SECRET,
        ChainSpec,
        DeploymentSpec,
        ModelSpec,
        World,
    )

__all__ = [
    "DEMO_API_KEY",
    "DEMO_WEBHOOK_SECRET",
    "Behaviour",
    "ChainSpec",
    "DeploymentSpec",
    "Emulator",
    "FaultPlan",
    "Limits",
    "ModelError",
    "ModelRequest",
    "ModelSpec",
    "Reply",
    "World",
]

_WHERE = {
    "Emulator": "server",
    "World": "world",
    "ModelSpec": "world",
    "ChainSpec": "world",
    "DeploymentSpec": "world",
    "DEMO_API_KEY": "world",
    "DEMO_WEBHOOK_SECRET": "world",
    "Behaviour": "behaviours",
    "ModelError": "behaviours",
    "ModelRequest": "behaviours",
    "Reply": "behaviours",
    "FaultPlan": "faults",
    "Limits": "limits",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

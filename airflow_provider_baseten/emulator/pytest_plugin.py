"""pytest plugin (entry point ``pytest11``): the ``baseten_emulator`` fixture, for this project's and users' tests.

::

    def test_my_dag(baseten_emulator):
        # AIRFLOW_CONN_BASETEN_DEFAULT points at the emulator for this test
        ...
        assert baseten_emulator.journal.count(method="POST", path_suffix="/predict") == 1

    @pytest.mark.baseten_emulator(manual_clock=True, world=my_world)
    def test_cold_start(baseten_emulator):
        baseten_emulator.advance(180)

One server runs per test session; every test gets it reset to a fresh world (default :meth:`World.default`), an
empty journal, no faults and fresh limits, so tests stay isolated and starting costs a reset, not a server.
The ``baseten_emulator`` marker overrides options for one test: ``world`` (a ``World`` or a callable returning
one), ``manual_clock``, ``time_scale``, ``api_key``, ``keys``, ``limits``, ``webhook_timeout``,
``deliver_external_webhooks``, ``retention_seconds``, ``visible_floor``.

Time runs 200 times faster than the wall, except what a client polls for: a deployment stays ``ACTIVE`` and a finished
async request keeps its status at least ``visible_floor`` (120) wall seconds, so operators at their default poll
intervals see what they would see on Baseten (``Scheduler.hold``).

This module imports nothing from Airflow (pytest loads plugins before a conftest can set ``AIRFLOW_HOME``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_provider_baseten.emulator.server import Emulator

#: Emulated seconds per wall second in tests: a 180 s cold start takes 0.9 s, a 5 s model call 25 ms (the 900 s
#: scale-down delay lasts 120 s of wall time: the emulator's visible floor).
DEFAULT_TIME_SCALE = 200.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "baseten_emulator(**options): options of the baseten_emulator fixture for this test "
        "(world, manual_clock, time_scale, api_key, keys, limits, webhook_timeout, visible_floor, ...)",
    )


def _default_options() -> dict[str, Any]:
    from airflow_provider_baseten.emulator.limits import Limits
    from airflow_provider_baseten.emulator.state import EmulatorOptions

    defaults = EmulatorOptions(time_scale=DEFAULT_TIME_SCALE)
    return {name: getattr(defaults, name) for name in defaults.__dataclass_fields__} | {"limits": Limits()}


@pytest.fixture(scope="session")
def baseten_emulator_server() -> Iterator[Emulator]:
    """The session's emulator server (prefer ``baseten_emulator``, which resets it for each test)."""
    from airflow_provider_baseten.emulator.server import Emulator

    emulator = Emulator(time_scale=DEFAULT_TIME_SCALE).start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def baseten_emulator(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    baseten_emulator_server: Emulator,
) -> Emulator:
    """A running emulator with a fresh world, and ``AIRFLOW_CONN_BASETEN_DEFAULT`` pointing at it.

    Unless the test run sets ``[baseten] output_location`` itself, it points at this test's ``tmp_path``, so batch
    outputs (and large results) land in a folder the test can read and pytest cleans up.
    """
    from airflow_provider_baseten.emulator.world import World

    options = _default_options()
    marker = request.node.get_closest_marker("baseten_emulator")
    overrides = dict(marker.kwargs) if marker else {}
    world = overrides.pop("world", None)
    if callable(world):
        world = world()
    options.update(overrides)
    emulator = baseten_emulator_server
    emulator.reset(world or World.default(), **options)
    monkeypatch.setenv("AIRFLOW_CONN_BASETEN_DEFAULT", emulator.conn_uri())
    if not os.environ.get("AIRFLOW__BASETEN__OUTPUT_LOCATION"):
        monkeypatch.setenv("AIRFLOW__BASETEN__OUTPUT_LOCATION", (tmp_path / "baseten-outputs").as_uri())
    return emulator

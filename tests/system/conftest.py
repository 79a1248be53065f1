"""Fixtures of the system tests: one emulator and one real Airflow (SQLite, LocalExecutor) shared by the scenarios.

Every test under ``tests/system`` is marked ``system``. Starting Airflow costs about 25 s, so the SQLite cluster is
started once per session and shared; scenarios isolate themselves by DAG id, run id and the request ids they
created. The PostgreSQL cluster of the two-triggerer scenario is started only when that scenario runs, after the
SQLite cluster has been stopped (:class:`ClusterPool` keeps one cluster running at a time on this 2-core machine).
A per-scenario runtime table is printed at the end of the session.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system.evidence import SecretsEvidence
from tests.system.harness import AirflowCluster, ClusterPool
from tests.system.world import system_world

SYSTEM_DIR = Path(__file__).resolve().parent

# Run order: the scenarios that produce evidence first, the secrets scan after them (it reads what they left), the
# browser test, then the PostgreSQL scenario (which stops the shared SQLite cluster).
MODULE_ORDER = {
    "test_harness": 0,
    "test_async_resilience": 10,
    "test_wake_window": 20,
    "test_fault_soak": 30,
    "test_connection_form": 70,
    "test_secrets": 80,
    "test_two_triggerers": 90,
    "test_distributed": 95,
}

# Emulated seconds per wall second, and the wake scenario's cold start in wall seconds: long enough to see the wake
# task deferred and its slot free, short enough for CI.
TIME_SCALE = float(os.environ.get("BASETEN_SYSTEM_TIME_SCALE", "15"))
COLD_START_WALL_S = float(os.environ.get("BASETEN_SYSTEM_COLD_START_S", "20"))

_RUNTIMES: list[tuple[str, str, float, float, str]] = []
_SETUP: dict[str, float] = {}


def pytest_configure(config: pytest.Config) -> None:
    # A SIGTERM (CI cancelling the job, `timeout`) must still run the fixtures' finalizers that stop Airflow.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        if SYSTEM_DIR not in Path(str(item.fspath)).parents:
            return -1
        return MODULE_ORDER.get(Path(str(item.fspath)).stem, 50)

    for item in items:
        if SYSTEM_DIR in Path(str(item.fspath)).parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(900))  # a backstop: every wait inside is bounded far below it
    items.sort(key=rank)  # stable: the order inside a module is kept


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if SYSTEM_DIR not in Path(str(item.fspath)).parents:
        return
    if report.when == "setup":
        _SETUP[item.nodeid] = report.duration
    if report.when == "call" or (report.when == "setup" and not report.passed):
        status = "skipped" if report.skipped else ("passed" if report.passed else "FAILED")
        phases = ", ".join(dict(item.user_properties).get("phases", []))
        name = item.nodeid.split("::", 1)[-1]
        _RUNTIMES.append((name, status, _SETUP.get(item.nodeid, 0.0), report.duration, phases))
    if report.failed:
        pool: ClusterPool | None = getattr(item.config, "_baseten_cluster_pool", None)
        if pool is not None:
            for name, cluster in pool.clusters.items():
                report.sections.append((f"airflow {name} processes", cluster.log_report()))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _RUNTIMES:
        return
    tr = terminalreporter
    tr.write_sep("=", "system scenarios: runtime (setup includes starting Airflow when a test is first to need it)")
    width = max(len(name) for name, *_ in _RUNTIMES)
    tr.write_line(f"{'scenario'.ljust(width)}  {'outcome':8} {'setup s':>8} {'run s':>8}  phases (s since start)")
    total = 0.0
    for name, status, setup, call, phases in _RUNTIMES:
        total += setup + call
        tr.write_line(f"{name.ljust(width)}  {status:8} {setup:8.1f} {call:8.1f}  {phases}")
    tr.write_line(f"{'total'.ljust(width)}  {'':8} {total:17.1f}")


# ---------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def system_api_key() -> str:
    """A fresh, unmistakable API key: the secrets scenario searches every artefact for it."""
    return f"sk-systest-{secrets.token_hex(16)}"


@pytest.fixture(scope="session")
def emulator(system_api_key: str) -> Iterator[Any]:
    """The Baseten emulator on a free loopback port in a thread of the test process (scenarios read its journal)."""
    emulator_mod = pytest.importorskip("airflow_provider_baseten.emulator")
    world = system_world(cold_start_s=COLD_START_WALL_S * TIME_SCALE)
    with emulator_mod.Emulator(world=world, api_key=system_api_key, time_scale=TIME_SCALE, port=0) as emu:
        yield emu


@pytest.fixture
def phase(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``phase("deferred")`` records when a scenario reached a step; the runtime table shows the steps."""
    started = time.monotonic()
    marks: list[str] = []
    request.node.user_properties.append(("phases", marks))

    def mark(label: str) -> None:
        marks.append(f"{label} {time.monotonic() - started:.0f}")

    return mark


@pytest.fixture(scope="session")
def evidence() -> SecretsEvidence:
    return SecretsEvidence()


@pytest.fixture(scope="session")
def system_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="baseten-system-"))
    yield root
    if os.environ.get("BASETEN_SYSTEM_KEEP") != "1":
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster_pool(request: pytest.FixtureRequest, emulator: Any, system_root: Path) -> Iterator[ClusterPool]:
    pool = ClusterPool(system_root, {"baseten_default": emulator.conn_uri()})
    request.config._baseten_cluster_pool = pool  # type: ignore[attr-defined]
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def airflow_cluster(cluster_pool: ClusterPool) -> AirflowCluster:
    """The shared SQLite + LocalExecutor Airflow, started on first use; fails fast if a process died."""
    cluster = cluster_pool.get("sqlite")
    dead = [proc for proc in cluster.processes.values() if not proc.alive]
    for proc in dead:
        proc.start()  # a previous scenario killed it and failed before restarting it
    if dead:
        cluster.wait_healthy()
    return cluster

"""Distributed Airflow: CeleryExecutor with a real Redis, two Celery workers, three triggerers, PostgreSQL.

* A batch sharded over mapped tasks runs on both workers; one worker is SIGKILLed mid-shard; the retry runs on the
  other worker, resumes from the shared output directory, and the journal shows no input predicted twice.
* Many deferred async tasks spread over three triggerers poll one key against the emulator's 20 req/s status limit:
  every task green, and the aggregate status traffic over every 5 s window once converged is reported and checked.
* Every Airflow process behind a loopback recording forward proxy (``HTTP_PROXY``/``HTTPS_PROXY``, ``NO_PROXY`` for
  the api-server): every Baseten request the emulator answered went through the proxy.

The module has its own emulator on 127.0.0.2 (so ``NO_PROXY=127.0.0.1`` exempts only Airflow's own traffic) and its
own installation (``celery``); it runs after the other system scenarios and skips with the reason when PostgreSQL or
``redis-server`` is missing. Sizes: ``SYSTEST_DIST_SHARDS`` x ``SYSTEST_DIST_SHARD_SIZE`` (default 4 x 40) and
``SYSTEST_DIST_RATE_SIZE`` (default 36; the DAG file reads the same variables).
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from benchmarks.triggerer_convergence import window_rates
from tests.system import world
from tests.system.evidence import accepted_submits, journal, model_host, records
from tests.system.harness import AirflowCluster, ClusterPool, celery_env, wait_for
from tests.system.postgres import PostgresCluster, PostgresUnavailable
from tests.system.proxy import RecordingProxy
from tests.system.redis_broker import RedisServer, RedisUnavailable

pytestmark = pytest.mark.system
Phase = Callable[[str], None]

SHARDS = int(os.environ.get("SYSTEST_DIST_SHARDS", "4"))
SHARD_SIZE = int(os.environ.get("SYSTEST_DIST_SHARD_SIZE", "40"))
RATE_SIZE = int(os.environ.get("SYSTEST_DIST_RATE_SIZE", "36"))
WORKERS = ("worker-a", "worker-b")
TRIGGERERS = ("triggerer-a", "triggerer-b", "triggerer-c")
BATCH_MODEL, RATE_MODEL, PROXY_MODEL = "sysdistb01", "sysdistr01", "sysdistp01"
EMULATOR_HOST = "127.0.0.2"
TIME_SCALE = float(os.environ.get("BASETEN_SYSTEM_TIME_SCALE", "15"))  # as conftest.py
STATUS_LIMIT = 20.0  # the emulator's (and Baseten's documented) async status limit, req/s per organization
WINDOW_S = 5.0
# A sum of rates 0.7 req/s over the limit spends the emulator's 20-token burst in about 30 s before its first 429:
# a shorter quiet spell can fall between two rounds of 429s and call that converged.
QUIET_S = float(os.environ.get("SYSTEST_DIST_QUIET_S", "30"))
MEASURE_S = float(os.environ.get("SYSTEST_DIST_MEASURE_S", "30"))


def _dist_world() -> Any:
    from airflow_provider_baseten.emulator.behaviours import Sleep
    from airflow_provider_baseten.emulator.world import DeploymentSpec, ModelSpec

    dist = world.system_world(cold_start_s=60)
    # 0.4 wall seconds per predict: a shard of 40 items takes 16 s, long enough to kill a worker mid-shard.
    dist.add(
        ModelSpec(
            BATCH_MODEL,
            Sleep(0.4 * TIME_SCALE),
            deployments=[DeploymentSpec("sysdistbdep", min_replicas=1, predict_concurrency=64)],
        )
    )
    dist.add(
        ModelSpec(
            RATE_MODEL,
            "echo",
            deployments=[
                DeploymentSpec(
                    "sysdistrdep",
                    status="SCALED_TO_ZERO",
                    cold_start_seconds=world.GATE_COLD_START_S,
                    predict_concurrency=64,
                )
            ],
        )
    )
    # 2 wall seconds per predict: the async request is still running when the worker reads it, so the task defers
    # and the triggerer's polls (not only the worker's) must pass the proxy.
    dist.add(
        ModelSpec(
            PROXY_MODEL,
            Sleep(2 * TIME_SCALE),
            deployments=[DeploymentSpec("sysdistpdep", min_replicas=1, predict_concurrency=16)],
        )
    )
    return dist


@dataclass
class Backends:
    postgres: PostgresCluster
    redis: RedisServer


@pytest.fixture(scope="module")
def dist_emulator(system_api_key: str) -> Iterator[Any]:
    emulator_mod = pytest.importorskip("airflow_provider_baseten.emulator")
    with emulator_mod.Emulator(
        world=_dist_world(), api_key=system_api_key, time_scale=TIME_SCALE, port=0, host=EMULATOR_HOST
    ) as emu:
        yield emu


@pytest.fixture(scope="module")
def backends(cluster_pool: ClusterPool, system_root: Path) -> Iterator[Backends]:
    try:
        redis = RedisServer.start(system_root / "redis")
    except RedisUnavailable as err:
        pytest.skip(f"Redis unavailable: {err}")
    try:
        postgres = PostgresCluster.start()
    except PostgresUnavailable as err:
        redis.stop()
        pytest.skip(f"PostgreSQL unavailable: {err}")
    try:
        yield Backends(postgres, redis)
    finally:
        cluster_pool.stop("celery")  # Airflow first, then its broker and database
        redis.stop()
        postgres.stop()


@pytest.fixture(scope="module")
def celery_cluster(cluster_pool: ClusterPool, backends: Backends, dist_emulator: Any) -> AirflowCluster:
    extra = {
        **celery_env(backends.redis.url, backends.postgres.url),
        "AIRFLOW_CONN_BASETEN_DEFAULT": dist_emulator.conn_uri(),
        # Each triggerer takes at most a third of the fleet, so the three share it. (A margin of 10 let two of
        # them take it all: 0/15/21 on 2026-12-03, and the scenario never saw three triggerers.)
        "AIRFLOW__TRIGGERER__CAPACITY": str(math.ceil(RATE_SIZE / len(TRIGGERERS))),
        # A SIGKILLed worker's task is failed (and retried) once its heartbeat is this old.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(max(64, RATE_SIZE + 10)),
        # The one api-server worker answers slowly on a loaded 2-core machine; a task must not fail its try on that.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
    }
    return cluster_pool.get(
        "celery",
        sql_alchemy_conn=backends.postgres.url,
        triggerers=TRIGGERERS,
        workers=WORKERS,
        extra_env=extra,
    )


def _sql(postgres: PostgresCluster, query: str) -> list[tuple[Any, ...]]:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=postgres.port, user="airflow", dbname="airflow")
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return list(cur.fetchall())
    finally:
        conn.close()


def _lines(path: Path) -> list[dict[str, Any]]:
    import json

    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


# ------------------------------------------------------------------------------------------- scenario A: batch
def test_batch_shards_resume_on_the_other_worker_after_sigkill(
    celery_cluster: AirflowCluster, dist_emulator: Any, system_root: Path, phase: Phase
) -> None:
    from airflow_provider_baseten.emulator import FaultPlan

    api, dag_id, emu = celery_cluster.api, "systest_dist_batch", dist_emulator
    api.wait_dag(dag_id)
    shared = system_root / "shared-output"  # one directory both workers see (same machine: a shared volume)
    run_id = api.trigger(dag_id, conf={"output_dir": str(shared)})
    files = [shared / f"shard-{i}.jsonl" for i in range(SHARDS)]

    def all_running_and_writing() -> list[dict[str, Any]] | None:
        tis = api.task_instances(dag_id, run_id)
        ok = len(tis) == SHARDS and all(ti["state"] == "running" for ti in tis)
        return tis if ok and all(len(_lines(f)) >= 3 for f in files) else None

    tis = wait_for(all_running_and_writing, timeout=240, what="every shard running and writing")
    first_hosts = {ti["map_index"]: ti["hostname"] for ti in tis}
    assert {ti["try_number"] for ti in tis} == {1}, f"a first try failed before the kill: {tis}"
    assert set(first_hosts.values()) == set(WORKERS), f"shards not spread over both workers: {first_hosts}"
    phase("shards running on both workers")

    # From now on every predict meets a 503 (before the model runs) with Retry-After: each shard's next item waits
    # in the hook's backoff, so the worker is killed mid-shard with a known item in flight that never ran.
    emu.faults.add(FaultPlan(route="predict", target_id=BATCH_MODEL, sequence=[503] * 100_000, retry_after=20))
    try:
        wait_for(
            lambda: len([e for e in journal(emu, BATCH_MODEL, "predict", "POST") if e.status == 503]) >= SHARDS,
            timeout=30,
            what="every shard waiting out a 503",
        )
        victim = first_hosts[0]
        killed = sorted(i for i, host in first_hosts.items() if host == victim)
        written_before = {i: len(_lines(files[i])) for i in killed}
        celery_cluster.processes[victim].kill()
        phase(f"{victim} SIGKILLed with shards {killed} at {written_before} lines")
    finally:
        emu.faults.clear()

    assert api.wait_run(dag_id, run_id, timeout=420) == "success", api.ti_states(dag_id, run_id)
    phase("run green")
    survivor = next(w for w in WORKERS if w != victim)
    for ti in api.task_instances(dag_id, run_id):
        index = ti["map_index"]
        if index in killed:
            assert ti["try_number"] == 2, f"shard {index} should have been retried once: {ti}"
            assert ti["hostname"] == survivor, f"shard {index}'s retry ran on {ti['hostname']}"
            log = api.task_log(dag_id, run_id, "shard", 2, map_index=index)
            assert "Resuming:" in log, f"shard {index}'s retry did not resume: {log[-3000:]}"
        else:
            assert ti["try_number"] == 1

    expected_n = set(range(SHARDS * SHARD_SIZE))
    seen: list[int] = []
    for i, path in enumerate(files):
        lines = _lines(path)
        assert sorted(line["index"] for line in lines) == list(range(SHARD_SIZE)), f"shard {i}: lost or doubled"
        assert all("output" in line for line in lines), f"shard {i} has error lines: {lines[:3]}"
        seen.extend(line["output"]["n"] for line in lines)
    assert sorted(seen) == sorted(expected_n)
    ran = [e for e in journal(emu, BATCH_MODEL, "predict", "POST") if e.model_ran]
    # As many model runs as inputs, and every input has its output: no input was predicted twice.
    assert len(ran) == SHARDS * SHARD_SIZE, f"{len(ran)} model runs for {SHARDS * SHARD_SIZE} inputs"


# ---------------------------------------------------------------------------- scenario B: three triggerers
# Gated until 2026-12-03: with a triggerer capacity of a third of the fleet plus 10, two triggerers could take it
# all (0/15/21) or spread it unevenly (2/12/22, 6/8/22), and one of seven runs peaked at 20.6-22.6 req/s. With each
# triggerer taking a third (12/12/12), three runs that day: 16.8, 18.4 and 16.2 req/s peak, no 429 once converged.
@pytest.mark.timeout(max(2400, 6 * RATE_SIZE))  # deferring takes ~4 s a task through two workers on a loaded machine
def test_three_triggerers_hold_the_status_limit_together(
    celery_cluster: AirflowCluster, backends: Backends, dist_emulator: Any, phase: Phase
) -> None:
    """Three triggerers, one key, the emulator's 20 req/s status limit: every 5 s window once converged <= 20.

    N = 36 mapped tasks, not the issue's 600: deferring a task through two Celery workers costs 1-4 s of a worker
    slot on the 2-core machine (600 would take 10-40 minutes; this test has about 2). 36 triggers at
    ``poll_interval=1`` still ask for 1.8 x the limit, 12 per triggerer, so the three budgets must meet it.
    """
    api, dag_id, emu = celery_cluster.api, "systest_dist_rate", dist_emulator
    api.wait_dag(dag_id)
    started = time.monotonic()
    run_id = api.trigger(dag_id)
    api.wait_tis(
        dag_id,
        run_id,
        lambda tis: len(tis) == RATE_SIZE and all(ti["state"] == "deferred" for ti in tis),
        timeout=max(900, 3 * RATE_SIZE),  # 600 took 13.5 minutes on an idle machine (2026-12-07)
        what=f"all {RATE_SIZE} tasks deferred",
    )
    phase(f"{RATE_SIZE} deferred after {time.monotonic() - started:.0f} s")

    def spread() -> dict[Any, int] | None:
        # Straight from PostgreSQL (no Airflow import per probe: seconds on a loaded machine); only this
        # scenario's triggers exist in this installation now.
        by = dict(_sql(backends.postgres, "SELECT triggerer_id, count(*) FROM trigger GROUP BY triggerer_id"))
        return by if sum(by.values()) == RATE_SIZE and None not in by and len(by) == len(TRIGGERERS) else None

    per_triggerer = wait_for(spread, timeout=120, what="the triggers spread over three triggerers")
    spread_at = time.time()
    phase(f"triggers per triggerer {sorted(per_triggerer.values())}")

    # "Once converged": every trigger polls from its triggerer, the budgets have met the limit (the first 429s) and
    # then seen none for QUIET_S (a budget that met a 429 climbs back to its aim within seconds and stays there).
    # Measured from then on, never from before the fleet was complete.
    def converged() -> float | None:
        statuses = [(e.time, e.status) for e in journal(emu, RATE_MODEL, "async_status", "GET")]
        throttled = [t for t, status in statuses if status == 429]
        if not throttled and len(statuses) < 40 * STATUS_LIMIT:
            return None  # not at the limit yet (nor long past it without a 429)
        last = max(throttled, default=statuses[0][0])
        return last if time.time() - last >= QUIET_S else None

    last_429 = wait_for(converged, timeout=180, interval=1, what=f"{QUIET_S:.0f} s without a 429")
    first_poll = journal(emu, RATE_MODEL, "async_status", "GET")[0].time
    phase(f"converged {last_429 - first_poll:.0f} s after the first status poll")
    t0 = max(last_429 + QUIET_S, spread_at)
    time.sleep(max(0.0, t0 + MEASURE_S - time.time()))  # a measurement window, not a timeout
    t1 = time.time()
    polls = [e for e in journal(emu, RATE_MODEL, "async_status", "GET") if t0 <= e.time < t1]
    rates = window_rates([e.time for e in polls], t0, t1, WINDOW_S)
    throttled = sum(1 for e in polls if e.status == 429)
    peak = max(rates)
    figure = (
        f"{len(polls) / (t1 - t0):.1f} req/s mean, {peak:.1f} req/s peak {WINDOW_S:.0f} s window, "
        f"{throttled} x 429 of {len(polls)} in {t1 - t0:.0f} s, converged {last_429 - first_poll:.0f} s "
        "after the first poll"
    )
    phase(figure)
    print(f"three-triggerer status traffic once converged: {figure}")

    emu.set_status(RATE_MODEL, "ACTIVE")
    # Every task resumes on a worker slot to finish: 600 took over 10 minutes (564 done after 600 s, none failed).
    drain = max(600, 2 * RATE_SIZE)
    # An ended request's status is kept an hour (240 wall s at time scale 15), less than that drain: read the
    # emulator's records once every trigger has fired (a trigger fires only on the end state it read).
    api.wait_tis(
        dag_id,
        run_id,
        lambda tis: not any(ti["state"] == "deferred" for ti in tis),
        timeout=drain,
        what="every trigger fired",
    )
    ended = Counter(rec.status.value for rec in records(emu, RATE_MODEL).values())
    assert api.wait_run(dag_id, run_id, timeout=drain) == "success", api.ti_states(dag_id, run_id)
    phase("run green")
    assert {ti["state"] for ti in api.task_instances(dag_id, run_id)} == {"success"}
    assert len(accepted_submits(emu, RATE_MODEL)) == RATE_SIZE
    assert ended == {"SUCCEEDED": RATE_SIZE}
    # Requests per second over the measured window: a surge (an event loop catching up, triggers moving between
    # triggerers) looks unlike a sum of rates sitting at the limit.
    per_second = [sum(1 for e in polls if t0 + i <= e.time < t0 + i + 1) for i in range(int(t1 - t0))]
    assert peak <= STATUS_LIMIT, f"aggregate status traffic over the limit once converged: {figure}; {per_second}"


# ------------------------------------------------------------------------------- scenario C: forward proxy
PROXY_ENV_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")


def test_every_process_behind_a_forward_proxy(
    celery_cluster: AirflowCluster, dist_emulator: Any, system_root: Path, phase: Phase
) -> None:
    emu = dist_emulator
    with RecordingProxy() as proxy:
        celery_cluster.stop_all()
        celery_cluster.set_env(
            {
                **dict.fromkeys(PROXY_ENV_NAMES, proxy.url),
                # The api-server (execution API) and the proxy itself are on 127.0.0.1; the emulator is not.
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
            }
        )
        celery_cluster.start_all(timeout=600)  # a restart of nine processes; minutes on a loaded machine
        phase("Airflow restarted behind the proxy")
        api = celery_cluster.api
        since = time.time()
        runs = []
        for dag_id, conf in (
            ("systest_smoke", {}),
            ("systest_dist_proxy", {"output_dir": str(system_root / "proxy-output")}),
        ):
            api.wait_dag(dag_id)
            runs.append((dag_id, api.trigger(dag_id, conf=conf)))
        for dag_id, run_id in runs:
            assert api.wait_run(dag_id, run_id, timeout=300) == "success", api.ti_states(dag_id, run_id)
        phase("runs green")
        proxy_run = runs[1][1]
        deferred_log = api.task_log("systest_dist_proxy", proxy_run, "async_predict", 1)
        assert "Deferring: the triggerer waits" in deferred_log, deferred_log[-3000:]
        answered = [e for e in emu.journal.entries() if e.time >= since]  # every model's, not only this DAG's
        proxied = proxy.snapshot()

    routes = Counter(e.route for e in answered if e.host == model_host(PROXY_MODEL))
    assert {"predict", "async_predict", "async_status"} <= set(routes), routes
    direct = Counter((e.host, e.method, e.path) for e in answered) - Counter(
        (r.host, r.method, r.path) for r in proxied
    )
    phase(f"{len(proxied)} proxied of {len(answered)} answered")
    assert not direct, (
        f"{sum(direct.values())} of {len(answered)} Baseten requests bypassed the proxy "
        f"(by route: {dict(Counter(e.route for e in answered if (e.host, e.method, e.path) in direct))}): "
        f"{dict(direct)}"
    )
    assert all(r.target.startswith(f"http://{EMULATOR_HOST}:") for r in proxied)

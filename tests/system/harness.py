"""Real Airflow processes on loopback for the system tests.

One :class:`AirflowCluster` is a scratch ``AIRFLOW_HOME`` (SQLite by default, PostgreSQL when given a URL) with
``airflow scheduler`` (LocalExecutor), ``airflow dag-processor``, ``airflow triggerer`` and ``airflow api-server`` as
separate process groups on 127.0.0.1. :class:`AirflowApi` drives it through the public REST API (``/api/v2`` with a
JWT from ``/auth/token``). Every wait is bounded; :func:`wait_for` raises :class:`WaitTimeout` naming what it waited
for, and the conftest attaches the tail of every process log to a failing test's report.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_DIR = Path(__file__).resolve().parent / "dags"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "system-tests-admin"

T = TypeVar("T")

#: Every process group started by this module, killed at interpreter exit whatever happened to the fixtures.
_LIVE: set[ManagedProcess] = set()


def kill_all_live() -> None:
    for proc in list(_LIVE):
        proc.signal_group(signal.SIGKILL)
    _LIVE.clear()


atexit.register(kill_all_live)


class WaitTimeout(AssertionError):
    """A bounded wait ran out; the message says what was awaited and the last value seen."""


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.5,
    what: str,
    describe: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy or ``timeout`` seconds pass (then raise WaitTimeout)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            extra = f"; {describe()}" if describe else ""
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r}){extra}")
        time.sleep(interval)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (asked of the kernel; closed again before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def generate_fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@dataclass(eq=False)
class ManagedProcess:
    """One long-running command in its own process group, its output appended to ``log_path``."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path = REPO_ROOT
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    expected_down: bool = False

    def start(self) -> None:
        if self.alive:
            return
        self.starts += 1
        self.expected_down = False
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.argv)} =====\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: a kill reaches its workers and runners too
            )
        _LIVE.add(self)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as a crashed machine would: no cleanup runs."""
        if self.popen is None:
            return
        self.expected_down = True
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        self._note("SIGKILL")

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the group, then SIGKILL what is left after ``timeout`` seconds."""
        if self.popen is None:
            return
        self.expected_down = True
        if self.popen.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=10)
        # Children that outlived their leader (task runners, log servers) still carry the group id.
        self.signal_group(signal.SIGKILL)
        _LIVE.discard(self)

    def _note(self, text: str) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"\n===== harness: {text} at {time.strftime('%H:%M:%S')} =====\n".encode())

    def tail(self, lines: int = 80) -> str:
        """The last ``lines`` lines of output, without the api-server's access log (it drowns everything else)."""
        if not self.log_path.exists():
            return "(no output)"
        data = self.log_path.read_bytes()[-400_000:].decode(errors="replace").splitlines()
        return "\n".join([line for line in data if "[http.access]" not in line][-lines:])


@dataclass
class AirflowCluster:
    """A scratch Airflow installation and its processes. Build with :meth:`create`, tear down with :meth:`stop_all`."""

    home: Path
    sql_alchemy_conn: str
    api_port: int
    env: dict[str, str]
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    running: bool = False
    _api: AirflowApi | None = None

    # ------------------------------------------------------------------ setup
    @classmethod
    def create(
        cls,
        home: Path,
        *,
        connections: dict[str, str],
        sql_alchemy_conn: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> AirflowCluster:
        home.mkdir(parents=True, exist_ok=True)
        (home / "logs").mkdir(exist_ok=True)
        conn = sql_alchemy_conn or f"sqlite:///{home / 'airflow.db'}"
        api_port = free_port()
        env = _airflow_env(home, conn, api_port, connections, extra_env or {})
        passwords = home / "passwords.json"
        passwords.write_text(json.dumps({ADMIN_USER: ADMIN_PASSWORD}))
        return cls(home=home, sql_alchemy_conn=conn, api_port=api_port, env=env)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def api(self) -> AirflowApi:
        if self._api is None:
            self._api = AirflowApi(self.api_url)
        return self._api

    def airflow(self, *args: str, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a one-shot ``airflow`` CLI command in this installation."""
        result = subprocess.run(
            [*_airflow_cmd(), *args],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    def python(self, code: str, *, timeout: float = 120) -> str:
        """Run Python in a subprocess configured like the Airflow processes (for direct DB reads); return stdout."""
        result = subprocess.run(
            [sys.executable, "-c", code],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"python snippet failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def migrate(self) -> None:
        self.airflow("db", "migrate")

    def process(self, name: str, *args: str, env: dict[str, str] | None = None) -> ManagedProcess:
        """Register (not start) a process ``airflow <args>`` under ``name``."""
        proc = ManagedProcess(
            name=name,
            argv=[*_airflow_cmd(), *args],
            env={**self.env, **(env or {})},
            log_path=self.home / f"{name}.out",
        )
        self.processes[name] = proc
        return proc

    def add_triggerer(self, name: str, *, capacity: int | None = None) -> ManagedProcess:
        """A triggerer; ``capacity`` caps the triggers it takes (so several triggerers share a fleet)."""
        # Each triggerer gets its own log-server port, so two of them can share the machine.
        env = {"AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}
        if capacity is not None:
            env["AIRFLOW__TRIGGERER__CAPACITY"] = str(capacity)
        return self.process(name, "triggerer", "--skip-serve-logs", env=env)

    def set_env(self, extra: dict[str, str]) -> None:
        """Add ``extra`` to the environment of the installation and of every registered process (from their
        next start on: call between :meth:`stop_all` and :meth:`start_all`)."""
        self.env.update(extra)
        for proc in self.processes.values():
            proc.env.update(extra)

    def add_celery_worker(self, name: str, *, concurrency: int = 2) -> ManagedProcess:
        """An ``airflow celery worker`` named ``name`` (its Celery node name and the tasks' ``hostname``).

        Needs the cluster created with :func:`celery_env`. Each worker has its own pid file and log-server port.
        """
        return self.process(
            name,
            "celery", "worker", "--concurrency", str(concurrency), "--celery-hostname", f"{name}@systest",
            "--pid", str(self.home / f"{name}.pid"), "--skip-serve-logs", "--without-gossip", "--without-mingle",
            env={"SYSTEST_HOSTNAME": name, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())},
        )  # fmt: skip

    def wait_celery_workers(self, names: Iterable[str], *, timeout: float = 120) -> None:
        """Wait until each worker's log says Celery is ``ready`` (connected to the broker, consuming)."""
        for name in names:
            proc = self.processes[name]

            def ready(proc: ManagedProcess = proc) -> bool:
                self.assert_running([proc.name])
                return proc.log_path.exists() and f"{proc.name}@systest ready" in proc.tail(400)

            wait_for(ready, timeout=timeout, interval=1, what=f"Celery worker {name} ready", describe=self.describe)

    def start_all(
        self, *, triggerers: Iterable[str] = ("triggerer",), workers: Iterable[str] = (), timeout: float = 180
    ) -> None:
        """Migrate, then start api-server, scheduler, dag-processor, triggerer(s) and Celery worker(s) (if any);
        wait until all are healthy.

        Called again after :meth:`stop_all`, it restarts the same processes (no second migration).
        """
        if not self.processes:
            self.migrate()
            self.process(
                "api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1"
            )
            self.process("scheduler", "scheduler", "--skip-serve-logs")
            self.process("dag-processor", "dag-processor")
            for name in triggerers:
                self.add_triggerer(name)
            for name in workers:
                self.add_celery_worker(name)
        for proc in self.processes.values():
            proc.start()
        self.running = True
        self.wait_healthy(timeout=timeout)
        self.wait_celery_workers(
            [n for n, p in self.processes.items() if p.argv[len(_airflow_cmd())] == "celery"], timeout=timeout
        )

    def wait_healthy(self, *, timeout: float = 120) -> dict[str, Any]:
        """Wait until the api-server answers and the scheduler, dag-processor and triggerer heartbeat as healthy."""

        def probe() -> dict[str, Any] | None:
            self.assert_running()
            try:
                health = httpx.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                return None
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            if all((health.get(p) or {}).get("status") == "healthy" for p in parts):
                return health
            return None

        return wait_for(probe, timeout=timeout, interval=1, what="a healthy Airflow", describe=self.describe)

    def assert_running(self, names: Iterable[str] | None = None) -> None:
        """Fail fast (with logs) when a process that should run has exited."""
        for name in names or self.processes:
            proc = self.processes[name]
            if proc.popen is not None and proc.popen.poll() is not None and not proc.expected_down:
                raise RuntimeError(f"{name} exited with {proc.popen.returncode}:\n{proc.tail(60)}")

    def restart(self, name: str) -> None:
        proc = self.processes[name]
        proc.stop()
        proc.start()

    def stop_all(self) -> None:
        self.running = False
        # Scheduler last: its LocalExecutor workers may still be reporting to the api-server.
        order = [n for n in self.processes if n not in ("scheduler", "api-server")] + ["scheduler", "api-server"]
        for name in order:
            if name in self.processes:
                self.processes[name].stop(timeout=5)

    def describe(self) -> str:
        states = ", ".join(
            f"{n}={'up' if p.alive else ('down' if p.popen else 'never started')}" for n, p in self.processes.items()
        )
        return f"processes: {states}; home: {self.home}"

    def log_report(self, lines: int = 60) -> str:
        """Tails of every process log, for a failing test's report."""
        parts = [f"AIRFLOW_HOME={self.home}"]
        for name, proc in self.processes.items():
            parts.append(f"----- {name} ({self.describe_one(name)}) -----\n{proc.tail(lines)}")
        return "\n".join(parts)

    def describe_one(self, name: str) -> str:
        proc = self.processes[name]
        if proc.popen is None:
            return "never started"
        code = proc.popen.poll()
        return f"pid {proc.popen.pid}, " + ("running" if code is None else f"exited {code}")

    # ------------------------------------------------------------------ DB reads (scenario evidence)
    def trigger_rows(self) -> list[dict[str, Any]]:
        """Rows of the ``trigger`` table with kwargs decrypted by Airflow itself, plus the raw stored text."""
        code = (
            "import json\n"
            "from sqlalchemy import select, text\n"
            "from airflow.models.trigger import Trigger\n"
            "from airflow.utils.session import create_session\n"
            "with create_session() as s:\n"
            "    raw = {r[0]: r[1] for r in s.execute(text('SELECT id, kwargs FROM trigger'))}\n"
            "    rows = [dict(id=t.id, classpath=t.classpath, triggerer_id=t.triggerer_id,\n"
            "                 kwargs=t.kwargs, raw=str(raw.get(t.id))) for t in s.scalars(select(Trigger))]\n"
            "print(json.dumps(rows, default=str))\n"
        )
        return json.loads(self.python(code).strip().splitlines()[-1])

    def triggerer_jobs(self) -> list[dict[str, Any]]:
        code = (
            "import json\n"
            "from sqlalchemy import select\n"
            "from airflow.jobs.job import Job\n"
            "from airflow.utils.session import create_session\n"
            "with create_session() as s:\n"
            "    jobs = s.scalars(select(Job).where(Job.job_type == 'TriggererJob')).all()\n"
            "    rows = [dict(id=j.id, state=j.state, hostname=j.hostname, latest_heartbeat=j.latest_heartbeat)\n"
            "            for j in jobs]\n"
            "print(json.dumps(rows, default=str))\n"
        )
        return json.loads(self.python(code).strip().splitlines()[-1])

    def log_files(self) -> Iterator[Path]:
        """Every file Airflow and the harness logged to: task, trigger, scheduler, dag-processor and process output."""
        yield from (p for p in (self.home / "logs").rglob("*") if p.is_file())
        yield from self.home.glob("*.out")


class ClusterPool:
    """At most one running Airflow at a time (2 cores); each kind (``sqlite``, ``postgres``) is created once and
    restarted, not rebuilt, if another kind ran in between."""

    def __init__(self, root: Path, connections: dict[str, str]) -> None:
        self.root = root
        self.connections = connections
        self.clusters: dict[str, AirflowCluster] = {}

    def get(
        self,
        name: str,
        *,
        sql_alchemy_conn: str | None = None,
        triggerers: tuple[str, ...] = ("triggerer",),
        workers: tuple[str, ...] = (),
        extra_env: dict[str, str] | None = None,
    ) -> AirflowCluster:
        cluster = self.clusters.get(name)
        if cluster is not None and cluster.running:
            return cluster
        for other in self.clusters.values():
            if other.running:
                other.stop_all()
        if cluster is None:
            cluster = AirflowCluster.create(
                self.root / name, connections=self.connections, sql_alchemy_conn=sql_alchemy_conn, extra_env=extra_env
            )
            self.clusters[name] = cluster
        cluster.start_all(triggerers=triggerers, workers=workers)
        return cluster

    def stop(self, name: str) -> None:
        cluster = self.clusters.get(name)
        if cluster is not None and cluster.running:
            cluster.stop_all()

    def close(self) -> None:
        for cluster in self.clusters.values():
            cluster.stop_all()
            cluster.api.close()


def celery_env(broker_url: str, sql_alchemy_conn: str) -> dict[str, str]:
    """``extra_env`` of a CeleryExecutor cluster: the broker, results in the metadata DB, workers named by
    ``SYSTEST_HOSTNAME`` (:mod:`tests.system.hostname`)."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.system.hostname.worker_hostname",
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + sql_alchemy_conn,
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
        "AIRFLOW__CELERY__WORKER_ENABLE_REMOTE_CONTROL": "False",
    }


def _airflow_cmd() -> list[str]:
    return [sys.executable, "-m", "airflow"]


def _airflow_env(
    home: Path, sql_alchemy_conn: str, api_port: int, connections: dict[str, str], extra: dict[str, str]
) -> dict[str, str]:
    """Environment for every process of one cluster: config only through env vars, nothing read from ~/airflow."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "PYTEST_", "COV_"))
        and k not in ("AIRFLOW_HOME", "AIRFLOW_CONFIG")
    }
    api_url = f"http://127.0.0.1:{api_port}"
    env = {
        **base,
        "AIRFLOW_HOME": str(home),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__BASETEN__OUTPUT_LOCATION": f"file://{home}/baseten-outputs",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "64",
        "AIRFLOW__CORE__FERNET_KEY": generate_fernet_key(),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
        "AIRFLOW__DATABASE__CHECK_MIGRATIONS": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API__EXPOSE_CONFIG": "False",
        # One signing secret for every process: the scheduler mints the execution-API tokens the api-server checks.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API_AUTH__JWT_EXPIRATION_TIME": "36000",
        "AIRFLOW__EXECUTION_API__JWT_EXPIRATION_TIME": "36000",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
        "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_SEC": "2",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2",
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__SCHEDULER__CATCHUP_BY_DEFAULT": "False",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "30",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        # A killed triggerer's triggers move to a live one once its heartbeat is older than this.
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "8",
        "AIRFLOW__TRIGGERER__CAPACITY": "1000",
        "AIRFLOW__TRIGGERER__ON_KILL_TIMEOUT": "20",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "600",
        "AIRFLOW__DAG_PROCESSOR__STALE_DAG_THRESHOLD": "600",
        "AIRFLOW__DAG_PROCESSOR__HEALTH_CHECK_THRESHOLD": "30",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
        "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
    }
    for conn_id, uri in connections.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = uri
    env.update(extra)
    return env


class AirflowApi:
    """A thin client of Airflow's public REST API (``/api/v2``) logged in as the admin user."""

    def __init__(self, base_url: str, *, username: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> None:
        self.base_url = base_url
        self._credentials = {"username": username, "password": password}
        self._client = httpx.Client(base_url=base_url, timeout=30)
        self._token: str | None = None
        self.triggered: list[tuple[str, str]] = []
        """(dag_id, run_id) of every run triggered through this client, for the secrets scan."""

    def close(self) -> None:
        self._client.close()

    @property
    def token(self) -> str:
        if self._token is None:
            resp = self._client.post("/auth/token", json=self._credentials)
            resp.raise_for_status()
            self._token = resp.json()["access_token"]
        return self._token

    def request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200,),
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        for attempt in range(6):
            try:
                resp = self._client.request(
                    method, path, headers={**(headers or {}), "Authorization": f"Bearer {self.token}"}, **kwargs
                )
            except httpx.TransportError:
                # The single api-server worker can be briefly busy under load; a bounded retry, not a wait loop.
                if attempt == 5:
                    raise
                time.sleep(1)
                continue
            if resp.status_code == 401 and attempt == 0:
                self._token = None
                continue
            if resp.status_code not in ok:
                raise AssertionError(f"{method} {path} -> {resp.status_code}: {resp.text[:2000]}")
            return resp
        raise AssertionError(f"{method} {path}: no answer")

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    # ------------------------------------------------------------------ DAGs and runs
    def wait_dag(self, dag_id: str, *, timeout: float = 90) -> dict[str, Any]:
        """Wait until the dag-processor has serialized ``dag_id``; unpause it."""

        def probe() -> dict[str, Any] | None:
            resp = self.request("GET", f"/api/v2/dags/{dag_id}", ok=(200, 404))
            return resp.json() if resp.status_code == 200 else None

        dag = wait_for(probe, timeout=timeout, interval=1, what=f"DAG {dag_id} to be parsed")
        if dag.get("is_paused"):
            self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        return dag

    def import_errors(self) -> list[dict[str, Any]]:
        return self.get("/api/v2/importErrors")["import_errors"]

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        body = {"logical_date": None, "conf": conf or {}}
        run_id: str = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body).json()["dag_run_id"]
        self.triggered.append((dag_id, run_id))
        return run_id

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def wait_run(
        self, dag_id: str, run_id: str, *, timeout: float, states: Iterable[str] = ("success", "failed")
    ) -> str:
        wanted = set(states)

        def probe() -> str | None:
            state = self.dag_run(dag_id, run_id)["state"]
            return state if state in wanted else None

        return wait_for(
            probe,
            timeout=timeout,
            interval=1,
            what=f"run {dag_id}/{run_id} to reach {sorted(wanted)}",
            describe=lambda: f"task states: {self.ti_states(dag_id, run_id)}",
        )

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        tis: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.get(
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100, "offset": offset}
            )
            tis.extend(page["task_instances"])
            offset += len(page["task_instances"])
            if not page["task_instances"] or offset >= page["total_entries"]:
                return tis

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        suffix = f"/{map_index}" if map_index >= 0 else ""
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}{suffix}")

    def ti_states(self, dag_id: str, run_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for ti in self.task_instances(dag_id, run_id):
            key = f"{ti['task_id']}:{ti['state']}"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def wait_tis(
        self,
        dag_id: str,
        run_id: str,
        predicate: Callable[[list[dict[str, Any]]], bool],
        *,
        timeout: float,
        what: str,
    ) -> list[dict[str, Any]]:
        def probe() -> list[dict[str, Any]] | None:
            tis = self.task_instances(dag_id, run_id)
            return tis if predicate(tis) else None

        return wait_for(
            probe,
            timeout=timeout,
            interval=1,
            what=what,
            describe=lambda: f"task states: {self.ti_states(dag_id, run_id)}",
        )

    def set_ti_state(self, dag_id: str, run_id: str, task_id: str, state: str, map_index: int = -1) -> Any:
        """What a user's "Mark as failed/success" does: PATCH the task instance's state."""
        suffix = f"/{map_index}" if map_index >= 0 else ""
        return self.request(
            "PATCH",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}{suffix}",
            json={"new_state": state},
        ).json()

    # ------------------------------------------------------------------ evidence
    def xcom_entries(self, dag_id: str, run_id: str, task_id: str = "~") -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.get(
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries",
                params={"limit": 100, "offset": offset},
            )
            entries.extend(page["xcom_entries"])
            offset += len(page["xcom_entries"])
            if not page["xcom_entries"] or offset >= page["total_entries"]:
                return entries

    def xcom_value(self, dag_id: str, run_id: str, task_id: str, key: str, map_index: int = -1) -> Any:
        resp = self.request(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"map_index": map_index, "deserialize": True, "stringify": False},
        )
        return resp.json()["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """The task's log as the UI shows it (worker and trigger parts), flattened to text."""
        params: dict[str, Any] = {"full_content": True}
        if map_index >= 0:
            params["map_index"] = map_index
        resp = self.request(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params=params,
            headers={"Accept": "application/json"},
        )
        content = resp.json().get("content")
        if isinstance(content, list):
            return "\n".join(json.dumps(item) if not isinstance(item, str) else item for item in content)
        return str(content)

    def dag_runs(self, dag_id: str = "~") -> list[dict[str, Any]]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]

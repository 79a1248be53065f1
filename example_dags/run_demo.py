"""``make demo``: run every example DAG with ``airflow dags test`` against the local Baseten emulator.

What it does, in order:

1. prepares a scratch Airflow home under ``.demo/`` (SQLite; ``airflow db migrate`` once per Airflow version, reused
   afterwards, like the bytecode cache of the ``airflow`` subprocesses),
2. for each DAG: starts an emulator (default world, compressed time) on a free loopback port, points
   ``AIRFLOW_CONN_BASETEN_DEFAULT`` at it, runs ``airflow dags test <dag_id>`` in a subprocess (deferrable tasks run
   their triggers inline there) against a private copy of the migrated database, then stops the emulator,
3. prints a table (DAG, tasks, final state, duration, Baseten requests from the emulator's journal) and exits
   non-zero when a DAG failed, showing the end of its log.

One emulator and one database per DAG let DAGs run side by side without sharing SQLite or mixing up request counts.
DAG logs go to ``.demo/logs/<dag_id>.log``.
Usage: ``python -m example_dags.run_demo [DAG_ID ...] [--jobs N] [--time-scale X]`` (``make demo ARGS=...``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGS_FOLDER = Path(__file__).resolve().parent
DEFAULT_SCRATCH = REPO_ROOT / ".demo"

#: The example DAGs, in the order the table lists them.
DAG_IDS: tuple[str, ...] = (
    "baseten_scheduled_inference",
    "baseten_wake_before_batch",
    "baseten_async_jobs",
    "baseten_llm_chat",
    "baseten_batch_window",
    "baseten_evaluate_promote",
    "baseten_common_ai",
    "baseten_nightly_embeddings",
    "baseten_embeddings_consumer",
    "baseten_async_batch",
)

#: Emulated seconds per real second: a 180 s cold start takes 3 s, a 5 s async job a tenth of a second.
DEFAULT_TIME_SCALE = 60.0
#: A DAG that has not finished after this long is stopped and reported failed.
DAG_TIMEOUT_S = 300.0
LOG_TAIL_LINES = 25
#: Seconds between progress lines of a running DAG.
PROGRESS_EVERY_S = 20.0
#: After a run has finished, seconds the process gets to exit before it is stopped.
EXIT_GRACE_S = 3.0
PYDANTIC_AI_CONN = '{"conn_type": "pydanticai_baseten", "extra": {"baseten_conn_id": "baseten_default"}}'
_FINISHED = re.compile(r"DagRun Finished: dag_id=\S+,.*?\bstate=(\w+)")


@dataclass
class DagResult:
    dag_id: str
    state: str = "not run"
    tasks: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    baseten_requests: int = 0
    log_path: Path | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "success"

    @property
    def task_summary(self) -> str:
        total = sum(self.tasks.values())
        if not total:
            return "-"
        others = ", ".join(f"{count} {state}" for state, count in sorted(self.tasks.items()) if state != "success")
        return f"{total}" + (f" ({others})" if others else "")


class DemoPaths:
    """Where the demo writes: a run folder (Airflow home, per-DAG databases, logs) and a cache folder (the migrated
    template database and the bytecode of the ``airflow`` subprocesses), reused by later runs.
    """

    def __init__(self, root: Path, cache: Path | None = None) -> None:
        self.root = root
        self.cache = cache or root
        self.airflow_home = root / "airflow-home"
        self.db_dir = root / "db"
        self.logs = root / "logs"
        self.template_db = self.cache / "template" / f"airflow-{_airflow_version()}.db"
        self.pycache = self.cache / "pycache"

    def make(self) -> None:
        for folder in (self.airflow_home, self.db_dir, self.logs, self.template_db.parent, self.pycache):
            folder.mkdir(parents=True, exist_ok=True)

    def dag_db(self, dag_id: str) -> Path:
        return self.db_dir / f"{dag_id}.db"


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


def airflow_env(paths: DemoPaths, database: Path, conn_uri: str | None = None) -> dict[str, str]:
    """The environment of an ``airflow`` subprocess: this demo's home and database, nothing inherited from Airflow.

    Bytecode goes to the cache folder (``PYTHONPYCACHEPREFIX``), even where ``PYTHONDONTWRITEBYTECODE`` is set:
    otherwise every ``airflow`` process compiles some 2,000 modules from source again, seconds of CPU each time.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        {
            "AIRFLOW_HOME": str(paths.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            # Where large results and batch outputs go ([baseten] output_location); one machine, so a local folder.
            "AIRFLOW__BASETEN__OUTPUT_LOCATION": f"file://{paths.airflow_home}/baseten-outputs",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{database}",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(paths.logs / "airflow"),
            "PYTHONPYCACHEPREFIX": str(paths.pycache),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if conn_uri is not None:
        env["AIRFLOW_CONN_BASETEN_DEFAULT"] = conn_uri
        # common.ai's connection for baseten_common_ai: no key of its own, it uses baseten_default.
        env["AIRFLOW_CONN_PYDANTICAI_BASETEN_DEFAULT"] = PYDANTIC_AI_CONN
    return env


def _airflow_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "airflow", *args]


def prepare_database(paths: DemoPaths, say: Callable[[str], None]) -> None:
    """Migrate the template database once per Airflow version; every DAG run gets a copy of it."""
    paths.make()
    version = _airflow_version()
    if paths.template_db.is_file():
        say(f"Reusing the migrated Airflow {version} database {paths.template_db}")
        return
    say(f"Preparing an Airflow {version} database (airflow db migrate, once; later runs reuse it)...")
    # Migrate into a private file and rename it into place: a concurrent run never copies a half-migrated database.
    partial = paths.template_db.with_name(f"{paths.template_db.name}.{os.getpid()}.partial")
    log_path = paths.logs / "db-migrate.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        completed = subprocess.run(
            _airflow_command("db", "migrate"),
            env=airflow_env(paths, partial),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=paths.root,
            timeout=DAG_TIMEOUT_S,
            check=False,
        )
    if completed.returncode != 0:
        partial.unlink(missing_ok=True)
        raise SystemExit(f"airflow db migrate failed; see {log_path}:\n{tail(log_path)}")
    os.replace(partial, paths.template_db)
    say(f"  migrated in {time.monotonic() - started:.1f} s")


def error_lines(path: Path, limit: int = 10) -> list[str]:
    """The distinct exceptions and error lines of a log, for a quick look before its tail."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    wanted = re.compile(r"^[\w.]*(Error|Exception|Timeout)\w*: |\[error ")
    # Noise: Airflow's "Task failed with exception" precedes the traceback that says which, and iterating a mapped
    # task's results logs one "XCom not found" past the end.
    noise = ("Task failed with exception", "XCom not found")
    found: dict[str, None] = {}
    for line in text:
        if wanted.search(line) and not any(part in line for part in noise):
            found.setdefault(line[:300])
    return list(found)[:limit]


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def read_outcome(database: Path, dag_id: str) -> tuple[str, dict[str, int]]:
    """The final DAG run state and the task instance states, read from the DAG's own SQLite database."""
    with sqlite3.connect(database) as db:
        run = db.execute("SELECT state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)).fetchone()
        rows = db.execute(
            "SELECT COALESCE(state, 'none'), COUNT(*) FROM task_instance WHERE dag_id = ? GROUP BY state", (dag_id,)
        ).fetchall()
    return (run[0] if run else "no run"), {state: count for state, count in rows}


def _baseten_requests(emulator: Any) -> int:
    """Requests the emulator answered on Baseten routes (its ``/_emulator/`` admin routes are not journaled)."""
    return int(emulator.journal.total)


def _finished_state(log_text: str) -> str | None:
    """The state ``airflow dags test`` logged when the run finished (``DagRun Finished: ... state=success``)."""
    match = _FINISHED.search(log_text)
    return match.group(1) if match else None


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the ``airflow`` process group (it may have children) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _supervise(process: subprocess.Popen[bytes], log_path: Path, dag_id: str, say: Callable[[str], None]) -> str:
    """Wait for the run, reporting progress; returns the run's final state as logged (or why there is none).

    Once the run has finished (its state is committed and logged), the process gets ``EXIT_GRACE_S`` to exit on its
    own; past that it is stopped, since a loaded machine can spend many seconds just tearing the interpreter down.
    """
    started = time.monotonic()
    last_report = started
    finished_at: float | None = None
    state: str | None = None
    while True:
        try:
            process.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        text = log_path.read_text(errors="replace")
        if state is None:
            state = _finished_state(text)
            finished_at = now if state else None
        if finished_at is not None and now - finished_at > EXIT_GRACE_S:
            _stop(process)
            break
        if now - started > DAG_TIMEOUT_S:
            _stop(process)
            return f"timed out after {DAG_TIMEOUT_S:.0f} s"
        if now - last_report >= PROGRESS_EVERY_S:
            last_report = now
            done = text.count("[DAG TEST] end task")
            if not done:
                doing = "Airflow is starting (parsing the DAGs, first task)"
            else:
                doing = f"{done} task(s) done" + (", a trigger is waiting inline" if _waiting_on_trigger(text) else "")
            say(f"  {dag_id}: {doing} after {now - started:.0f} s")
    return state or _finished_state(log_path.read_text(errors="replace")) or f"exited with {process.returncode}"


def _waiting_on_trigger(log_text: str) -> bool:
    return log_text.rfind("running trigger in line") > log_text.rfind("Trigger completed")


@contextlib.contextmanager
def _services(dag_id: str, paths: DemoPaths) -> Iterator[dict[str, str]]:
    """What a DAG needs beside the emulator, as environment: ``baseten_async_batch`` gets a webhook receiver on
    loopback (signed with the emulator's secret) and its URL and store as Airflow Variables."""
    if dag_id != "baseten_async_batch":
        yield {}
        return
    from airflow_provider_baseten.emulator import DEMO_WEBHOOK_SECRET
    from airflow_provider_baseten.webhooks import WebhookReceiver, WebhookServer

    store = (paths.root / "webhook-outputs" / dag_id).as_uri()
    with WebhookServer(WebhookReceiver(DEMO_WEBHOOK_SECRET, store)) as server:
        yield {"AIRFLOW_VAR_BASETEN_WEBHOOK_URL": server.url, "AIRFLOW_VAR_BASETEN_WEBHOOK_STORE": store}


def run_dag(dag_id: str, paths: DemoPaths, time_scale: float, say: Callable[[str], None]) -> DagResult:
    """Run one DAG with ``airflow dags test`` against its own emulator and database copy."""
    from airflow_provider_baseten.emulator import Emulator, World

    log_path = paths.logs / f"{dag_id}.log"
    result = DagResult(dag_id, log_path=log_path)
    database = paths.dag_db(dag_id)
    shutil.copyfile(paths.template_db, database)
    started = time.monotonic()
    with Emulator(world=World.default(), time_scale=time_scale, port=0) as emulator, _services(dag_id, paths) as extra:
        say(f"  {dag_id}: started (emulator at {emulator.url})")
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                _airflow_command("dags", "test", dag_id),
                env=airflow_env(paths, database, emulator.conn_uri()) | extra,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=paths.root,
                start_new_session=True,  # its own process group, so a timeout stops its children too
            )
            try:
                logged_state = _supervise(process, log_path, dag_id, say)
            finally:
                if process.poll() is None:
                    _stop(process)
        result.baseten_requests = _baseten_requests(emulator)
    result.duration_s = time.monotonic() - started
    try:
        db_state, result.tasks = read_outcome(database, dag_id)
    except sqlite3.Error as err:
        db_state, result.error = "unknown", f"could not read the run's state: {err}"
    # The logged state is the run's verdict; the database agrees unless the process was stopped mid-commit.
    result.state = logged_state if logged_state in ("success", "failed") else db_state
    if result.state != "success" and not result.error:
        result.error = logged_state if logged_state not in ("success", "failed") else ""
    say(f"  {dag_id}: {result.state} in {result.duration_s:.1f} s")
    return result


def format_table(results: Sequence[DagResult]) -> str:
    header = ("DAG", "tasks", "state", "duration", "Baseten requests")
    rows = [
        (r.dag_id, r.task_summary, r.state, f"{r.duration_s:.1f} s", str(r.baseten_requests) if r.log_path else "-")
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {1, 3, 4}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def run_demo(
    dag_ids: Sequence[str] = DAG_IDS,
    *,
    scratch: Path = DEFAULT_SCRATCH,
    cache: Path | None = None,
    jobs: int = 4,
    time_scale: float = DEFAULT_TIME_SCALE,
    say: Callable[[str], None] = print,
) -> list[DagResult]:
    """Run the DAGs (``jobs`` at a time) and return one result per DAG, in the order given.

    ``cache`` (default: ``scratch``) keeps the migrated database and the bytecode cache between runs.
    """
    unknown = sorted(set(dag_ids) - set(DAG_IDS))
    if unknown:
        raise SystemExit(f"Unknown DAG id(s) {', '.join(unknown)}; choose from: {', '.join(DAG_IDS)}")
    paths = DemoPaths(scratch, cache)
    prepare_database(paths, say)
    lock = threading.Lock()

    def locked_say(message: str) -> None:
        with lock:
            say(message)

    jobs = max(1, min(jobs, len(dag_ids)))
    locked_say(f"Running {len(dag_ids)} DAG(s) with airflow dags test, {jobs} at a time; logs in {paths.logs}")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_dag, dag_id, paths, time_scale, locked_say) for dag_id in dag_ids]
        results = []
        for dag_id, future in zip(dag_ids, futures, strict=True):
            try:
                results.append(future.result())
            except Exception as err:  # a broken emulator or scratch folder: report it in the table
                results.append(DagResult(dag_id, state="error", error=f"{type(err).__name__}: {err}"))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("dag_ids", nargs="*", metavar="DAG_ID", help=f"DAGs to run (default: all of {DAG_IDS})")
    parser.add_argument("--jobs", type=int, default=4, help="DAGs run side by side (default 4)")
    parser.add_argument("--time-scale", type=float, default=DEFAULT_TIME_SCALE, help="emulated s per real s")
    parser.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH, help="scratch folder (default .demo/)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    results = run_demo(
        tuple(args.dag_ids) or DAG_IDS, scratch=args.scratch.resolve(), jobs=args.jobs, time_scale=args.time_scale
    )
    print()
    print(format_table(results))
    print(f"\n{sum(r.ok for r in results)}/{len(results)} DAGs succeeded in {time.monotonic() - started:.1f} s.")
    failed = [r for r in results if not r.ok]
    for result in failed:
        print(f"\n--- {result.dag_id}: {result.state} {result.error}".rstrip())
        if result.log_path is not None:
            errors = error_lines(result.log_path)
            if errors:
                print("--- errors:")
                print("\n".join(errors))
            print(f"--- last {LOG_TAIL_LINES} lines of {result.log_path}:")
            print(tail(result.log_path))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

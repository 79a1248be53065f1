"""Every example DAG parses fast, offline, without errors, and carries the metadata a user copies along."""

from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from example_dags.run_demo import DAG_IDS

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_FOLDER = REPO_ROOT / "example_dags"
DAG_FILES = sorted(path for path in DAG_FOLDER.glob("baseten_*.py"))


def _parse_folder(folder: Path):
    """A DagBag of ``folder`` only (3.1 takes ``include_examples``; 3.3 never includes examples in a folder bag)."""
    try:  # Airflow 3.2+
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag
    if "include_examples" in inspect.signature(DagBag.__init__).parameters:
        return DagBag(dag_folder=str(folder), include_examples=False)
    return DagBag(dag_folder=str(folder))


def _pre_import_airflow_modules(files: list[Path]) -> None:
    """What the DAG processor does before each parse ([dag_processor] parsing_pre_import_modules, default on)."""
    import importlib

    from airflow.utils.file import iter_airflow_imports

    for path in files:
        for module in iter_airflow_imports(str(path)):
            importlib.import_module(module)


@pytest.fixture(scope="module")
def dagbag():
    """The example folder parsed the way the DAG processor does, with every outgoing connection refused."""
    real_connect = socket.socket.connect

    def no_network(sock, address):
        raise AssertionError(f"an example DAG opened a connection at parse time: {address!r}")

    socket.socket.connect = no_network
    try:
        _pre_import_airflow_modules(DAG_FILES)
        return _parse_folder(DAG_FOLDER)
    finally:
        socket.socket.connect = real_connect


def test_every_example_dag_parses_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dag_ids) == sorted(DAG_IDS)


def test_every_example_dag_parses_fast(dagbag):
    """The DAG processor re-parses files all day: no top-level work (each takes ~10 ms; the bound is generous)."""
    seconds = {stat.file: stat.duration.total_seconds() for stat in dagbag.dagbag_stats}
    assert seconds
    assert max(seconds.values()) < 5, seconds


def test_one_dag_per_file_named_after_it():
    assert sorted(path.stem for path in DAG_FILES) == sorted(DAG_IDS)


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_dag_has_tags_docs_and_no_catchup(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert {"baseten", "example"} <= set(dag.tags)
    assert len((dag.doc_md or "").strip()) > 200
    assert dag.description
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert type(dag.timetable).__name__ != "NullTimetable", "example DAGs are scheduled"


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_every_task_has_retries_and_an_execution_timeout(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.default_args["retries"] >= 1
    assert dag.default_args["retry_delay"] >= timedelta(seconds=10)
    for task in dag.tasks:
        assert task.retries >= 1, task.task_id
        assert task.execution_timeout is not None, task.task_id
        assert timedelta(minutes=1) <= task.execution_timeout <= timedelta(hours=6), task.task_id


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_baseten_ids_come_from_params(dagbag, dag_id):
    """Users change a model id in one place: the params, which every Baseten task renders."""
    dag = dagbag.dags[dag_id]
    assert dag.params, "model ids are DAG params"
    for task in dag.tasks:
        for field in ("model_id", "chain_id"):
            value = (
                getattr(task, field, None) if not hasattr(task, "partial_kwargs") else task.partial_kwargs.get(field)
            )
            if isinstance(value, str):
                assert "{{ params." in value, f"{task.task_id}.{field} is hard-coded: {value!r}"


def test_parsing_imports_nothing_heavy(request):
    """Parse-time imports stay light: no emulator, no OpenAI SDK, no aiohttp (the DAG processor parses often)."""
    code = (
        "import runpy, sys\n"
        f"for path in {[str(path) for path in DAG_FILES]!r}:\n"
        "    runpy.run_path(path)\n"
        "    heavy = sorted(m for m in ('airflow_provider_baseten.emulator', 'openai', 'aiohttp', 'uvicorn') "
        "if m in sys.modules)\n"
        "    assert not heavy, (path, heavy)\n"
    )
    env = dict(os.environ)
    cache = getattr(request.config, "cache", None)
    if cache is not None:  # share make demo's bytecode cache: a fresh interpreter compiles Airflow otherwise
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(cache.mkdir("baseten-demo") / "pycache")
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, cwd=REPO_ROOT, env=env
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

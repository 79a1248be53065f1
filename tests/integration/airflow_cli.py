"""``airflow dags test`` in a fresh AIRFLOW_HOME (a sqlite file under ``home``), for the DAG-level integration tests."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def dags_test(home: Path, dags_folder: Path, dag_id: str, connections: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """Migrate a new metadata DB, run ``airflow dags test dag_id`` and return ``({task_id: state}, output tail)``.

    The caller's ``AIRFLOW*`` variables are dropped so nothing leaks in; ``connections`` are ``AIRFLOW_CONN_*``
    variables. A failed migrate or a non-zero ``dags test`` fails the test with the output's tail.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "PYTHONUNBUFFERED": "1",
            **connections,
        }
    )
    airflow = [sys.executable, "-m", "airflow"]
    migrate = subprocess.run(
        [*airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    run = subprocess.run(
        [*airflow, "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    output = run.stdout[-8000:] + run.stderr[-8000:]
    assert run.returncode == 0, output
    with sqlite3.connect(home / "airflow.db") as db:
        states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (dag_id,)))
    return states, output

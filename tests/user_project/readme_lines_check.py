"""Copied into the generated user project as ``tests/test_readme_lines.py`` (it is not collected here).

Runs the DAG built from the README's operator lines and a DAG whose async submit is refused, each with
``dag.test()`` under the ``baseten_emulator`` fixture, and checks what the tasks logged: no error-level line on a
successful run, none but the task's own failure on a cleanly failed one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DAGS = Path(__file__).resolve().parents[1] / "dags"
#: An error-level line as Airflow's structlog console renders it (``[error    ]``) or as stdlib logging does.
ERROR_LINE = re.compile(r"\[(error|critical)\s*\]|\b(ERROR|CRITICAL)\b|Traceback \(most recent call last\)")
#: What the task runner itself reports, at error level, when a task fails: expected on a cleanly failed run.
TASK_FAILURE = re.compile(r"Task failed with exception|Traceback \(most recent call last\)|BasetenNotFoundError")


def _dag(dag_id: str) -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3.2+
    except ImportError:
        from airflow.models.dagbag import DagBag  # Airflow 3.1

    bag = DagBag(dag_folder=str(DAGS))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    assert dag is not None, f"{dag_id} not found in {DAGS}"
    return dag


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if ERROR_LINE.search(line)]


def _posts(emulator: Any, suffix: str, target: str) -> int:
    return int(emulator.journal.count(method="POST", path_suffix=suffix, host=target))


def test_readme_lines_run_green(baseten_emulator: Any, capfd: pytest.CaptureFixture[str]) -> None:
    dag_run = _dag("readme_lines").test()
    out, err = capfd.readouterr()

    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert dag_run.state == "success", states
    sentiment = "model-sentiment01.api.baseten.co"
    assert _posts(baseten_emulator, "/wake", "model-coldstart01.api.baseten.co") == 1
    assert _posts(baseten_emulator, "/predict", sentiment) == 5  # score, batch (2 inputs), mapped score_each (2)
    assert _posts(baseten_emulator, "/chat/completions", "inference.baseten.co") == 1
    assert _posts(baseten_emulator, "/async_predict", "model-slow01.api.baseten.co") == 1
    assert [r.status.value for r in baseten_emulator.requests.values()] == ["SUCCEEDED"]
    assert _error_lines(out + err) == []


def test_a_refused_async_submit_fails_cleanly(baseten_emulator: Any, capfd: pytest.CaptureFixture[str]) -> None:
    dag_run = _dag("refused_submit").test()
    out, err = capfd.readouterr()

    assert dag_run.state == "failed"
    assert _posts(baseten_emulator, "/async_predict", "model-nosuch01.api.baseten.co") == 1
    assert "nosuch01" in out + err  # the failure names what was wrong
    assert [line for line in _error_lines(out + err) if not TASK_FAILURE.search(line)] == []

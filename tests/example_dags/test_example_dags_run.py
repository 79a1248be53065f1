"""Every example DAG runs green against the emulator, the way ``make demo`` runs it (``airflow dags test``)."""

from __future__ import annotations

import pytest

from example_dags import run_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory, request):
    """One ``make demo`` run of all the DAGs (all at once) in a scratch folder; results by DAG id.

    The migrated template database and the bytecode cache live in pytest's cache folder, so only the first run
    pays for ``airflow db migrate`` and for compiling Airflow.
    """
    cache = getattr(request.config, "cache", None)
    messages: list[str] = []
    results = run_demo.run_demo(
        run_demo.DAG_IDS,
        scratch=tmp_path_factory.mktemp("demo"),
        cache=cache.mkdir("baseten-demo") if cache is not None else None,
        jobs=4,
        say=messages.append,
    )
    return {result.dag_id: result for result in results}


@pytest.mark.parametrize("dag_id", run_demo.DAG_IDS)
def test_example_dag_runs_green_against_the_emulator(demo_results, dag_id):
    result = demo_results[dag_id]
    log = run_demo.tail(result.log_path, 80) if result.log_path else ""
    assert result.state == "success", f"{dag_id}: {result.state} {result.error}\n{log}"
    assert set(result.tasks) == {"success"}, result.tasks
    assert result.baseten_requests > 0


def test_summary_table_lists_every_dag(demo_results):
    table = run_demo.format_table(list(demo_results.values()))
    lines = table.splitlines()
    assert lines[0].split() == ["DAG", "tasks", "state", "duration", "Baseten", "requests"]
    assert len(lines) == 2 + len(run_demo.DAG_IDS)
    for dag_id in run_demo.DAG_IDS:
        assert any(line.startswith(dag_id) and " success " in line for line in lines)


def test_unknown_dag_id_is_refused_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match="Unknown DAG id"):
        run_demo.run_demo(["no_such_dag"], scratch=tmp_path, say=lambda message: None)
    assert not any(tmp_path.iterdir())

"""Smoke DAG: proves the harness can parse, schedule and run a task (no Baseten involved)."""

from __future__ import annotations

from airflow.sdk import dag, task


@dag(dag_id="systest_smoke", schedule=None, catchup=False, tags=["system-test"])
def systest_smoke() -> None:
    @task
    def hello(n: int) -> int:
        return n * 2

    hello.expand(n=list(range(3)))


systest_smoke()

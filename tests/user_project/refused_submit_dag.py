"""Copied into the generated user project as ``dags/refused_submit.py``: an async submit Baseten refuses (404)."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_baseten.operators.baseten import BasetenAsyncPredictOperator

with DAG("refused_submit", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False):
    BasetenAsyncPredictOperator(
        task_id="job", model_id="nosuch01", model_input={"text": "x"}, deferrable=True, retries=0
    )

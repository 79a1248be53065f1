"""A bad operator argument fails at DAG-parse time with a message that names the task, once."""

from __future__ import annotations

from datetime import datetime

import pytest
from airflow.sdk import DAG

from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.operators.baseten import (
    BasetenAsyncPredictOperator,
    BasetenBatchPredictOperator,
    BasetenChainRunOperator,
    BasetenPredictOperator,
    BasetenWakeOperator,
)
from airflow_provider_baseten.sensors.baseten import BasetenAsyncRequestSensor


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (  # raised by the shared base __init__
            lambda: BasetenPredictOperator(task_id="score", model_id="bad-id", model_input={}),
            "Task 'score' (BasetenPredictOperator): Invalid model_id 'bad-id'",
        ),
        (  # raised by a subclass __init__ after the base one
            lambda: BasetenBatchPredictOperator(task_id="batch", model_id="m1", inputs=[], max_concurrency=0),
            "Task 'batch' (BasetenBatchPredictOperator): max_concurrency must be a positive integer",
        ),
        (
            lambda: BasetenWakeOperator(task_id="wake", model_id="m1", poll_interval=-1),
            "Task 'wake' (BasetenWakeOperator): poll_interval must be greater than 0",
        ),
        (
            lambda: BasetenChainRunOperator(task_id="chain", model_id="m1", chain_input={}),
            "Task 'chain' (BasetenChainRunOperator): BasetenChainRunOperator runs chains",
        ),
        (
            lambda: BasetenAsyncPredictOperator(task_id="job", model_id="m1", model_input={}, poll_interval=0),
            "Task 'job' (BasetenAsyncPredictOperator): poll_interval must be greater than 0",
        ),
        (
            lambda: BasetenAsyncRequestSensor(task_id="wait", model_id="m-1", request_id="r1"),
            "Task 'wait' (BasetenAsyncRequestSensor): Invalid model_id",
        ),
    ],
)
def test_a_config_error_at_parse_time_names_the_task_once(make, expected):
    with pytest.raises(BasetenConfigError) as caught:
        make()

    message = str(caught.value)
    assert message.startswith(expected), message
    assert message.count("Task '") == 1


def test_the_task_id_inside_a_dag_is_the_one_the_user_wrote():
    with (
        DAG("parse_errors", schedule=None, start_date=datetime(2025, 1, 1)),
        pytest.raises(BasetenConfigError) as caught,
    ):
        BasetenPredictOperator(task_id="score_reviews", model_id="bad id", model_input={})

    assert "Task 'score_reviews'" in str(caught.value)

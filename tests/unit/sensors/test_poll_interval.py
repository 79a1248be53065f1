"""The sensor takes ``poll_interval`` like the operators (docs/operators.md), as well as its own ``poke_interval``."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.sensors.baseten import BasetenAsyncRequestSensor


def sensor(**kwargs: object) -> BasetenAsyncRequestSensor:
    return BasetenAsyncRequestSensor(task_id="wait", model_id="slow01", request_id="r1", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "seconds"),
    [
        ({"poll_interval": 30}, 30.0),
        ({"poll_interval": timedelta(minutes=2)}, 120.0),
        ({"poke_interval": 45}, 45.0),
        ({}, 60.0),  # BaseSensorOperator's default
    ],
)
def test_poll_interval_and_poke_interval_are_one_setting(kwargs, seconds):
    assert sensor(**kwargs).poke_interval == seconds


def test_both_names_at_once_are_refused():
    with pytest.raises(BasetenConfigError, match="poll_interval or poke_interval"):
        sensor(poll_interval=30, poke_interval=30)


def test_a_bad_poll_interval_names_the_setting():
    with pytest.raises(BasetenConfigError, match="poll_interval must be greater than 0"):
        sensor(poll_interval=0)

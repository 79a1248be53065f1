"""DAGs of the async-predict system scenarios (restarts, kills, user actions, timeouts, two triggerers).

Each DAG uses its scenario's own emulator model (see ``tests/system/world.py``), so the journal counts per host.
Requests on the gated models stay ``QUEUED`` until the test opens the gate; ``max_time_in_queue_seconds`` is set to
Baseten's maximum so no request expires while the emulator's clock runs fast.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG

from airflow_provider_baseten.operators.baseten import BasetenAsyncPredictOperator

START = pendulum.datetime(2025, 1, 1, tz="UTC")
MAX_QUEUE_S = 259_200
FLEET_SIZE = int(os.environ.get("SYSTEST_FLEET_SIZE", "10"))
HA_SIZE = int(os.environ.get("SYSTEST_HA_SIZE", "10"))


#: How every scenario's task waits: in the triggerer, polling every 2 s, never expiring in the queue.
WAIT: dict[str, Any] = {"deferrable": True, "poll_interval": 2, "max_time_in_queue_seconds": MAX_QUEUE_S}


def _one(dag_id: str, model_id: str, text: str, **task_kwargs: Any) -> DAG:
    """A DAG of one async predict task, ``score``, sending ``{"text": text}``."""
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["system-test"]) as dag:
        BasetenAsyncPredictOperator(
            task_id="score", model_id=model_id, model_input={"text": text}, **WAIT, **task_kwargs
        )
    return dag


def _fleet(dag_id: str, model_id: str, size: int) -> DAG:
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["system-test"]) as dag:
        BasetenAsyncPredictOperator.partial(
            task_id="score",
            model_id=model_id,
            retries=0,
            **WAIT,
        ).expand(model_input=[{"text": f"{dag_id} item {i}"} for i in range(size)])
    return dag


# Triggerer SIGKILLed while every task is deferred, then restarted.
systest_async_fleet = _fleet("systest_async_fleet", "sysfleet01", FLEET_SIZE)
# Two triggerers on PostgreSQL; the one holding the triggers is SIGKILLed.
systest_async_ha = _fleet("systest_async_ha", "sysha01", HA_SIZE)

# The worker is SIGKILLed after the submit (while it reads the status); the retry must re-attach.
systest_async_retry = _one(
    "systest_async_retry",
    "sysretry01",
    "submitted once, whatever happens to the worker",
    retries=1,
    retry_delay=timedelta(seconds=1),
)
# A user marks the deferred task failed: the trigger's on_kill cancels the queued request.
systest_async_mark_failed = _one("systest_async_mark_failed", "syscancel01", "nobody will wait for this one", retries=0)
# execution_timeout passes while deferred: the deadline travels into the trigger, the request is cancelled.
systest_async_timeout = _one(
    "systest_async_timeout",
    "systimeout01",
    "this one runs out of time",
    execution_timeout=timedelta(seconds=int(os.environ.get("SYSTEST_EXEC_TIMEOUT_S", "20"))),
    retries=0,
)

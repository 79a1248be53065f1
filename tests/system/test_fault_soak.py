"""Fault soak: many async requests and one large batch while about 10% of calls meet a 429, 502, 503 or reset.

The faults are injected by the emulator before the model runs, so the journal can tell a retried call that never
reached the model (allowed) from a duplicate prediction (never allowed). The async tasks all finish green (a submit
that met a 502 or a reset fails its try, and the retry submits again: nothing had been queued). The batch writes one
line per input; inputs whose predict met a 502 or a reset are error lines (the client cannot know the model did not
run, so it does not re-send a paid predict), and the journal shows exactly one such fault per error line. Sizes come
from the environment (``SYSTEST_SOAK_ASYNC_SIZE``, default 200, read by the DAG file too; ``SYSTEST_SOAK_BATCH_SIZE``,
default 2000).
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.system import world
from tests.system.evidence import accepted_submits, journal, records
from tests.system.harness import AirflowCluster

pytestmark = pytest.mark.system

ASYNC_SIZE = int(os.environ.get("SYSTEST_SOAK_ASYNC_SIZE", "200"))
BATCH_SIZE = int(os.environ.get("SYSTEST_SOAK_BATCH_SIZE", "2000"))
Phase = Callable[[str], None]


def _ten_percent_faults(route: str, model_id: str, seed: int) -> Any:
    """Every tenth call on ``route`` fails (429 with Retry-After, 502, 503 or a connection reset, in turn), in a
    seeded order that repeats every 40 calls."""
    from airflow_provider_baseten.emulator import FaultPlan

    pattern: list[Any] = [429, 502, 503, "reset_before"] + ["ok"] * 36
    random.Random(seed).shuffle(pattern)
    return FaultPlan(route=route, target_id=model_id, sequence=pattern, repeat=True, retry_after=1)


def _injected(emulator: Any) -> int:
    return sum(plan["injected"] for plan in emulator.faults.as_json())


def test_async_requests_under_faults(airflow_cluster: AirflowCluster, emulator: Any, phase: Phase) -> None:
    api, dag_id, model = airflow_cluster.api, "systest_soak_async", world.SOAK_ASYNC_MODEL
    api.wait_dag(dag_id)
    emulator.faults.add(
        _ten_percent_faults("async_predict", model, seed=11), _ten_percent_faults("async_status", model, seed=21)
    )
    try:
        run_id = api.trigger(dag_id)
        assert api.wait_run(dag_id, run_id, timeout=600) == "success", api.ti_states(dag_id, run_id)
        phase("run green")
        injected = _injected(emulator)
    finally:
        emulator.faults.clear()

    tis = api.task_instances(dag_id, run_id)
    assert len(tis) == ASYNC_SIZE
    assert {ti["state"] for ti in tis} == {"success"}
    assert injected >= ASYNC_SIZE // 10, f"the soak needs real faults; only {injected} were injected"
    # One queued request per task: every other POST was refused before the model ran (a fault), never a duplicate.
    submits = accepted_submits(emulator, model)
    assert len(submits) == ASYNC_SIZE, f"{len(submits)} accepted submits for {ASYNC_SIZE} tasks"
    refused = [e for e in journal(emulator, model, "async_predict", "POST") if not 200 <= e.status < 300]
    assert all(not e.model_ran for e in refused)
    done = records(emulator, model)
    assert Counter(rec.status.value for rec in done.values()) == {"SUCCEEDED": ASYNC_SIZE}
    assert sorted(rec.output["n"] for rec in done.values()) == list(range(ASYNC_SIZE)), "an input was lost or doubled"
    retried = [ti for ti in tis if ti["try_number"] > 1]
    phase(f"{len(refused)} refused POSTs, {len(retried)} task retries, {injected} faults")


def test_batch_under_faults(airflow_cluster: AirflowCluster, emulator: Any, tmp_path: Path, phase: Phase) -> None:
    api, dag_id, model = airflow_cluster.api, "systest_soak_batch", world.SOAK_BATCH_MODEL
    api.wait_dag(dag_id)
    input_path, output_path = tmp_path / "inputs.jsonl", tmp_path / "outputs.jsonl"
    with input_path.open("w") as f:
        for i in range(BATCH_SIZE):
            f.write(json.dumps({"id": f"item-{i}", "text": f"batch item {i}", "n": i}) + "\n")
    emulator.faults.add(_ten_percent_faults("predict", model, seed=31))
    try:
        run_id = api.trigger(dag_id, conf={"input_path": str(input_path), "output_path": str(output_path)})
        state = api.wait_run(dag_id, run_id, timeout=300)
        phase("run finished")
        injected = _injected(emulator)
    finally:
        emulator.faults.clear()

    lines = [json.loads(line) for line in output_path.read_text().splitlines()]
    by_index = Counter(line["index"] for line in lines)
    assert sorted(by_index) == list(range(BATCH_SIZE)), "an input has no line: output lost"
    assert set(by_index.values()) == {1}, "an input has two lines"
    outputs = [line for line in lines if "output" in line]
    errors = [line for line in lines if "error" in line]
    for line in outputs:
        assert line["output"]["n"] == line["index"]
        assert line["input_id"] == f"item-{line['index']}"

    predicts = journal(emulator, model, "predict", "POST")
    ran = [e for e in predicts if e.model_ran]
    # Every model run produced exactly one written output: nothing predicted twice, nothing predicted and dropped.
    assert len(ran) == len(outputs), f"{len(ran)} model runs for {len(outputs)} outputs"
    assert injected >= BATCH_SIZE // 10
    # A predict is not idempotent: after a 502 or a connection reset the client cannot know whether the model ran,
    # so the hook does not re-send it (a 429 or 503 it does) and the item is written as an error with
    # model_may_have_run=True. The journal shows the emulator injected those before the model: one per error line.
    ambiguous = [e for e in predicts if e.status in (0, 502)]
    assert all(not e.model_ran for e in ambiguous)
    assert len(errors) == len(ambiguous), f"{len(errors)} error lines for {len(ambiguous)} 502s/resets: {errors[:3]}"
    assert all(line["error"]["model_may_have_run"] for line in errors)
    assert state == "success", f"{len(errors)} of {BATCH_SIZE} items failed (max_failed_fraction=0.1)"
    phase(f"{len(outputs)} outputs, {len(errors)} ambiguous errors, {injected} faults")

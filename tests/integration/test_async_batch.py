"""The async batch against the emulator over loopback HTTP: 2,000 inputs, injected 429s on submits and 502/429s on
status reads, a worker that dies mid-submit (after the sends of a wave, before its outcomes are written: what a
SIGKILL leaves), then the retry. The emulator's own records prove every input was accepted exactly once; the
manifest proves every accepted request was waited on to its end. Each defer runs the trigger rebuilt from its
serialized kwargs, as a triggerer would."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_baseten.emulator import DeploymentSpec, Emulator, FaultPlan, ModelSpec, World
from airflow_provider_baseten.emulator.limits import Limits
from airflow_provider_baseten.hooks.baseten import close_shared_async_clients
from airflow_provider_baseten.operators._async_manifest import Manifest
from airflow_provider_baseten.operators.async_batch import BasetenAsyncBatchOperator
from airflow_provider_baseten.triggers.async_batch import BasetenAsyncBatchTrigger

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

COUNT = 2000


def bulk_world() -> World:
    deployment = DeploymentSpec("bulkprod01", min_replicas=1, predict_concurrency=50)
    return World().add(
        ModelSpec("bulk01", behaviour={"kind": "sleep", "seconds": 2, "then": "echo"}, deployments=[deployment])
    )


class WorkerKilled(BaseException):
    """The worker process dies (a BaseException: nothing in the operator catches it)."""


def operator(manifest: Path) -> BasetenAsyncBatchOperator:
    return BasetenAsyncBatchOperator(
        task_id="score_all",
        model_id="bulk01",
        inputs=[{"n": n} for n in range(COUNT)],
        manifest_location=str(manifest),
        submit_rate=200,
        submit_concurrency=16,
        max_in_flight=1000,
        poll_interval=0.2,
        max_failed_fraction=0.1,
    )


def run_trigger(trigger: BasetenAsyncBatchTrigger) -> dict[str, Any]:
    _classpath, kwargs = trigger.serialize()
    rebuilt = BasetenAsyncBatchTrigger(**json.loads(json.dumps(kwargs)))

    async def run() -> list[dict[str, Any]]:
        try:
            return [event.payload async for event in rebuilt.run()]
        finally:
            await rebuilt.cleanup()
            await close_shared_async_clients()

    events = asyncio.run(run())
    assert len(events) == 1
    return events[0]


def run_task(op: BasetenAsyncBatchOperator) -> tuple[dict[str, Any], int]:
    """execute -> (defer -> trigger -> execute_complete)* as Airflow runs the task; returns the result and defers."""
    defers = 0
    try:
        return op.execute({}), defers
    except TaskDeferred as deferral:
        pending = deferral
    while True:
        defers += 1
        event = run_trigger(pending.trigger)
        try:
            return op.execute_complete({}, event=event), defers
        except TaskDeferred as deferral:
            pending = deferral


@pytest.mark.baseten_emulator(world=bulk_world, limits=Limits(status_per_second=None, queue_status_per_second=None))
def test_2000_inputs_with_faults_and_a_worker_killed_mid_submit(
    baseten_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = baseten_emulator
    monkeypatch.setenv("AIRFLOW_CONN_BASETEN_DEFAULT", emu.conn_uri(extra={"status_rate_limit": 2000}))
    submit_faults = ["ok"] * 150 + [429] * 3 + ["ok"] * 400 + [429] * 2
    emu.faults.set(
        FaultPlan(route="async_predict", sequence=submit_faults, retry_after=0.05),
        FaultPlan(route="async_status", action=502, probability=0.03, seed=7),
    )
    manifest_path = tmp_path / "manifest"

    # Try 1: the worker dies in its fourth wave, after the sends, before the outcomes part is written.
    writes = {"outcome_parts": 0}
    real_write = Manifest.write

    def dying_write(self: Manifest, records: Any) -> str | None:
        records = list(records)
        if records and records[0]["event"] != "intent" and records[0]["event"] != "status":
            writes["outcome_parts"] += 1
            if writes["outcome_parts"] == 4:
                raise WorkerKilled
        return real_write(self, records)

    monkeypatch.setattr(Manifest, "write", dying_write)
    with pytest.raises(WorkerKilled):
        operator(manifest_path).execute({})
    monkeypatch.setattr(Manifest, "write", real_write)
    killed = Manifest(str(manifest_path)).load()
    ambiguous = {index for index, entry in killed.entries.items() if entry.status == "AMBIGUOUS"}
    assert 0 < len(ambiguous) <= 100  # one wave: half a second of submits at 200/s

    # Try 2 (the retry): continues from the manifest, through max_in_flight refills, to the end.
    result, defers = run_task(operator(manifest_path))
    assert defers >= 2  # 2,000 inputs through a cap of 1,000: refilled as requests finished
    assert result["counts"] == {"AMBIGUOUS": len(ambiguous), "SUCCEEDED": COUNT - len(ambiguous)}

    # Every input was accepted exactly once, the ambiguous ones included (they reached Baseten; never re-sent).
    accepted = Counter(record.request.model_input["n"] for record in emu.requests.values())
    assert sorted(accepted) == list(range(COUNT))
    assert set(accepted.values()) == {1}
    assert emu.journal.count(route="async_predict", status=429) == 5  # each refusal honoured, then sent again
    # Every request the manifest knows was waited on to its end, and its id is one Baseten gave.
    final = Manifest(str(manifest_path)).load()
    known = {entry.request_id for entry in final.entries.values() if entry.request_id}
    assert len(known) == COUNT - len(ambiguous)
    assert known <= set(emu.requests)
    assert all(entry.terminal for entry in final.entries.values())
    assert emu.journal.count(route="async_status", status=502) > 0  # the status faults were met and outlasted


@pytest.mark.baseten_emulator(world=bulk_world)
def test_deferrable_false_waits_on_the_worker_through_refills(baseten_emulator: Emulator, tmp_path: Path) -> None:
    op = BasetenAsyncBatchOperator(
        task_id="score_here",
        model_id="bulk01",
        inputs=[{"n": n} for n in range(12)],
        manifest_location=str(tmp_path / "manifest"),
        max_in_flight=4,
        poll_interval=0.05,
        deferrable=False,
    )
    result = op.execute({})
    assert result["counts"] == {"SUCCEEDED": 12}
    assert sorted(record.request.model_input["n"] for record in baseten_emulator.requests.values()) == list(range(12))


def first_try_in_a_child(manifest: str, conn_uri: str) -> None:
    """The first try of the task in its own process (spawned: nothing shared with the test but the emulator)."""
    import os

    os.environ["AIRFLOW_CONN_BASETEN_DEFAULT"] = conn_uri
    operator(Path(manifest)).execute({})


@pytest.mark.baseten_emulator(world=bulk_world, limits=Limits(status_per_second=None, queue_status_per_second=None))
def test_a_worker_process_sigkilled_mid_submit_then_the_retry(
    baseten_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SIGKILL of the worker process once Baseten has accepted KILL_AFTER submits, then the retry from the
    same manifest: nothing accepted is sent again, the wave in flight at the kill reads AMBIGUOUS and is not re-sent."""
    import multiprocessing
    import os
    import signal
    import time

    emu = baseten_emulator
    conn_uri = emu.conn_uri(extra={"status_rate_limit": 2000})
    monkeypatch.setenv("AIRFLOW_CONN_BASETEN_DEFAULT", conn_uri)
    emu.faults.set(
        FaultPlan(
            route="async_predict", sequence=["ok"] * 150 + [429] * 3 + ["ok"] * 400 + [429] * 2, retry_after=0.05
        ),
        FaultPlan(route="async_status", action=502, probability=0.03, seed=7),
    )
    manifest_path = tmp_path / "manifest"
    kill_after = 400

    child = multiprocessing.get_context("spawn").Process(
        target=first_try_in_a_child, args=(str(manifest_path), conn_uri), daemon=True
    )
    child.start()
    give_up = time.monotonic() + 60
    while len(emu.requests) < kill_after and child.is_alive() and time.monotonic() < give_up:
        time.sleep(0.002)  # polling the emulator's records, not waiting out a delay
    assert child.is_alive(), "the first try ended before it was killed"
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert child.exitcode == -signal.SIGKILL
    at_kill = Counter(record.request.model_input["n"] for record in list(emu.requests.values()))
    assert kill_after <= len(at_kill) < COUNT
    assert set(at_kill.values()) == {1}

    killed = Manifest(str(manifest_path)).load()
    ambiguous = {index for index, entry in killed.entries.items() if entry.status == "AMBIGUOUS"}
    assert 0 < len(ambiguous) <= 100  # at most the wave in flight: half a second of submits at 200/s
    recorded = {index for index, entry in killed.entries.items() if entry.request_id}
    assert recorded <= set(at_kill)  # an id in the manifest is one Baseten gave

    result, _defers = run_task(operator(manifest_path))

    accepted = Counter(record.request.model_input["n"] for record in emu.requests.values())
    assert set(accepted.values()) == {1}  # nothing accepted twice: no accepted input was submitted again
    # The ambiguous inputs were not sent again: those the killed wave had sent stay accepted once, the rest never.
    assert {n for n in ambiguous if n in accepted} == {n for n in ambiguous if n in at_kill}
    assert sorted(set(accepted) | ambiguous) == list(range(COUNT))  # every other input accepted exactly once
    assert result["counts"] == {"AMBIGUOUS": len(ambiguous), "SUCCEEDED": COUNT - len(ambiguous)}
    final = Manifest(str(manifest_path)).load()
    assert all(entry.terminal for entry in final.entries.values())  # every request waited on to its end
    known = {entry.request_id for entry in final.entries.values() if entry.request_id}
    assert len(known) == COUNT - len(ambiguous)
    assert known <= set(emu.requests)
    assert emu.journal.count(route="async_predict", status=429) == 5
    assert emu.journal.count(route="async_status", status=502) > 0

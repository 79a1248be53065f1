"""Every exit of a batch try leaves a record of what may have run: SIGTERM, exceptions, intents of a killed try."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_baseten.exceptions import BasetenError
from airflow_provider_baseten.operators._batch_journal import LocalSink

from . import test_batch as base
from .test_batch import FakeModel, fingerprint, indices, line, make_op, read_lines, ti
from .test_event_loop import WorkerDied, on_sigusr1

_conn, model, waits = base._conn, base.model, base.waits


def cancelled(lines: list[dict[str, Any]]) -> list[int]:
    return sorted(x["index"] for x in lines if x.get("error", {}).get("type") == "Cancelled")


@pytest.fixture
def airflow_sigterm_handler() -> Iterator[list[Any]]:
    """The task runner's SIGTERM handler: it calls the running task's ``on_kill`` (set the operator in the list)."""
    running: list[Any] = []
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: running[0].on_kill())
    yield running
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_writes_in_flight_items_and_a_retry_resends_none(
    model: FakeModel, waits: list[float], tmp_path: Path, airflow_sigterm_handler: list[Any]
) -> None:
    op = make_op(waits, tmp_path, inputs=list(range(30)), max_concurrency=4, kill_grace_period=0)
    airflow_sigterm_handler.append(op)
    hanging = True
    model.hang = lambda body: hanging and body >= 5

    def terminate_when_all_hang(_body: Any) -> None:
        if len(model.calls) == 9:  # 5, 6, 7, 8: every worker waits on a hanging predict
            os.kill(os.getpid(), signal.SIGTERM)

    model.on_call = terminate_when_all_hang
    with pytest.raises(BasetenError, match="killed"):
        op.execute({"ti": ti(1)})
    first = read_lines(tmp_path / "out.jsonl")
    assert cancelled(first) == [5, 6, 7, 8]  # hanging in flight at the SIGTERM

    model.on_call, hanging = None, False
    model.calls.clear()
    op.max_failed_fraction = 0.5  # the three "may have run" errors stay errors
    op.execute({"ti": ti(2)})
    assert not set(model.calls) & {x["index"] for x in first}
    assert indices(read_lines(tmp_path / "out.jsonl")) == list(range(30))


@pytest.fixture
def sigusr1_raises_worker_died() -> Iterator[None]:
    def raise_worker_died(_signum: int, _frame: Any) -> None:
        raise WorkerDied

    with on_sigusr1(raise_worker_died):
        yield


@pytest.mark.usefixtures("sigusr1_raises_worker_died")
def test_a_base_exception_in_a_predict_writes_every_in_flight_item(
    model: FakeModel, waits: list[float], tmp_path: Path
) -> None:
    model.hang = lambda body: body in (3, 4, 5)

    def die_on_five(body: Any) -> None:
        if body == 5:  # raised into the worker's main thread by a signal, as Airflow's execution_timeout is
            signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)

    model.on_call = die_on_five
    with pytest.raises(WorkerDied):
        make_op(waits, tmp_path, inputs=list(range(20)), max_concurrency=4).execute({"ti": ti(1)})
    first = read_lines(tmp_path / "out.jsonl")
    assert {3, 4, 5} <= set(cancelled(first))  # the one that died and the ones hanging beside it
    assert all(x["error"]["model_may_have_run"] for x in first if "error" in x)

    model.on_call, model.hang = None, lambda _body: False
    model.calls.clear()
    make_op(waits, tmp_path, inputs=list(range(20)), max_concurrency=4, max_failed_fraction=1).execute({"ti": ti(2)})
    assert not set(model.calls) & {x["index"] for x in first}
    assert indices(read_lines(tmp_path / "out.jsonl")) == list(range(20))


@pytest.mark.usefixtures("sigusr1_raises_worker_died")
def test_a_base_exception_in_the_write_callback_stops_the_try(
    model: FakeModel, waits: list[float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signal lands in the journal's write, a plain event-loop callback where asyncio would swallow it."""
    write = LocalSink.write
    died: list[bool] = []

    def write_then_die(self: LocalSink, data: bytes) -> None:
        write(self, data)
        if not died:  # the first write only
            died.append(True)
            signal.raise_signal(signal.SIGUSR1)

    monkeypatch.setattr(LocalSink, "write", write_then_die)
    with pytest.raises(WorkerDied):
        make_op(waits, tmp_path, inputs=list(range(40)), max_concurrency=4).execute({"ti": ti(1)})
    first = read_lines(tmp_path / "out.jsonl")
    assert len(first) < 40  # stopped at the signal, not run to the end
    assert all(x["error"]["model_may_have_run"] for x in first if "error" in x)

    monkeypatch.setattr(LocalSink, "write", write)
    model.calls.clear()
    make_op(waits, tmp_path, inputs=list(range(40)), max_concurrency=4, max_failed_fraction=1).execute({"ti": ti(2)})
    assert not set(model.calls) & {x["index"] for x in first}
    assert indices(read_lines(tmp_path / "out.jsonl")) == list(range(40))


def intent(index: int, record: Any = None, **fields: Any) -> str:
    payload = {"index": index, "input_id": index, "input_fp": fingerprint(index if record is None else record)}
    return json.dumps({**payload, **fields}) + "\n"


def test_intents_of_a_killed_try_are_written_as_may_have_run_and_not_sent(
    model: FakeModel, waits: list[float], tmp_path: Path
) -> None:
    (tmp_path / "out.jsonl").write_text(line(0, output={"echo": 0}))
    (tmp_path / "out.jsonl.inflight").write_text(
        intent(0)  # answered: has a line
        + intent(1)  # in flight at the kill
        + intent(2)
        + json.dumps({"index": 2, "released": True})  # provably never ran (a fatal 401): sent again
        + "\n"
        + intent(3, record="another input")  # for an input that is no longer at index 3
        + '{"index": 4, "inp'  # torn: the send waited for this write, so item 4 was never sent
    )
    manifest = make_op(waits, tmp_path, inputs=list(range(5)), max_failed_fraction=1).execute({"ti": ti(2)})
    assert sorted(model.calls) == [2, 3, 4]
    lines = read_lines(tmp_path / "out.jsonl")
    assert indices(lines) == [0, 1, 2, 3, 4]
    assert cancelled(lines) == [1]
    assert "earlier try" in next(x for x in lines if x["index"] == 1)["error"]["message"]
    assert manifest == manifest | {"failed": 1, "succeeded": 4}
    assert not (tmp_path / "out.jsonl.inflight").exists()  # forgotten after a clean end


def test_an_intent_is_on_disk_before_its_predict_is_sent(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    seen: list[bool] = []

    def check_intent(body: Any) -> None:
        intents = (tmp_path / "out.jsonl.inflight").read_text().splitlines()
        seen.append(any(json.loads(x)["index"] == body for x in intents))

    model.on_call = check_intent
    make_op(waits, tmp_path, inputs=list(range(6)), max_concurrency=2).execute({"ti": ti(1)})
    assert seen == [True] * 6

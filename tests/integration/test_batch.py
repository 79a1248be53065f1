"""BasetenBatchPredictOperator against the emulator: faults, exactly-once outputs, kill and resume (journal proof)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from airflow_provider_baseten.emulator.faults import FaultPlan
from airflow_provider_baseten.exceptions import BasetenError
from airflow_provider_baseten.hooks.baseten import BasetenHook
from airflow_provider_baseten.operators.batch import BasetenBatchPredictOperator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def ti(try_number: int) -> mock.MagicMock:
    instance = mock.MagicMock(name="ti")
    instance.configure_mock(try_number=try_number, dag_id="dag", task_id="score", run_id="run1", map_index=-1)
    return instance


def make_op(output: Path, **kwargs: Any) -> BasetenBatchPredictOperator:
    kwargs.setdefault("model_id", "echo01")
    op = BasetenBatchPredictOperator(task_id="score", output_path=str(output), **kwargs)
    op.hook = BasetenHook(customer_request_id="")
    return op


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def predicts_that_ran(emulator: Any) -> int:
    return emulator.journal.count(route="predict", model_ran=True)


def test_thousand_inputs_with_rate_limits_and_unavailability_written_exactly_once(
    baseten_emulator: Any, tmp_path: Path
) -> None:
    # One predict in eight is refused before the model runs: 429s (one in ten) and 503s (one in forty; each 503 retry
    # spends the batch's retry budget of 5 %, which a 503 rate above it would exhaust: unit-tested in test_hotpath).
    # No Retry-After: the backoff's own 0.25-0.5 s; a Retry-After is whole seconds, which only slows the test.
    plan: list[int | str] = ["ok"] * 40
    for at in (0, 10, 20, 30):
        plan[at] = 429
    plan[5] = 503
    baseten_emulator.faults.set(FaultPlan(route="predict", sequence=plan, repeat=True))
    inputs = [{"text": f"input {n}", "n": n} for n in range(1000)]
    out = tmp_path / "out.jsonl"
    manifest = make_op(out, inputs=inputs, max_concurrency=64).execute({"ti": ti(1)})

    lines = read_lines(out)
    assert sorted(line["index"] for line in lines) == list(range(1000))  # every item exactly once
    assert all(line["output"] == inputs[line["index"]] for line in lines)
    assert manifest["succeeded"] == 1000
    assert manifest["failed"] == 0
    journal = baseten_emulator.journal
    assert journal.count(route="predict", status=429) > 0
    assert journal.count(route="predict", status=503) > 0
    # The journal proves no input was predicted twice: the model ran exactly 1,000 times; every other predict
    # request was refused before the model ran.
    assert predicts_that_ran(baseten_emulator) == 1000
    refused = journal.filter(route="predict", model_ran=False)
    assert {entry.status for entry in refused} <= {429, 503}


def test_killed_half_way_then_retried_predicts_nothing_twice(baseten_emulator: Any, tmp_path: Path) -> None:
    baseten_emulator.faults.set(FaultPlan(route="predict", delay=0.02))  # 20 ms per predict: time to kill mid-way
    inputs = [{"n": n} for n in range(400)]
    out = tmp_path / "out.jsonl"
    first = make_op(out, inputs=inputs, max_concurrency=8, kill_grace_period=30)
    failure: list[BaseException] = []

    def run_first() -> None:
        try:
            first.execute({"ti": ti(1)})
        except BaseException as err:
            failure.append(err)

    worker = threading.Thread(target=run_first)
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 150):
        time.sleep(0.01)
    first.on_kill()
    worker.join(60)
    assert not worker.is_alive()
    assert len(failure) == 1
    assert isinstance(failure[0], BasetenError)
    assert "killed" in str(failure[0])
    written_first = read_lines(out)
    assert 150 <= len(written_first) < 400
    assert all("output" in line for line in written_first)  # in-flight predicts finished within the grace
    ran_first = predicts_that_ran(baseten_emulator)
    assert ran_first == len(written_first)

    manifest = make_op(out, inputs=inputs, max_concurrency=8).execute({"ti": ti(2)})
    lines = read_lines(out)
    assert sorted(line["index"] for line in lines) == list(range(400))
    assert all(line["output"] == inputs[line["index"]] for line in lines)
    assert manifest["skipped_existing"] == len(written_first)
    assert manifest["succeeded"] == 400
    assert predicts_that_ran(baseten_emulator) == 400  # the retry predicted only what was not written


def test_crash_with_a_torn_last_line_repredicts_only_that_item(baseten_emulator: Any, tmp_path: Path) -> None:
    inputs = [{"n": n} for n in range(60)]
    out = tmp_path / "out.jsonl"
    make_op(out, inputs=inputs).execute({"ti": ti(1)})
    written = out.read_bytes().splitlines(keepends=True)
    # A crash: the 50th line was torn mid-write and the last 10 results never reached the file.
    torn = written[49]
    out.write_bytes(b"".join(written[:49]) + torn[: len(torn) // 2])

    manifest = make_op(out, inputs=inputs).execute({"ti": ti(2)})
    lines = read_lines(out)
    assert sorted(line["index"] for line in lines) == list(range(60))
    assert manifest["skipped_existing"] == 60 - 11
    assert predicts_that_ran(baseten_emulator) == 60 + 11  # exactly the torn one and the lost ones, once more


def test_ambiguous_resets_are_written_as_errors_and_not_retried(baseten_emulator: Any, tmp_path: Path) -> None:
    baseten_emulator.faults.set(FaultPlan(route="predict", sequence=["reset_after"] + ["ok"] * 9, repeat=True))
    out = tmp_path / "out.jsonl"
    manifest = make_op(out, inputs=list(range(50)), max_failed_fraction=0.5).execute({"ti": ti(1)})
    lines = read_lines(out)
    errors = [line for line in lines if "error" in line]
    assert errors
    assert all(line["error"]["model_may_have_run"] for line in errors)
    assert sorted(line["index"] for line in lines) == list(range(50))
    assert manifest["failed"] == len(errors)
    assert predicts_that_ran(baseten_emulator) == 50  # the model ran once per input, resets included


# --- safe exits: whatever ends a try, no input is predicted twice ---------------------------------------------------


def airflow_timeout(seconds: int) -> Any:
    """Airflow's own ``execution_timeout`` context (SIGALRM), as the task runner wraps ``execute``."""
    try:
        from airflow.sdk.execution_time.timeout import timeout
    except ImportError:  # pragma: no cover - older layouts
        from airflow.utils.timeout import timeout  # type: ignore[no-redef]
    return timeout(seconds)


def wait_for_lines(path: Path, count: int, deadline_s: float = 120) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} did not reach {count} lines")


def assert_each_input_once_and_none_predicted_twice(emulator: Any, out: Path, total: int) -> list[dict[str, Any]]:
    lines = read_lines(out)
    assert sorted(line["index"] for line in lines) == list(range(total))  # every input exactly once
    answered = sum("output" in line for line in lines)
    # Model runs: one per output line, plus at most one per item written as "may have run"; never more.
    assert answered <= predicts_that_ran(emulator) <= total
    return lines


def test_an_execution_timeout_records_in_flight_items_and_the_retry_resends_none(
    baseten_emulator: Any, tmp_path: Path
) -> None:
    baseten_emulator.faults.set(FaultPlan(route="predict", delay=0.25))
    inputs = [{"n": n} for n in range(48)]
    out = tmp_path / "out.jsonl"
    with pytest.raises(BaseException, match="Timeout") as caught, airflow_timeout(1):
        make_op(out, inputs=inputs, max_concurrency=4).execute({"ti": ti(1)})
    assert type(caught.value).__name__ == "AirflowTaskTimeout"
    first = read_lines(out)
    cancelled = [line for line in first if line.get("error", {}).get("type") == "Cancelled"]
    assert cancelled  # the predicts in flight at the timeout were written, as "may have run"
    assert all(line["error"]["model_may_have_run"] for line in cancelled)
    assert len(first) < 48

    baseten_emulator.faults.set(FaultPlan(route="predict"))
    manifest = make_op(out, inputs=inputs, max_concurrency=4, max_failed_fraction=0.5).execute({"ti": ti(2)})
    assert manifest["skipped_existing"] == len(first)
    lines = assert_each_input_once_and_none_predicted_twice(baseten_emulator, out, 48)
    assert [line for line in lines if line.get("error")] == cancelled


CHILD = """
import sys
from airflow_provider_baseten.hooks.baseten import BasetenHook
from airflow_provider_baseten.operators.batch import BasetenBatchPredictOperator

op = BasetenBatchPredictOperator(
    task_id="score", model_id="echo01", inputs=[{"n": n} for n in range(int(sys.argv[2]))],
    output_path=sys.argv[1], max_concurrency=8,
)
op.hook = BasetenHook(customer_request_id="")
op.execute({})
"""


def test_a_sigkilled_task_leaves_intents_and_the_retry_resends_nothing(baseten_emulator: Any, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    baseten_emulator.faults.set(FaultPlan(route="predict", delay=0.05))
    total = 600
    out = tmp_path / "out.jsonl"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(total)])
    try:
        wait_for_lines(out, 120)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert (tmp_path / "out.jsonl.inflight").exists()  # the intents of the killed try
    time.sleep(0.5)  # the emulator answers the dead child's last predicts (0.05 s each) into closed sockets
    written_first = len(read_lines(out))
    assert written_first < total

    baseten_emulator.faults.set(FaultPlan(route="predict"))
    manifest = make_op(out, inputs=[{"n": n} for n in range(total)], max_failed_fraction=0.1).execute({"ti": ti(2)})
    lines = assert_each_input_once_and_none_predicted_twice(baseten_emulator, out, total)
    stranded = [line for line in lines if line.get("error", {}).get("type") == "Cancelled"]
    assert stranded  # in flight at the kill: written as "may have run", not sent again
    assert all("earlier try" in line["error"]["message"] for line in stranded)
    assert manifest["failed"] == len(stranded)
    assert not (tmp_path / "out.jsonl.inflight").exists()  # a clean end forgets the intents

"""BasetenBatchPredictOperator re-runs (a retry or a clear): ``on_rerun`` and the input fingerprints of the output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_baseten.exceptions import BasetenConfigError

from . import test_batch as base
from .test_batch import FakeModel, indices, make_op, read_lines, ti

# The fixtures of test_batch: a connection, a fake model on a MockTransport, recorded sleeps.
_conn, model, waits = base._conn, base.model, base.waits


def rows(prefix: str, count: int) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{n}", "text": f"{prefix} text {n}"} for n in range(count)]


def run(waits: list[float], tmp_path: Path, inputs: list[Any], try_number: int, **kwargs: Any) -> dict[str, Any]:
    op = make_op(waits, tmp_path, inputs=inputs, id_field="id", **kwargs)
    return op.execute({"ti": ti(try_number)})


def test_a_cleared_task_over_rewritten_inputs_returns_only_current_results(
    model: FakeModel, waits: list[float], tmp_path: Path
) -> None:
    run(waits, tmp_path, rows("r", 5), 1)
    model.calls.clear()
    new = rows("NEW", 5)
    manifest = run(waits, tmp_path, new, 2)  # the clear: try 2 over new inputs
    lines = read_lines(tmp_path / "out.jsonl")
    assert {line["input_id"] for line in lines} == {f"NEW{n}" for n in range(5)}
    assert all(line["output"] == {"echo": new[line["index"]]} for line in lines)
    assert len(model.calls) == 5
    assert manifest["skipped_existing"] == 0
    assert manifest["succeeded"] == 5


def test_resume_keeps_unchanged_inputs_and_repredicts_changed_ones(
    model: FakeModel, waits: list[float], tmp_path: Path
) -> None:
    first = rows("r", 6)
    run(waits, tmp_path, first, 1)
    model.calls.clear()
    second = [*first[:4], {"id": "r4", "text": "edited"}]  # one changed, one removed
    manifest = run(waits, tmp_path, second, 2)
    assert model.calls == [{"id": "r4", "text": "edited"}]
    lines = read_lines(tmp_path / "out.jsonl")
    assert indices(lines) == [0, 1, 2, 3, 4]
    assert all(line["output"] == {"echo": second[line["index"]]} for line in lines)
    assert manifest == manifest | {"total": 5, "succeeded": 5, "skipped_existing": 4}


def test_unchanged_inputs_resume_without_sending(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    run(waits, tmp_path, rows("r", 4), 1)
    model.calls.clear()
    manifest = run(waits, tmp_path, rows("r", 4), 2)
    assert model.calls == []
    assert manifest["skipped_existing"] == 4


def test_on_rerun_fail_refuses_other_inputs_before_sending(
    model: FakeModel, waits: list[float], tmp_path: Path
) -> None:
    run(waits, tmp_path, rows("r", 3), 1, on_rerun="fail")
    before = (tmp_path / "out.jsonl").read_bytes()
    model.calls.clear()
    with pytest.raises(BasetenConfigError, match=r"3 lines do not match .* index 0, which now has input_id 'NEW0'"):
        run(waits, tmp_path, rows("NEW", 3), 2, on_rerun="fail")
    assert model.calls == []
    assert (tmp_path / "out.jsonl").read_bytes() == before  # untouched


def test_on_rerun_fail_still_resumes_the_same_inputs(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    run(waits, tmp_path, rows("r", 3), 1)
    (tmp_path / "out.jsonl").write_text((tmp_path / "out.jsonl").read_text().splitlines(keepends=True)[0])
    model.calls.clear()
    manifest = run(waits, tmp_path, rows("r", 3), 2, on_rerun="fail")
    assert len(model.calls) == 2
    assert manifest["skipped_existing"] == 1


def test_on_rerun_replace_predicts_everything_again(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    run(waits, tmp_path, rows("r", 3), 1)
    model.calls.clear()
    manifest = run(waits, tmp_path, rows("r", 3), 2, on_rerun="replace")
    assert len(model.calls) == 3
    assert manifest["skipped_existing"] == 0
    assert len(read_lines(tmp_path / "out.jsonl")) == 3


def test_lines_without_a_fingerprint_are_not_trusted(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    # An output written before fingerprints existed: nothing proves which input a line was for.
    (tmp_path / "out.jsonl").write_text(json.dumps({"index": 0, "input_id": 0, "output": "old"}) + "\n")
    make_op(waits, tmp_path, inputs=[0, 1]).execute({"ti": ti(2)})
    assert sorted(model.calls) == [0, 1]
    assert {line["output"]["echo"] for line in read_lines(tmp_path / "out.jsonl")} == {0, 1}


def test_a_changed_input_field_is_a_changed_input(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    inputs = [{"a": 1, "b": 2}]
    make_op(waits, tmp_path, inputs=inputs, input_field="a").execute({"ti": ti(1)})
    make_op(waits, tmp_path, inputs=inputs, input_field="b").execute({"ti": ti(2)})
    assert model.calls == [1, 2]


@pytest.mark.parametrize("value", ["again", "", None, 1])
def test_on_rerun_is_validated(value: Any, waits: list[float], tmp_path: Path) -> None:
    with pytest.raises(BasetenConfigError, match="on_rerun"):
        make_op(waits, tmp_path, inputs=[1], on_rerun=value)

"""Batch predict on the hot path: route=, per-item customer request ids, the route's retry rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_baseten.exceptions import BasetenConfigError, BasetenError
from airflow_provider_baseten.operators.batch import BasetenBatchPredictOperator

from . import test_batch as base
from .test_batch import FakeModel, make_op, read_lines, ti

_conn, model, waits = base._conn, base.model, base.waits


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_id": "abc123", "route": "../predict"}, "Invalid sync route"),
        ({"model_id": "abc123", "route": "v1/chat?x=1"}, "Invalid sync route"),
        ({"chain_id": "chn1", "route": "v1/chat/completions"}, "chains have none"),
    ],
)
def test_route_is_validated_before_anything_runs(kwargs: dict, message: str) -> None:
    with pytest.raises(BasetenConfigError, match=message):
        BasetenBatchPredictOperator(task_id="t", inputs=[1], **kwargs)


def test_items_go_to_the_sync_route_with_their_request_ids(
    model: FakeModel, waits: list[float], tmp_path: Path
) -> None:
    op = make_op(waits, tmp_path, inputs=[{"q": 0}, {"q": 1}], route="v1/chat/completions")
    op.execute({"ti": ti(try_number=2, map_index=3)})
    assert model.paths == {"/production/sync/v1/chat/completions"}
    lines = sorted(read_lines(tmp_path / "out.jsonl"), key=lambda x: x["index"])
    prefix = "dag.score.manual__2026-01-01T00:00:00+00:00.3.2"
    assert [x["customer_request_id"] for x in lines] == [f"{prefix}:0", f"{prefix}:1"]


@pytest.mark.parametrize(("route", "sends"), [("v1/embeddings", 2), ("v1/chat/completions", 1)])
def test_a_routes_retry_rule(model: FakeModel, waits: list[float], tmp_path: Path, route: str, sends: int) -> None:
    """A 500 is retried on an engine route that only computes, never on a billed one (it may have run)."""
    model.script = lambda _body, attempt: httpx.Response(500, json={"error": "boom"}) if attempt == 1 else None
    op = make_op(waits, tmp_path, inputs=[{"q": 0}], route=route, max_failed_fraction=1)
    op.execute({"ti": ti()})
    assert len(model.calls) == sends
    [line] = read_lines(tmp_path / "out.jsonl")
    assert ("output" in line) is (sends == 2)


# --- encoding the item, writing the answer ---------------------------------------------------------------------


def _answer(content: bytes) -> httpx.Response:
    return httpx.Response(200, content=content, headers={"content-type": "application/json"})


def test_the_answer_is_written_as_the_model_wrote_it(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    """One line of JSON goes into the output line undecoded (msgspec.Raw): spacing and number spelling survive."""
    model.script = lambda _body, _attempt: _answer(b'{"b": 1,  "a": [1.50, "\\u00e9"]}')
    make_op(waits, tmp_path, inputs=[{"q": 0}]).execute({"ti": ti()})
    text = (tmp_path / "out.jsonl").read_text()
    assert '"output":{"b": 1,  "a": [1.50, "\\u00e9"]}}\n' in text
    [line] = read_lines(tmp_path / "out.jsonl")
    assert line["output"] == {"b": 1, "a": [1.5, "é"]}


def test_an_answer_on_several_lines_is_decoded_into_one_line(
    model: FakeModel, waits: list[float], tmp_path: Path
) -> None:
    model.script = lambda _body, _attempt: _answer(b'{\n  "a": 1,\r\n  "b": [2]\n}\n')
    make_op(waits, tmp_path, inputs=[{"q": 0}, {"q": 1}]).execute({"ti": ti()})
    raw = (tmp_path / "out.jsonl").read_bytes()
    assert raw.count(b"\n") == 2
    assert b"\r" not in raw
    assert [line["output"] for line in read_lines(tmp_path / "out.jsonl")] == [{"a": 1, "b": [2]}] * 2


def test_an_answer_that_is_not_utf8_is_an_error_line_not_a_broken_output(
    model: FakeModel, waits: list[float], tmp_path: Path
) -> None:
    """msgspec checks JSON syntax, not the UTF-8 inside strings: such an answer is refused as the hook refuses it."""
    model.script = lambda _body, _attempt: _answer(b'{"a": "\xff"}')
    make_op(waits, tmp_path, inputs=[{"q": 0}], max_failed_fraction=1).execute({"ti": ti()})
    [line] = read_lines(tmp_path / "out.jsonl")  # the file is UTF-8 JSON lines
    assert "output" not in line
    assert "JSON" in line["error"]["message"]


def test_an_answer_with_nan_is_kept_as_json_dumps_reads_and_writes_it(
    model: FakeModel, waits: list[float], tmp_path: Path
) -> None:
    model.script = lambda _body, _attempt: _answer(b'{"score": NaN}')
    make_op(waits, tmp_path, inputs=[{"q": 0}]).execute({"ti": ti()})
    assert '"output":{"score":NaN}' in (tmp_path / "out.jsonl").read_text()


def test_inputs_json_cannot_express_fail_as_error_lines_and_big_ints_are_sent(
    model: FakeModel, waits: list[float], tmp_path: Path
) -> None:
    op = make_op(waits, tmp_path, inputs=[{"x": float("nan")}, {"x": 2**70}, {"x": "é"}], max_failed_fraction=1)
    op.execute({"ti": ti()})
    assert sorted(model.calls, key=str) == sorted([{"x": 2**70}, {"x": "é"}], key=str)
    lines = {line["index"]: line for line in read_lines(tmp_path / "out.jsonl")}
    assert lines[0]["error"]["type"] == "BasetenConfigError"
    assert lines[0]["error"]["model_may_have_run"] is False
    assert lines[1]["output"] == {"echo": {"x": 2**70}}


def test_a_line_json_dumps_writes_keeps_an_undecoded_answer_as_json() -> None:
    """A line msgspec would write differently (here a NaN input_id) goes through json.dumps, which decodes the Raw."""
    import msgspec

    from airflow_provider_baseten.operators._batch_journal import encode_line

    line = {"index": 0, "input_id": float("nan"), "output": msgspec.Raw(b'{"a": [1, 2]}')}
    assert encode_line(line) == '{"index":0,"input_id":NaN,"output":{"a":[1,2]}}\n'


# --- the start ramp ----------------------------------------------------------------------------------------------


def _record_ramp(monkeypatch: pytest.MonkeyPatch, then: Any = None) -> list[float]:
    from airflow_provider_baseten.operators._send_loop import SendLoop

    delays: list[float] = []

    async def ramp_sleep(seconds: float) -> None:  # no wall-clock sleeping in tests
        delays.append(seconds)
        if then is not None:
            then()

    monkeypatch.setattr(SendLoop, "_ramp_sleep", staticmethod(ramp_sleep))
    return delays


def test_workers_start_on_a_ramp(
    model: FakeModel, waits: list[float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays = _record_ramp(monkeypatch)
    make_op(waits, tmp_path, inputs=list(range(10)), max_concurrency=4).execute({"ti": ti()})
    assert sorted(delays) == pytest.approx([0.0005, 0.001, 0.0015])  # worker 0 at once, then one every 0.5 ms
    assert sorted(model.calls) == list(range(10))


def test_the_ramp_is_bounded_however_many_workers() -> None:
    op = BasetenBatchPredictOperator(task_id="t", model_id="abc123", inputs=[1], max_concurrency=1001)
    assert op._ramp() * 1000 == pytest.approx(op.start_ramp_max)
    assert BasetenBatchPredictOperator(task_id="t", model_id="abc123", inputs=[1])._ramp() == op.start_ramp_step


def test_a_stop_during_the_ramp_starts_no_further_sends(
    model: FakeModel, waits: list[float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    op = make_op(waits, tmp_path, inputs=list(range(10)), max_concurrency=4, kill_grace_period=5)
    _record_ramp(monkeypatch, then=op.on_kill)  # the kill comes while workers 1-3 wait for their start
    with pytest.raises(BasetenError, match="killed"):
        op.execute({"ti": ti()})
    assert model.calls == [0]  # only worker 0, which started at once, sent (and wrote) its item
    assert [(line["index"], "output" in line) for line in read_lines(tmp_path / "out.jsonl")] == [(0, True)]

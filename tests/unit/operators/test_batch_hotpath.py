"""Batch predict on the hot path: route=, per-item customer request ids, the route's retry rule."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from airflow_provider_baseten.exceptions import BasetenConfigError
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

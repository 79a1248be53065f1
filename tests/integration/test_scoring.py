"""Rerank and classify against the emulator's BEI deployment: faults, exactly-once outputs, kill and resume.

As in ``test_embeddings``, the emulator's journal is the proof: each request that reached the model carries its input
count and the customer request id the operator sent (``{dag}.{task}.{run}.{map index}.{try}:{first index}+{count}``),
so which texts the model scored is known without trusting the operator's own output.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from airflow_provider_baseten.emulator.behaviours import sentiment_of
from airflow_provider_baseten.emulator.faults import FaultPlan
from airflow_provider_baseten.exceptions import BasetenError
from airflow_provider_baseten.hooks.baseten import BasetenHook
from airflow_provider_baseten.operators.baseten import BasetenClassifyOperator, BasetenRerankOperator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

_PACK = re.compile(r":(\d+)\+(\d+)$")
TEXTS = [f"review {n}: {'great red fox' if n % 3 else 'awful blue bird'} {'x' * (n % 7)}" for n in range(600)]


def ti(try_number: int) -> mock.MagicMock:
    instance = mock.MagicMock(name="ti")
    instance.configure_mock(try_number=try_number, dag_id="dag", task_id="score", run_id="run1", map_index=-1)
    return instance


def make_op(route: str, output: Path, **kwargs: Any) -> BasetenRerankOperator | BasetenClassifyOperator:
    common = {"task_id": "score", "model_id": "embed01", "output_path": str(output), **kwargs}
    op = BasetenRerankOperator(query="red fox", **common) if route == "rerank" else BasetenClassifyOperator(**common)
    op.hook = BasetenHook(customer_request_id="")
    return op


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def texts_scored(emulator: Any, route: str, try_number: int | None = None) -> list[int]:
    """The index of every text the model scored (from the journal's request ids), once per time it was scored."""
    indices = []
    for entry in list(emulator.journal):
        if try_number is not None and f".-1.{try_number}:" not in (entry.customer_request_id or ""):
            continue
        if entry.route == route and entry.model_ran and entry.status == 200:
            match = _PACK.search(entry.customer_request_id or "")
            assert match, entry.customer_request_id
            first, count = int(match.group(1)), int(match.group(2))
            assert count == entry.inputs
            indices.extend(range(first, first + count))
    return indices


@pytest.mark.parametrize("route", ["rerank", "classify"])
def test_six_hundred_texts_with_429s_and_503s_are_each_scored_and_written_exactly_once(
    baseten_emulator: Any, tmp_path: Path, route: str
) -> None:
    # One request in 20 is refused before the model runs (429 or 503): the hook retries them; 503s spend the
    # try's retry budget (429s do not), which these stay within.
    plan = [429, *["ok"] * 19, 503, *["ok"] * 19]
    baseten_emulator.faults.set(FaultPlan(route=route, sequence=plan, repeat=True))
    out = tmp_path / "scores.jsonl"
    manifest = make_op(route, out, texts=TEXTS, batch_size=4, max_concurrency=16).execute({"ti": ti(1)})

    lines = read_lines(out)
    assert sorted(line["index"] for line in lines) == list(range(600))  # every text written exactly once
    for line in lines:
        text = TEXTS[line["index"]]
        if route == "rerank":
            assert line["score"] == (1.0 if "red fox" in text else 0.0)
        else:
            assert line["labels"][0] == sentiment_of(text)
    assert (manifest["succeeded"], manifest["failed"], manifest["total"]) == (600, 0, 600)
    journal = baseten_emulator.journal
    assert journal.count(route=route, status=429) > 0
    assert journal.count(route=route, status=503) > 0
    assert manifest["requests"] == journal.count(route=route, status=200) == 150
    assert sorted(texts_scored(baseten_emulator, route)) == list(range(600))  # and each scored exactly once


@pytest.mark.parametrize("route", ["rerank", "classify"])
def test_killed_half_way_then_retried_re_sends_no_written_text(
    baseten_emulator: Any, tmp_path: Path, route: str
) -> None:
    baseten_emulator.faults.set(FaultPlan(route=route, delay=0.02))  # 20 ms per request: time to kill
    out = tmp_path / "scores.jsonl"
    first = make_op(route, out, texts=TEXTS, batch_size=5, max_concurrency=4, kill_grace_period=0)
    failure: list[BaseException] = []

    def run_first() -> None:
        try:
            first.execute({"ti": ti(1)})
        except BaseException as err:
            failure.append(err)

    worker = threading.Thread(target=run_first)
    worker.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 250):
        time.sleep(0.01)
    first.on_kill()
    worker.join(30)
    assert not worker.is_alive()
    assert len(failure) == 1
    assert isinstance(failure[0], BasetenError)
    assert "killed" in str(failure[0])
    written_first = {line["index"] for line in read_lines(out)}
    assert 250 <= len(written_first) < 600

    manifest = make_op(route, out, texts=TEXTS, batch_size=5, max_concurrency=4).execute({"ti": ti(2)})
    sent_again = texts_scored(baseten_emulator, route, try_number=2)
    assert not written_first & set(sent_again)  # no written text was sent again
    assert sorted(sent_again) == sorted(set(range(600)) - written_first)  # and every other one exactly once
    assert (manifest["skipped_existing"], manifest["succeeded"]) == (len(written_first), 600)
    assert sorted(line["index"] for line in read_lines(out)) == list(range(600))

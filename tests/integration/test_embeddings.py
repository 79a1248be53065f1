"""BasetenEmbeddingsOperator against the emulator's BEI deployment: faults, exactly-once outputs, kill and resume.

The emulator's journal is the proof: each ``embeddings`` request that reached the model carries its input count and
the customer request id the operator sent (``{dag}.{task}.{run}.{map index}.{try}:{first index}+{count}``), so the
texts every request carried are known without trusting the operator's own output.
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

from airflow_provider_baseten.emulator.bei import vector
from airflow_provider_baseten.emulator.faults import FaultPlan
from airflow_provider_baseten.exceptions import BasetenError
from airflow_provider_baseten.hooks.baseten import BasetenHook
from airflow_provider_baseten.operators.embeddings import BasetenEmbeddingsOperator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

_PACK = re.compile(r":(\d+)\+(\d+)$")


def ti(try_number: int) -> mock.MagicMock:
    instance = mock.MagicMock(name="ti")
    instance.configure_mock(try_number=try_number, dag_id="dag", task_id="embed", run_id="run1", map_index=-1)
    return instance


def make_op(output: Path, **kwargs: Any) -> BasetenEmbeddingsOperator:
    op = BasetenEmbeddingsOperator(task_id="embed", model_id="embed01", output_path=str(output), **kwargs)
    op.hook = BasetenHook(customer_request_id="")
    return op


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def texts_embedded(emulator: Any, try_number: int | None = None) -> list[int]:
    """The index of every text the model embedded (from the journal's request ids), one per embedding.

    ``try_number`` keeps the packs that try sent (its number is in the request id): a killed try's last packs may
    still be answered, and journaled, after the kill returned.
    """
    indices = []
    for entry in list(emulator.journal):
        if try_number is not None and f".-1.{try_number}:" not in (entry.customer_request_id or ""):
            continue
        if entry.route == "embeddings" and entry.model_ran and entry.status == 200:
            match = _PACK.search(entry.customer_request_id or "")
            assert match, entry.customer_request_id
            first, count = int(match.group(1)), int(match.group(2))
            assert count == entry.inputs
            indices.extend(range(first, first + count))
    return indices


def test_ten_thousand_texts_with_429s_and_503s_are_each_embedded_and_written_exactly_once(
    baseten_emulator: Any, tmp_path: Path
) -> None:
    # One request in 20 is refused before the model runs (429 or 503): the hook retries them; 503s spend the
    # try's retry budget (429s do not), which these stay well within.
    plan = [429, *["ok"] * 19, 503, *["ok"] * 19]
    baseten_emulator.faults.set(FaultPlan(route="embeddings", sequence=plan, repeat=True))
    texts = [f"document {n}: {'lorem ipsum ' * (n % 5)}" for n in range(10_000)]
    out = tmp_path / "vectors.jsonl"
    manifest = make_op(out, texts=texts, batch_size=32, max_concurrency=32, dimensions=8).execute({"ti": ti(1)})

    lines = read_lines(out)
    assert sorted(line["index"] for line in lines) == list(range(10_000))  # every text written exactly once
    assert all(line["embedding"] == pytest.approx(list(vector(texts[line["index"]], 8))) for line in lines)
    assert (manifest["succeeded"], manifest["failed"], manifest["dimensions"]) == (10_000, 0, 8)
    assert manifest["usage"]["prompt_tokens"] > 10_000
    journal = baseten_emulator.journal
    assert journal.count(route="embeddings", status=429) > 0
    assert journal.count(route="embeddings", status=503) > 0
    assert {entry.status for entry in journal.filter(route="embeddings", model_ran=False)} <= {429, 503}
    assert sorted(texts_embedded(baseten_emulator)) == list(range(10_000))  # and each embedded exactly once


def test_killed_half_way_then_retried_re_sends_no_written_text(baseten_emulator: Any, tmp_path: Path) -> None:
    baseten_emulator.faults.set(FaultPlan(route="embeddings", delay=0.02))  # 20 ms per request: time to kill
    texts = [f"text {n}" for n in range(2_000)]
    out = tmp_path / "vectors.parquet"
    journal_file = tmp_path / "vectors.parquet.journal.jsonl"
    first = make_op(out, texts=texts, batch_size=20, max_concurrency=4, kill_grace_period=0, dimensions=4)
    failure: list[BaseException] = []

    def run_first() -> None:
        try:
            first.execute({"ti": ti(1)})
        except BaseException as err:
            failure.append(err)

    worker = threading.Thread(target=run_first)
    worker.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        not journal_file.exists() or len(journal_file.read_text().splitlines()) < 800
    ):
        time.sleep(0.01)
    first.on_kill()
    worker.join(30)
    assert not worker.is_alive()
    assert len(failure) == 1
    assert "killed" in str(failure[0])
    assert isinstance(failure[0], BasetenError)
    written_first = {line["index"] for line in read_lines(journal_file)}
    assert 800 <= len(written_first) < 2_000
    assert not out.exists()  # the Parquet file is written only by a try that finishes

    manifest = make_op(out, texts=texts, batch_size=20, max_concurrency=4, dimensions=4).execute({"ti": ti(2)})
    sent_again = texts_embedded(baseten_emulator, try_number=2)
    assert not written_first & set(sent_again)  # no written text was sent again
    assert sorted(sent_again) == sorted(set(range(2_000)) - written_first)  # and every other one exactly once
    assert manifest["skipped_existing"] == len(written_first)
    assert manifest["succeeded"] == 2_000

    import pyarrow.parquet as pq

    table = pq.read_table(out)
    assert sorted(table.column("index").to_pylist()) == list(range(2_000))
    row = table.slice(0, 1).to_pylist()[0]
    assert row["embedding"] == pytest.approx(list(vector(texts[row["index"]], 4)))

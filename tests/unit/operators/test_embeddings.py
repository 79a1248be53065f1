"""BasetenEmbeddingsOperator against a fake BEI on a loopback server: parameters, packing, inputs, outputs, resume."""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import sys
import types
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import object_store_fs  # tests/ is on sys.path (as test_batch_storage imports it: one module, one store)
import pytest

from airflow_provider_baseten.exceptions import (
    BasetenAuthError,
    BasetenConfigError,
    BasetenDeploymentError,
    BasetenError,
)
from airflow_provider_baseten.hooks.baseten import BasetenHook
from airflow_provider_baseten.hooks.clients import build_client
from airflow_provider_baseten.operators import embeddings as embeddings_module
from airflow_provider_baseten.operators._lineage import dataset_name, output_asset
from airflow_provider_baseten.operators.batch import BasetenBatchPredictOperator
from airflow_provider_baseten.operators.embeddings import BasetenEmbeddingsOperator

from .loopback import LoopbackServer

object_store = object_store_fs.object_store  # the fixture: an in-memory store that cannot append
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def vector_of(text: str, dimensions: int = 4) -> list[float]:
    """A deterministic vector per text, exactly representable in float32."""
    seed = sum(map(ord, text))
    return [((seed * (k + 1)) % 97) / 8 for k in range(dimensions)]


class FakeBEI:
    """A BEI deployment behind the loopback server: vectors of each text (in reverse order, as BEI may answer),
    with scriptable answers (``fail(texts)`` returns the answer instead), hangs and a hook on each request."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.bodies: list[dict[str, Any]] = []
        self.request_ids: list[str | None] = []
        self.fail: Callable[[list[str]], httpx.Response | None] = lambda _texts: None
        self.hang: Callable[[list[str]], bool] = lambda _texts: False
        self.on_call: Callable[[list[str]], None] | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate = 0  # the first ``gate`` requests are held until all of them are in flight
        self._gate_open: asyncio.Event | None = None
        self.status = "ACTIVE"
        self.separators = (",", ":")  # how the server spells its JSON (Python's json.dumps default: ", ", ": ")

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        texts = body["input"]
        self.calls.append(list(texts))
        self.bodies.append(body)
        self.request_ids.append(request.headers.get("x-baseten-customer-request-id"))
        if self.on_call is not None:
            self.on_call(texts)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if len(self.calls) <= self.gate:
                self._gate_open = self._gate_open or asyncio.Event()
                if self.in_flight >= self.gate:
                    self._gate_open.set()
                await self._gate_open.wait()
            if self.hang(texts):
                await asyncio.sleep(3600)
            answer = self.fail(texts)
            if answer is not None:
                return answer
            dimensions = body.get("dimensions") or 4
            data = [
                {"object": "embedding", "index": i, "embedding": vector_of(t, dimensions)} for i, t in enumerate(texts)
            ]
            tokens = sum(len(text.split()) for text in texts)
            usage = {"prompt_tokens": tokens, "total_tokens": tokens}
            answer_json = {"object": "list", "data": data[::-1], "usage": usage}
            encoded = json.dumps(answer_json, separators=self.separators).encode()
            return httpx.Response(200, content=encoded, headers={"content-type": "application/json"})
        finally:
            self.in_flight -= 1

    def sent(self) -> list[str]:
        return [text for call in self.calls for text in call]


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBEI]:
    fake = FakeBEI()
    with LoopbackServer(fake) as server:
        monkeypatch.setenv(
            "AIRFLOW_CONN_BASETEN_DEFAULT",
            json.dumps({"conn_type": "baseten", "password": "sk-test-embed-key-123", "host": server.url}),
        )

        def management(request: httpx.Request) -> httpx.Response:  # the status read before the first request
            return httpx.Response(200, json={"id": "dep1", "status": fake.status, "active_replica_count": 1})

        monkeypatch.setattr(
            "airflow_provider_baseten.hooks.baseten.build_client",
            lambda settings, **_kwargs: build_client(settings, transport=httpx.MockTransport(management)),
        )
        yield fake


def ti(try_number: int = 1) -> mock.MagicMock:
    instance = mock.MagicMock(name="ti")
    instance.configure_mock(try_number=try_number, dag_id="dag", task_id="embed", run_id="manual__1")
    instance.map_index = -1
    return instance


def make_op(hook: FakeBEI, tmp_path: Path, **kwargs: Any) -> BasetenEmbeddingsOperator:
    kwargs.setdefault("task_id", "embed")
    kwargs.setdefault("model_id", "bei123")
    kwargs.setdefault("output_path", str(tmp_path / "out.jsonl"))
    op = BasetenEmbeddingsOperator(**kwargs)

    async def no_sleep(_seconds: float) -> None:
        return None

    op.hook = BasetenHook(customer_request_id="", async_sleep=no_sleep)
    return op


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


TEXTS = [f"text number {n}" for n in range(10)]


def test_an_inactive_deployment_fails_before_any_text_is_sent(hook: FakeBEI, tmp_path: Path) -> None:
    hook.status = "INACTIVE"
    op = make_op(hook, tmp_path, texts=TEXTS)
    with pytest.raises(BasetenDeploymentError, match="activate_if_inactive=True"):
        op.execute({})
    assert hook.calls == []


# --- parameters ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of texts"),
        ({"texts": ["a"], "input_path": "/x.jsonl"}, "exactly one of texts"),
        ({"texts": ("a",)}, "must be a list"),
        ({"texts": ["a"], "batch_size": 0}, "batch_size"),
        ({"texts": ["a"], "batch_size": 1025}, "at most 1024"),
        ({"texts": ["a"], "max_chars_per_request": True}, "max_chars_per_request"),
        ({"texts": ["a"], "max_concurrency": 0}, "max_concurrency"),
        ({"texts": ["a"], "dimensions": 0}, "dimensions"),
        ({"texts": ["a"], "encoding_format": "int8"}, "encoding_format"),
        ({"texts": ["a"], "output_format": "csv"}, "output_format"),
        ({"texts": ["a"], "on_rerun": "again"}, "on_rerun"),
        ({"texts": ["a"], "text_field": ""}, "text_field"),
        ({"texts": ["a"], "max_failed_fraction": 2}, "max_failed_fraction"),
        ({"texts": ["a"], "timeout": 0}, "timeout"),
        ({"texts": ["a"], "chain_id": "abc", "model_id": None}, "model"),
    ],
)
def test_invalid_literal_arguments_fail_at_parse_time(kwargs: dict[str, Any], message: str) -> None:
    kwargs.setdefault("model_id", "bei123")
    with pytest.raises(BasetenConfigError, match=message):
        BasetenEmbeddingsOperator(task_id="embed", **kwargs)


def test_texts_rendered_to_a_string_are_parsed(hook: FakeBEI, tmp_path: Path) -> None:
    op = make_op(hook, tmp_path, texts="{{ ti.xcom_pull('x') }}")
    op.texts = '["a b", "c"]'
    assert op.execute({"ti": ti()})["succeeded"] == 2


# --- packing ------------------------------------------------------------------------------------------------------


def test_texts_are_packed_batch_size_per_request_and_written_once(hook: FakeBEI, tmp_path: Path) -> None:
    manifest = make_op(hook, tmp_path, texts=TEXTS, batch_size=4, dimensions=3, model="bge").execute({"ti": ti()})
    assert sorted(len(call) for call in hook.calls) == [2, 4, 4]
    assert sorted(hook.sent()) == sorted(TEXTS)
    assert all(set(body) == {"input", "model", "dimensions"} for body in hook.bodies)
    assert {(body["model"], body["dimensions"]) for body in hook.bodies} == {("bge", 3)}
    assert sorted(hook.request_ids) == [  # one per request: the task, its first index and its size
        f"dag.embed.manual__1.-1.1:{first}+{size}" for first, size in ((0, 4), (4, 4), (8, 2))
    ]
    lines = read_lines(tmp_path / "out.jsonl")
    assert sorted(line["index"] for line in lines) == list(range(10))
    assert all(line["embedding"] == vector_of(TEXTS[line["index"]], 3) for line in lines)
    assert all(line["id"] == line["index"] for line in lines)
    assert manifest["total"] == manifest["succeeded"] == 10
    assert manifest["failed"] == 0
    assert manifest["dimensions"] == 3
    assert manifest["usage"] == {"prompt_tokens": 30, "total_tokens": 30}


def test_packs_are_bounded_by_characters_and_a_long_text_goes_alone(hook: FakeBEI, tmp_path: Path) -> None:
    texts = ["a" * 10, "b" * 10, "c" * 10, "d" * 50, "e" * 10]
    make_op(hook, tmp_path, texts=texts, batch_size=100, max_chars_per_request=25, max_concurrency=1).execute({})
    assert hook.calls == [["a" * 10, "b" * 10], ["c" * 10], ["d" * 50], ["e" * 10]]


def test_concurrency_is_bounded(hook: FakeBEI, tmp_path: Path) -> None:
    hook.gate = 3
    make_op(hook, tmp_path, texts=TEXTS * 5, batch_size=2, max_concurrency=3).execute({})
    assert hook.max_in_flight == 3


def test_invalid_records_are_written_as_errors_and_never_sent(hook: FakeBEI, tmp_path: Path) -> None:
    texts = [{"body": "fine", "key": "a"}, {"body": "", "key": "b"}, {"other": 1, "key": "c"}, "plain"]
    op = make_op(hook, tmp_path, texts=texts, text_field="body", id_field="key", max_failed_fraction=1.0)
    manifest = op.execute({})
    assert hook.sent() == ["fine"]
    by_index = {line["index"]: line for line in read_lines(tmp_path / "out.jsonl")}
    assert by_index[0]["id"] == "a"
    assert by_index[1]["error"]["type"] == "InvalidInput"
    assert "'body'" in by_index[2]["error"]["message"]
    assert "id_field" in by_index[3]["error"]["message"]  # a string record has no id_field
    assert (manifest["succeeded"], manifest["failed"]) == (1, 3)


# --- inputs -------------------------------------------------------------------------------------------------------


def write_input(tmp_path: Path, kind: str, rows: list[dict[str, Any]]) -> Path:
    path = tmp_path / f"docs.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif kind == "csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_file_inputs_by_suffix(hook: FakeBEI, tmp_path: Path, kind: str) -> None:
    rows = [{"doc": f"doc-{n}", "text": f"line, with a comma {n}"} for n in range(7)]
    path = write_input(tmp_path, kind, rows)
    manifest = make_op(hook, tmp_path, input_path=str(path), id_field="doc", batch_size=3).execute({})
    assert manifest["total"] == 7
    assert sorted(hook.sent()) == sorted(row["text"] for row in rows)
    ids = {line["index"]: line["id"] for line in read_lines(tmp_path / "out.jsonl")}
    assert ids == {n: f"doc-{n}" for n in range(7)}


# --- outputs ------------------------------------------------------------------------------------------------------


def test_parquet_output_holds_float32_vectors_and_errors(hook: FakeBEI, tmp_path: Path) -> None:
    hook.fail = lambda texts: httpx.Response(500, json={"error": "boom"}) if "text number 9" in texts else None
    out = tmp_path / "vectors.parquet"
    op = make_op(hook, tmp_path, texts=TEXTS, output_path=str(out), batch_size=3, max_failed_fraction=0.5)
    manifest = op.execute({})
    table = pq.read_table(out)
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    rows = {row["index"]: row for row in table.to_pylist()}
    assert sorted(rows) == list(range(10))
    assert rows[9]["embedding"] is None
    assert "boom" in rows[9]["error"]
    assert all(rows[n]["embedding"] == vector_of(TEXTS[n]) for n in range(9))
    assert all(rows[n]["id"] == str(n) and rows[n]["error"] is None for n in range(9))
    assert manifest["output_path"] == out.as_uri()
    assert manifest["failed"] == 1
    assert (tmp_path / "vectors.parquet.journal.jsonl").exists()


def test_parquet_journal_is_base64_float32(hook: FakeBEI, tmp_path: Path) -> None:
    make_op(hook, tmp_path, texts=TEXTS[:2], output_path=str(tmp_path / "v.parquet")).execute({})
    line = read_lines(tmp_path / "v.parquet.journal.jsonl")[0]
    assert array("f", base64.b64decode(line["embedding"])).tolist() == vector_of(TEXTS[line["index"]])


def test_parquet_needs_pyarrow_and_says_so_before_sending(
    hook: FakeBEI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(BasetenConfigError, match=r"airflow-provider-baseten\[parquet\]"):
        make_op(hook, tmp_path, texts=TEXTS, output_format="parquet").execute({})
    assert hook.calls == []


def test_progress_lines_name_rate_eta_and_tokens(hook: FakeBEI, tmp_path: Path) -> None:
    ticks = iter(range(1000))
    op = make_op(hook, tmp_path, texts=TEXTS, batch_size=2, max_concurrency=1, progress_interval=1)
    op._clock = lambda: float(next(ticks))  # type: ignore[method-assign]
    with mock.patch.object(BasetenEmbeddingsOperator, "log", new_callable=mock.PropertyMock) as log:
        op.execute({})
    messages = [call.args[0] % call.args[1:] for call in log.return_value.info.call_args_list]
    progress = [m for m in messages if m.startswith("Embeddings progress")]
    assert len(progress) >= 4
    assert "/10 texts done (0 failed" in progress[0]
    assert "texts/s, ETA " in progress[0]
    assert "s, 6 tokens" in progress[0]  # two texts of three words per request
    assert any(m.startswith("Embeddings finished: 10/10 texts done") and m.endswith("30 tokens") for m in messages)


def test_object_store_outputs_jsonl_parts_and_parquet_resume(hook: FakeBEI, tmp_path: Path, object_store: str) -> None:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    folder = f"{object_store}/vectors/run1.jsonl"
    manifest = make_op(hook, tmp_path, texts=TEXTS, output_path=folder, part_size=4, batch_size=2).execute({})
    assert all(uri.startswith(f"{folder}/part-") for uri in manifest["parts"])
    lines = [json.loads(line) for uri in manifest["parts"] for line in ObjectStoragePath(uri).read_text().splitlines()]
    assert sorted(line["index"] for line in lines) == list(range(10))

    out = f"{object_store}/vectors/run1.parquet"
    make_op(hook, tmp_path, texts=TEXTS[:6], output_path=out, batch_size=2).execute({"ti": ti(1)})
    hook.calls.clear()
    manifest = make_op(hook, tmp_path, texts=TEXTS, output_path=out, batch_size=2).execute({"ti": ti(2)})
    assert sorted(hook.sent()) == sorted(TEXTS[6:])  # the journal folder beside the file was resumed
    assert manifest["skipped_existing"] == 6
    with ObjectStoragePath(out).open("rb") as handle:
        table = pq.read_table(handle)
    assert sorted(table.column("index").to_pylist()) == list(range(10))
    assert ObjectStoragePath(f"{out}.journal").exists()


# --- failures and resume ------------------------------------------------------------------------------------------


def test_a_failed_pack_writes_an_error_per_text(hook: FakeBEI, tmp_path: Path) -> None:
    hook.fail = lambda texts: httpx.Response(429, json={"error": "slow down"}) if "text number 0" in texts else None
    with pytest.raises(BasetenError, match="3 of 10 texts failed"):
        make_op(hook, tmp_path, texts=TEXTS, batch_size=3, max_concurrency=1).execute({})
    errors = [line for line in read_lines(tmp_path / "out.jsonl") if "error" in line]
    assert sorted(line["index"] for line in errors) == [0, 1, 2]
    assert all(line["error"]["model_may_have_run"] is False for line in errors)


def test_a_retry_sends_only_what_is_missing_or_never_reached_the_model(hook: FakeBEI, tmp_path: Path) -> None:
    def fail(texts: list[str]) -> httpx.Response | None:
        if "text number 0" in texts:
            return httpx.Response(429, json={"error": "slow down"})  # never ran: sent again
        if "text number 3" in texts:
            return httpx.Response(500, json={"error": "model crashed"})  # may have run: kept as an error
        return None

    hook.fail = fail
    op = make_op(hook, tmp_path, texts=TEXTS, batch_size=3, max_concurrency=1, max_failed_fraction=1.0)
    op.execute({"ti": ti(1)})
    hook.calls.clear()
    hook.fail = lambda _texts: None
    manifest = op.execute({"ti": ti(2)})
    assert hook.calls == [TEXTS[0:3]]
    assert manifest["skipped_existing"] == 7
    assert (manifest["succeeded"], manifest["failed"]) == (7, 3)
    lines = read_lines(tmp_path / "out.jsonl")
    assert sorted(line["index"] for line in lines) == list(range(10))


def test_a_retry_re_embeds_changed_texts_and_all_of_them_when_dimensions_change(hook: FakeBEI, tmp_path: Path) -> None:
    make_op(hook, tmp_path, texts=TEXTS, batch_size=5).execute({"ti": ti(1)})
    hook.calls.clear()
    changed = [*TEXTS[:9], "a new last text"]
    make_op(hook, tmp_path, texts=changed, batch_size=5).execute({"ti": ti(2)})
    assert hook.sent() == ["a new last text"]
    hook.calls.clear()
    make_op(hook, tmp_path, texts=changed, batch_size=5, dimensions=2).execute({"ti": ti(3)})
    assert sorted(hook.sent()) == sorted(changed)
    assert all(len(line["embedding"]) == 2 for line in read_lines(tmp_path / "out.jsonl"))


def test_on_rerun_fail_refuses_other_texts(hook: FakeBEI, tmp_path: Path) -> None:
    make_op(hook, tmp_path, texts=TEXTS).execute({"ti": ti(1)})
    hook.calls.clear()
    with pytest.raises(BasetenConfigError, match="on_rerun='fail'"):
        make_op(hook, tmp_path, texts=TEXTS[::-1], on_rerun="fail").execute({"ti": ti(2)})
    assert hook.calls == []


def test_the_first_try_replaces_an_old_output(hook: FakeBEI, tmp_path: Path) -> None:
    make_op(hook, tmp_path, texts=TEXTS).execute({"ti": ti(1)})
    hook.calls.clear()
    make_op(hook, tmp_path, texts=TEXTS).execute({"ti": ti(1)})
    assert sorted(hook.sent()) == sorted(TEXTS)
    assert len(read_lines(tmp_path / "out.jsonl")) == 10


def test_a_killed_try_leaves_in_flight_packs_to_the_retry_and_resends_no_written_one(
    hook: FakeBEI, tmp_path: Path
) -> None:
    texts = [f"t{n}" for n in range(12)]
    hook.hang = lambda batch: "t6" in batch
    op = make_op(hook, tmp_path, texts=texts, batch_size=2, max_concurrency=1, kill_grace_period=0)
    hook.on_call = lambda batch: op.on_kill() if "t6" in batch else None  # from the server's thread
    with pytest.raises(BasetenError, match="stopped early"):
        op.execute({"ti": ti(1)})
    written = {line["index"] for line in read_lines(tmp_path / "out.jsonl")}
    assert written == set(range(6))
    assert (tmp_path / "out.jsonl.inflight").exists()
    hook.calls.clear()
    hook.hang, hook.on_call = (lambda _batch: False), None
    manifest = make_op(hook, tmp_path, texts=texts, batch_size=2).execute({"ti": ti(2)})
    assert sorted(hook.sent()) == sorted(texts[6:])
    assert manifest["succeeded"] == 12
    assert sorted(line["index"] for line in read_lines(tmp_path / "out.jsonl")) == list(range(12))


def test_a_sigkilled_try_s_intents_are_sent_again(hook: FakeBEI, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    make_op(hook, tmp_path, texts=TEXTS[:4]).execute({"ti": ti(1)})
    fingerprints = {line["index"]: line["input_fp"] for line in read_lines(out)}
    # as a SIGKILL mid-request leaves it: indices 2 and 3 intended, no line written
    out.write_text("".join(line + "\n" for line in out.read_text().splitlines() if json.loads(line)["index"] < 2))
    intents = [{"index": n, "id": n, "input_fp": fingerprints[n]} for n in (2, 3)]
    (tmp_path / "out.jsonl.inflight").write_text("".join(json.dumps(i) + "\n" for i in intents))
    hook.calls.clear()
    assert make_op(hook, tmp_path, texts=TEXTS[:4]).execute({"ti": ti(2)})["succeeded"] == 4
    assert hook.sent() == TEXTS[2:4]
    assert not (tmp_path / "out.jsonl.inflight").exists()


def test_authentication_errors_stop_at_once(hook: FakeBEI, tmp_path: Path) -> None:
    hook.fail = lambda _texts: httpx.Response(401, json={"error": "bad key"})
    with pytest.raises(BasetenAuthError):
        make_op(hook, tmp_path, texts=TEXTS * 10, batch_size=2, max_concurrency=2).execute({})
    assert len(hook.calls) <= 2


def test_a_response_with_wrong_indices_is_an_error(hook: FakeBEI, tmp_path: Path) -> None:
    hook.fail = lambda _texts: httpx.Response(200, json={"data": [{"index": 0, "embedding": [1.0]}]})
    with pytest.raises(BasetenError, match="2 of 2 texts failed"):
        make_op(hook, tmp_path, texts=["a", "b"]).execute({})
    assert all("indices that are not 0..1" in line["error"]["message"] for line in read_lines(tmp_path / "out.jsonl"))


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")], ids=["compact", "spaced"])
def test_jsonl_lines_of_the_raw_path_are_the_float_path_s_byte_for_byte(
    hook: FakeBEI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, separators: tuple[str, str]
) -> None:
    """The default JSONL output copies each vector's text from the answer (less spaces after commas, which some
    servers write); forcing the float path changes no byte."""
    hook.separators = separators
    taken: list[int] = []
    raw_lines = embeddings_module.raw_lines

    def spy(*args: Any) -> Any:
        answer = raw_lines(*args)
        taken.append(answer is not None)
        return answer

    monkeypatch.setattr(embeddings_module, "raw_lines", spy)
    make_op(hook, tmp_path, texts=TEXTS, batch_size=3, max_concurrency=1, dimensions=6).execute({})
    assert taken == [True] * 4
    monkeypatch.setattr(embeddings_module, "raw_lines", lambda *_args: None)
    float_out = tmp_path / "float.jsonl"
    make_op(
        hook, tmp_path, texts=TEXTS, batch_size=3, max_concurrency=1, dimensions=6, output_path=str(float_out)
    ).execute({})
    assert (tmp_path / "out.jsonl").read_bytes() == float_out.read_bytes()
    assert [line["embedding"] for line in read_lines(float_out)] == [vector_of(text, 6) for text in TEXTS]


def test_a_vector_of_another_length_fails_its_pack_with_a_clear_error(hook: FakeBEI, tmp_path: Path) -> None:
    def short_second(texts: list[str]) -> httpx.Response:
        data = [{"index": i, "embedding": vector_of(t, 4 if i != 1 else 3)} for i, t in enumerate(texts)]
        return httpx.Response(200, json={"data": data})

    hook.fail = short_second
    with pytest.raises(BasetenError, match="2 of 2 texts failed"):
        make_op(hook, tmp_path, texts=["a", "b"], dimensions=4).execute({})
    messages = {line["error"]["message"] for line in read_lines(tmp_path / "out.jsonl")}
    asked = "vector lengths [3, 4] differ from the 4 dimensions asked for."
    assert messages == {f"sync/v1/embeddings on model bei123 (production): {asked}"}


def test_one_retry_budget_bounds_a_failure_storm(hook: FakeBEI, tmp_path: Path) -> None:
    """Every request answers 500 (retried on embeddings): the whole try affords max(10, 5%) retries, not 3 each."""
    hook.fail = lambda _texts: httpx.Response(500, json={"error": "boom"})
    with pytest.raises(BasetenError, match="40 of 40 texts failed"):
        make_op(hook, tmp_path, texts=[f"t{n}" for n in range(40)], batch_size=1, max_concurrency=4).execute({})
    assert len(hook.calls) == 40 + 10


# --- lineage and assets -------------------------------------------------------------------------------------------


def test_a_literal_output_path_is_an_outlet_asset_and_a_templated_one_is_not(tmp_path: Path) -> None:
    literal = BasetenEmbeddingsOperator(task_id="a", model_id="x", texts=["a"], output_path="s3://bucket/v.parquet")
    assert [asset.uri for asset in literal.outlets] == ["s3://bucket/v.parquet"]
    templated = BasetenEmbeddingsOperator(task_id="b", model_id="x", texts=["a"], output_path="s3://b/{{ ds }}.jsonl")
    assert templated.outlets == []
    assert output_asset(str(tmp_path / "v.jsonl")).uri == (tmp_path / "v.jsonl").as_uri()


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/a/b.parquet", ("s3://bucket", "a/b.parquet")),
        ("gs://bucket/x", ("gs://bucket", "x")),
        ("file:///tmp/out.jsonl", ("file", "/tmp/out.jsonl")),
    ],
)
def test_dataset_names(uri: str, expected: tuple[str, str]) -> None:
    assert dataset_name(uri) == expected


def test_lineage_is_none_without_the_openlineage_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", None)
    op = BasetenEmbeddingsOperator(task_id="a", model_id="x", texts=["a"], output_path="s3://b/v.jsonl")
    assert op.get_openlineage_facets_on_complete(ti()) is None


@pytest.mark.parametrize("operator", [BasetenEmbeddingsOperator, BasetenBatchPredictOperator])
def test_lineage_names_the_input_and_output_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, operator: type
) -> None:
    extractors = types.ModuleType("airflow.providers.openlineage.extractors")
    extractors.OperatorLineage = lambda **kw: kw  # type: ignore[attr-defined]
    facet = types.ModuleType("airflow.providers.common.compat.openlineage.facet")
    facet.Dataset = lambda namespace, name: (namespace, name)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", extractors)
    monkeypatch.setitem(sys.modules, "airflow.providers.common.compat.openlineage.facet", facet)
    monkeypatch.setenv("AIRFLOW__BASETEN__OUTPUT_LOCATION", "s3://lake/out")
    source = tmp_path / "in.jsonl"
    op = operator(task_id="embed", model_id="x", input_path=str(source))
    lineage = op.get_openlineage_facets_on_complete(ti())
    folder = "baseten-embeddings" if operator is BasetenEmbeddingsOperator else "baseten-batches"
    assert lineage == {
        "inputs": [("file", str(source))],
        "outputs": [("s3://lake", f"out/{folder}/dag/manual__1/embed.jsonl")],
    }


def test_the_module_does_not_import_pyarrow_or_openlineage() -> None:
    assert "pyarrow" not in embeddings_module.__dict__

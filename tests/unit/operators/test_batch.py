"""BasetenBatchPredictOperator against a fake model on a loopback server: parameters, lines, retries, resume, progress.

The items go out on the hot path (aiohttp) to a real server on 127.0.0.1 (``loopback``); the one sync management
read before the first item goes through an ``httpx.MockTransport``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest

from airflow_provider_baseten.exceptions import BasetenAuthError, BasetenConfigError, BasetenError
from airflow_provider_baseten.hooks.baseten import BasetenHook
from airflow_provider_baseten.hooks.clients import build_client
from airflow_provider_baseten.operators import batch as batch_module
from airflow_provider_baseten.operators._batch_inputs import FileSource, ListSource
from airflow_provider_baseten.operators._batch_journal import Existing, IndexSet, LocalSink
from airflow_provider_baseten.operators._send_loop import RunState, SendLoop
from airflow_provider_baseten.operators.batch import BasetenBatchPredictOperator, describe_error, model_may_have_run

from .loopback import LoopbackServer

GATEWAY = "http://gw.test"

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


@pytest.fixture(autouse=True)
def _conn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_BASETEN_DEFAULT",
        json.dumps({"conn_type": "baseten", "password": "sk-test-batch-key-123", "host": GATEWAY}),
    )


class FakeModel:
    """The loopback server's handler: echoes ``{"echo": input}``; ``script`` may override answers per input.

    ``hang(body)``: the answer never comes (until the client gives up); ``on_call(body)``: runs as each request
    arrives, in the server's thread; ``gate``: the first ``gate`` requests are held until all of them are in flight.
    """

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.hosts: set[str] = set()
        self.paths: set[str] = set()
        self.script: Callable[[Any, int], httpx.Response | None] | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.hang: Callable[[Any], bool] = lambda _body: False
        self.on_call: Callable[[Any], None] | None = None
        self.status = "ACTIVE"  # what the management API reports for the deployment
        self.management: list[str] = []
        self.gate = 0
        self._gate_open: asyncio.Event | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append(body)
        self.hosts.add(request.headers["host"])
        self.paths.add(request.url.path)
        attempt = sum(1 for call in self.calls if call == body)
        if self.on_call:
            self.on_call(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._wait_for_gate()
            if self.hang(body):
                await asyncio.sleep(3600)  # cancelled by the test's kill
            if self.script is not None:
                scripted = self.script(body, attempt)
                if scripted is not None:
                    return scripted
            return httpx.Response(200, json={"echo": body})
        finally:
            self.in_flight -= 1

    async def _wait_for_gate(self) -> None:
        if len(self.calls) > self.gate:
            return
        self._gate_open = self._gate_open or asyncio.Event()
        if self.in_flight >= self.gate:
            self._gate_open.set()
        await self._gate_open.wait()

    def count(self) -> Counter:
        return Counter(json.dumps(call, sort_keys=True) for call in self.calls)


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeModel]:
    fake = FakeModel()
    server = LoopbackServer(fake)
    with server:
        monkeypatch.setenv(
            "AIRFLOW_CONN_BASETEN_DEFAULT",
            json.dumps({"conn_type": "baseten", "password": "sk-test-batch-key-123", "host": server.url}),
        )
        _management(monkeypatch, fake)
        yield fake


def _management(monkeypatch: pytest.MonkeyPatch, fake: FakeModel) -> None:

    def management(request: httpx.Request) -> httpx.Response:  # the sync status read before the first input
        fake.management.append(f"{request.method} {request.url.path}")
        if request.method == "POST":  # activate
            return httpx.Response(200, json={"success": True})
        record = {"id": "dep1", "status": fake.status, "active_replica_count": 1, "chainlets": []}
        if "/chains/" in request.url.path:
            return httpx.Response(200, json={"name": "production", "current_deployment": record})
        return httpx.Response(200, json=record)

    monkeypatch.setattr(
        "airflow_provider_baseten.hooks.baseten.build_client",
        lambda settings, **_kwargs: build_client(settings, transport=httpx.MockTransport(management)),
    )


@pytest.fixture
def waits() -> list[float]:
    return []


def ti(try_number: int = 1, map_index: int = -1) -> mock.MagicMock:
    instance = mock.MagicMock(name="ti")
    instance.configure_mock(
        try_number=try_number, dag_id="dag", task_id="score", run_id="manual__2026-01-01T00:00:00+00:00"
    )
    instance.map_index = map_index
    return instance


def make_op(waits: list[float], tmp_path: Path, **kwargs: Any) -> BasetenBatchPredictOperator:
    kwargs.setdefault("task_id", "score")
    if "chain_id" not in kwargs:
        kwargs.setdefault("model_id", "abc123")
    kwargs.setdefault("output_path", str(tmp_path / "out.jsonl"))
    op = BasetenBatchPredictOperator(**kwargs)

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)

    op.hook = BasetenHook(customer_request_id="", async_sleep=no_sleep)
    return op


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def indices(lines: list[dict[str, Any]]) -> list[int]:
    return sorted(line["index"] for line in lines)


# --- parameters ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of inputs"),
        ({"inputs": [1], "input_path": "/x.jsonl"}, "exactly one of inputs"),
        ({"inputs": (1, 2)}, "must be a list"),
        ({"inputs": [1], "max_concurrency": 0}, "max_concurrency"),
        ({"inputs": [1], "max_concurrency": True}, "max_concurrency"),
        ({"inputs": [1], "max_failed_fraction": 1.5}, "max_failed_fraction"),
        ({"inputs": [1], "max_failed_fraction": "0.1"}, "max_failed_fraction"),
        ({"inputs": [1], "progress_interval": -1}, "progress_interval"),
        ({"inputs": [1], "kill_grace_period": "soon"}, "kill_grace_period"),
        ({"inputs": [1], "timeout": 0}, "timeout"),
        ({"inputs": [1], "id_field": ""}, "id_field"),
        ({"inputs": [1], "model_id": "not valid!"}, "model_id"),
    ],
)
def test_invalid_literal_arguments_fail_at_parse_time(kwargs: dict[str, Any], message: str) -> None:
    kwargs.setdefault("model_id", "abc123")
    with pytest.raises(BasetenConfigError, match=message):
        BasetenBatchPredictOperator(task_id="score", **kwargs)


def test_template_fields_and_renderers() -> None:
    fields = set(BasetenBatchPredictOperator.template_fields)
    assert {"baseten_conn_id", "model_id", "chain_id", "inputs", "input_path", "output_path"} <= fields
    assert BasetenBatchPredictOperator.template_fields_renderers["inputs"] == "json"


def test_templated_inputs_and_output_path_render(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    op = make_op(
        waits,
        tmp_path,
        inputs=[{"text": "{{ params.word }}"}, {"text": "plain"}],
        output_path=str(tmp_path / "{{ params.name }}.jsonl"),
    )
    op.render_template_fields({"params": {"word": "rendered", "name": "scored"}})
    manifest = op.execute({"ti": ti()})
    assert manifest["output_path"] == (tmp_path / "scored.jsonl").as_uri()
    assert sorted(call["text"] for call in model.calls) == ["plain", "rendered"]


@pytest.mark.parametrize("rendered", ['[{"a": 1}, {"a": 2}]', "[{'a': 1}, {'a': 2}]"])
def test_inputs_rendered_to_a_string_are_parsed(
    model: FakeModel, waits: list[float], tmp_path: Path, rendered: str
) -> None:
    op = make_op(waits, tmp_path, inputs="{{ ti.xcom_pull('x') }}")
    op.inputs = rendered
    assert op.execute({"ti": ti()})["succeeded"] == 2


def test_inputs_rendered_to_garbage_fail_before_sending(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    op = make_op(waits, tmp_path, inputs="{{ x }}")
    op.inputs = "not a list"
    with pytest.raises(BasetenConfigError, match="inputs"):
        op.execute({"ti": ti()})
    assert model.calls == []


# --- the happy path -------------------------------------------------------------------------------------------------


def test_every_input_is_predicted_once_and_written(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    inputs = [{"n": n} for n in range(50)]
    manifest = make_op(waits, tmp_path, inputs=inputs, max_concurrency=8).execute({"ti": ti()})
    lines = read_lines(tmp_path / "out.jsonl")
    assert indices(lines) == list(range(50))
    assert all(line["output"] == {"echo": {"n": line["index"]}} for line in lines)
    assert all(line["input_id"] == line["index"] for line in lines)
    assert set(model.count().values()) == {1}
    assert model.hosts == {"model-abc123.api.baseten.co"}
    assert model.paths == {"/production/predict"}
    assert manifest["total"] == 50
    assert manifest["succeeded"] == 50
    assert manifest["failed"] == 0
    assert manifest["skipped_existing"] == 0
    assert manifest["output_path"] == (tmp_path / "out.jsonl").as_uri()
    assert set(manifest) == {"output_path", "parts", "total", "succeeded", "failed", "skipped_existing", "duration_s"}
    assert manifest["parts"] == [manifest["output_path"]]


@pytest.mark.parametrize(
    ("address", "key", "url"),
    [
        ({"model_id": "abc123"}, "_link_BasetenModelLink", "https://app.baseten.co/models/abc123/overview"),
        ({"chain_id": "chain01"}, "_link_BasetenChainLink", "https://app.baseten.co/chains/chain01/overview"),
    ],
)
def test_dashboard_link_is_published_while_running(
    model: FakeModel, waits: list[float], tmp_path: Path, address: dict, key: str, url: str
) -> None:
    instance = ti()
    make_op(waits, tmp_path, inputs=[1], **address).execute({"ti": instance})
    pushed = {call.kwargs["key"]: call.kwargs["value"] for call in instance.xcom_push.call_args_list}
    assert pushed[key] == url


def test_concurrency_is_bounded_and_reached(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    model.gate = 5  # the first five are held until all five are in flight: the bound is reached, never passed
    make_op(waits, tmp_path, inputs=list(range(40)), max_concurrency=5).execute({"ti": ti()})
    assert model.max_in_flight == 5


def test_chain_batches_use_run_remote(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    make_op(waits, tmp_path, chain_id="chain01", inputs=[{"text": "a"}]).execute({"ti": ti()})
    assert model.hosts == {"chain-chain01.api.baseten.co"}
    assert model.paths == {"/production/run_remote"}


def test_empty_inputs_succeed_with_an_empty_file(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    manifest = make_op(waits, tmp_path, inputs=[]).execute({"ti": ti()})
    assert manifest["total"] == 0
    assert (tmp_path / "out.jsonl").read_text() == ""


def test_jsonl_input_file_with_id_and_input_fields(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"id": "a", "input": {"text": "first"}}\n'
        "\n"
        '{"id": "b", "input": {"text": "second"}}\n'
        '{"input": {"text": "no id"}}\n'
        "this is not json\n"
    )
    op = make_op(waits, tmp_path, input_path=str(source), id_field="id", input_field="input", max_failed_fraction=1)
    manifest = op.execute({"ti": ti()})
    lines = {line["index"]: line for line in read_lines(tmp_path / "out.jsonl")}
    assert lines[0] | {"input_fp": None} == {
        "index": 0,
        "input_id": "a",
        "input_fp": None,
        "customer_request_id": "dag.score.manual__2026-01-01T00:00:00+00:00.-1.1:0",
        "output": {"echo": {"text": "first"}},
    }
    assert lines[1] | {"input_fp": None} == {
        "index": 1,
        "input_id": "b",
        "input_fp": None,
        "customer_request_id": "dag.score.manual__2026-01-01T00:00:00+00:00.-1.1:1",
        "output": {"echo": {"text": "second"}},
    }
    assert lines[2]["error"]["type"] == "InvalidInput"
    assert "no key 'id'" in lines[2]["error"]["message"]
    assert lines[2]["error"]["model_may_have_run"] is False
    assert lines[3]["error"]["type"] == "InvalidInput"
    assert "not valid JSON" in lines[3]["error"]["message"]
    assert sorted(call["text"] for call in model.calls) == ["first", "second"]  # bad records are never sent
    assert manifest == manifest | {"total": 4, "succeeded": 2, "failed": 2}


def test_input_file_given_as_file_uri(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("1\n2\n3\n")
    manifest = make_op(waits, tmp_path, input_path=source.as_uri()).execute({"ti": ti()})
    assert manifest["succeeded"] == 3


def test_missing_input_file_fails_clearly(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    with pytest.raises(BasetenConfigError, match="does not exist"):
        make_op(waits, tmp_path, input_path=str(tmp_path / "nope.jsonl")).execute({"ti": ti()})


def test_input_file_is_streamed_not_loaded(tmp_path: Path) -> None:
    source = tmp_path / "big.jsonl"
    record = json.dumps({"text": "x" * 200})
    with source.open("w") as handle:
        for _ in range(20_000):
            handle.write(record + "\n")
    reader = FileSource(source, None, None)
    assert reader.total == 20_000
    tracemalloc.start()
    count = sum(1 for _ in reader.items(skip=IndexSet()))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 20_000
    assert peak < source.stat().st_size / 10  # about 4 MB of input, well under 400 KB at peak


# --- per-item failures and retries -----------------------------------------------------------------------------------


def test_rate_limits_are_retried_per_item(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    def script(body: Any, attempt: int) -> httpx.Response | None:
        if body % 3 == 0 and attempt <= 2:
            status = 429 if body % 2 else 503
            refused = {"error": "busy", "error_code": "rate_limited" if status == 429 else "model_unavailable"}
            return httpx.Response(status, json=refused, headers={"retry-after": "1"})
        return None

    model.script = script
    manifest = make_op(waits, tmp_path, inputs=list(range(30))).execute({"ti": ti()})
    assert manifest["succeeded"] == 30
    assert indices(read_lines(tmp_path / "out.jsonl")) == list(range(30))
    assert len(model.calls) == 30 + 2 * 10
    assert waits
    assert min(waits) >= 1  # Retry-After honoured


def test_model_errors_are_written_and_decide_by_fraction(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    model.script = lambda body, _attempt: httpx.Response(500, json={"error": "boom"}) if body < 2 else None
    with pytest.raises(BasetenError, match=r"2 of 10 inputs failed \(20.0%\)"):
        make_op(waits, tmp_path, inputs=list(range(10))).execute({"ti": ti()})
    lines = {line["index"]: line for line in read_lines(tmp_path / "out.jsonl")}
    assert len(lines) == 10
    assert lines[0]["error"]["type"] == "BasetenModelError"
    assert lines[0]["error"]["status_code"] == 500
    assert lines[0]["error"]["model_may_have_run"] is True
    assert len(model.calls) == 10  # a 500 on a predict is not retried


def test_failures_within_the_fraction_succeed(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    model.script = lambda body, _attempt: httpx.Response(500, json={"error": "boom"}) if body < 2 else None
    manifest = make_op(waits, tmp_path, inputs=list(range(10)), max_failed_fraction=0.2).execute({"ti": ti()})
    assert (manifest["succeeded"], manifest["failed"]) == (8, 2)


def test_ambiguous_failure_is_written_never_retried(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    def script(body: Any, _attempt: int) -> httpx.Response | None:
        if body == 4:
            raise httpx.ReadError("reset after the request reached the model")  # the server drops the connection
        return None

    model.script = script
    manifest = make_op(waits, tmp_path, inputs=list(range(8)), max_failed_fraction=0.5).execute({"ti": ti()})
    error = next(line for line in read_lines(tmp_path / "out.jsonl") if line["index"] == 4)["error"]
    assert error["type"] == "BasetenAmbiguousSubmitError"
    assert error["model_may_have_run"] is True
    assert model.count()["4"] == 1
    assert manifest["failed"] == 1


def test_auth_error_stops_the_batch_and_leaves_inputs_for_a_retry(
    model: FakeModel, waits: list[float], tmp_path: Path
) -> None:
    model.script = lambda _body, _attempt: httpx.Response(401, json={"error": "bad key"})
    with pytest.raises(BasetenAuthError):
        # the other in-flight predicts finish within the grace period (401s too) and are released, not written
        make_op(waits, tmp_path, inputs=list(range(100)), max_concurrency=4, kill_grace_period=30).execute({"ti": ti()})
    assert len(model.calls) <= 4
    assert read_lines(tmp_path / "out.jsonl") == []


@pytest.mark.parametrize(
    ("error", "may_have_run"),
    [
        (BasetenConfigError("bad"), False),
        (BasetenAuthError("x", status_code=401), False),
        (BasetenError("x"), True),
        (httpx.ConnectError("refused"), False),
        (httpx.ReadTimeout("slow"), True),
        (RuntimeError("?"), True),
    ],
)
def test_model_may_have_run(error: BaseException, may_have_run: bool) -> None:
    assert model_may_have_run(error) is may_have_run


@pytest.mark.parametrize(
    ("status", "error_code", "may_have_run"),
    [
        (429, None, False),
        (503, "model_unavailable", False),  # Baseten says it refused the request before the model
        (503, None, True),  # the model's own 503, passed through: it may have run
        (529, None, False),
        (500, None, True),
        (502, None, True),
    ],
)
def test_model_may_have_run_by_status(status: int, error_code: str | None, may_have_run: bool) -> None:
    from airflow_provider_baseten.exceptions import BasetenAPIError

    described = describe_error(BasetenAPIError("x", status_code=status, error_code=error_code, request_id="req1"))
    assert described["model_may_have_run"] is may_have_run
    assert described["request_id"] == "req1"


# --- resume ------------------------------------------------------------------------------------------------------


def fingerprint(record: Any, id_field: str | None = None, input_field: str | None = None) -> str:
    return next(ListSource([record], id_field, input_field).items()).fingerprint


def line(index: int, *, record: Any = None, **fields: Any) -> str:
    """An output line of an earlier try for the input ``record`` (default: the index itself, as in ``range``)."""
    input_fp = fingerprint(index if record is None else record)
    return json.dumps({"index": index, "input_id": index, "input_fp": input_fp, **fields}) + "\n"


def test_retry_resumes_and_repairs_a_torn_file(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(
        line(0, output={"echo": 0})
        + line(2, output={"echo": 2})
        + line(3, error={"type": "BasetenRateLimitError", "model_may_have_run": False})
        + line(4, error={"type": "BasetenAmbiguousSubmitError", "model_may_have_run": True})
        + line(1, output={"echo": 1})
        + '{"index": 5, "input_id": 5, "out'  # torn by a crash mid-write
    )
    manifest = make_op(waits, tmp_path, inputs=list(range(10)), max_failed_fraction=0.5).execute({"ti": ti(2)})
    assert sorted(model.calls) == [3, 5, 6, 7, 8, 9]  # never 0, 1, 2 (written) nor 4 (may have run)
    lines = read_lines(out)
    assert indices(lines) == list(range(10))  # each index exactly once
    assert next(x for x in lines if x["index"] == 3)["output"] == {"echo": 3}
    assert manifest["skipped_existing"] == 4
    assert (manifest["succeeded"], manifest["failed"], manifest["total"]) == (9, 1, 10)
    assert not (tmp_path / "out.jsonl.resume-tmp").exists()


def test_resume_keeps_a_complete_last_line_that_lost_its_newline(
    model: FakeModel, waits: list[float], tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(line(0, output={"echo": 0}) + line(1, output={"echo": 1}).rstrip("\n"))
    make_op(waits, tmp_path, inputs=list(range(4))).execute({"ti": ti(2)})
    assert sorted(model.calls) == [2, 3]
    assert indices(read_lines(out)) == [0, 1, 2, 3]


def test_resume_of_a_clean_file_only_appends(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    prefix = line(1, output={"echo": 1}) + line(0, output={"echo": 0})
    out.write_text(prefix)
    inode = out.stat().st_ino
    make_op(waits, tmp_path, inputs=list(range(3))).execute({"ti": ti(3)})
    assert out.read_text().startswith(prefix)
    assert out.stat().st_ino == inode
    assert model.calls == [2]


def test_first_try_replaces_an_old_file(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(line(0, output="stale") + "garbage\n")
    make_op(waits, tmp_path, inputs=[0, 1]).execute({"ti": ti(1)})
    assert sorted(model.calls) == [0, 1]
    assert indices(read_lines(out)) == [0, 1]


def test_a_corrupt_middle_line_refuses_to_resume(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(line(0, output=0) + "not a result\n" + line(1, output=1))
    with pytest.raises(BasetenError, match=r"Line 2 .* is not a batch result"):
        make_op(waits, tmp_path, inputs=[0, 1, 2]).execute({"ti": ti(2)})
    assert model.calls == []


# --- progress, kill, write errors -----------------------------------------------------------------------------------


def test_progress_is_logged_with_the_injected_clock(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    ticks = itertools.count(step=1.0)  # every clock read advances one "second"
    op = make_op(waits, tmp_path, inputs=list(range(60)), max_concurrency=4, progress_interval=10)
    op._clock = lambda: float(next(ticks))
    with mock.patch.object(BasetenBatchPredictOperator, "log", new_callable=mock.PropertyMock) as log:
        op.execute({"ti": ti()})
    messages = [call.args[0] % call.args[1:] for call in log.return_value.info.call_args_list]
    progress = [m for m in messages if m.startswith("Batch progress")]
    assert len(progress) >= 3
    assert "/60 done (0 failed" in progress[0]
    assert "predicts/s, ETA " in progress[0]
    assert any(m.startswith("Batch finished: 60/60 done") for m in messages)


def test_progress_is_logged_while_nothing_completes(waits: list[float], tmp_path: Path) -> None:
    slept: list[float] = []
    op = make_op(waits, tmp_path, inputs=[1], progress_interval=10)
    now = [0.0]
    op._clock = lambda: now[0]
    loop = SendLoop(
        op, mock.Mock(progress_format="%s" * 8, progress_extra=lambda: ()), RunState(existing=Existing(), total=1)
    )

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds
        if len(slept) == 3:
            raise asyncio.CancelledError

    op._sleep = fake_sleep
    with mock.patch.object(BasetenBatchPredictOperator, "log", new_callable=mock.PropertyMock) as log:
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(loop.report())
    assert slept == [10, 10, 10]
    assert log.return_value.info.call_count == 2  # after the 1st and 2nd wait (the 3rd was cancelled)


def test_on_kill_stops_writes_in_flight_as_ambiguous_and_a_retry_finishes(
    model: FakeModel, waits: list[float], tmp_path: Path
) -> None:
    op = make_op(
        waits, tmp_path, inputs=list(range(40)), max_concurrency=4, kill_grace_period=0, max_failed_fraction=0.1
    )
    hanging = True
    model.hang = lambda body: hanging and body >= 7  # 7, 8, 9, 10 hang (all four workers) until the kill

    def kill_when_all_hang(_body: Any) -> None:
        if len(model.calls) == 11:
            op.on_kill()  # from another thread, as Airflow's task runner calls it

    model.on_call = kill_when_all_hang
    with pytest.raises(BasetenError, match="killed"):
        op.execute({"ti": ti(1)})
    first = read_lines(tmp_path / "out.jsonl")
    cancelled = sorted(x["index"] for x in first if "error" in x)
    assert cancelled == [7, 8, 9, 10]  # in flight at the kill: written as errors that may have run
    assert all(x["error"]["type"] == "Cancelled" and x["error"]["model_may_have_run"] for x in first if "error" in x)
    assert len(model.calls) == 11

    model.on_call = None
    hanging = False
    sent_before = Counter(model.calls)
    manifest = op.execute({"ti": ti(2)})
    lines = read_lines(tmp_path / "out.jsonl")
    assert indices(lines) == list(range(40))
    assert manifest["skipped_existing"] == len(first)
    resent = Counter(model.calls) - sent_before
    assert not set(resent) & {x["index"] for x in first}  # nothing written before was predicted again


def test_on_kill_lets_in_flight_predicts_finish_within_the_grace_period(
    model: FakeModel, waits: list[float], tmp_path: Path
) -> None:
    op = make_op(waits, tmp_path, inputs=list(range(20)), max_concurrency=4, kill_grace_period=30)
    released: list[bool] = []

    async def grace(seconds: float) -> None:
        released.append(True)
        await asyncio.sleep(3600)  # the in-flight predicts finish first

    op._sleep = grace

    def kill_after_six(_body: Any) -> None:
        if len(model.calls) == 6:
            op.on_kill()

    model.on_call = kill_after_six
    with pytest.raises(BasetenError, match="killed"):
        op.execute({"ti": ti(1)})
    lines = read_lines(tmp_path / "out.jsonl")
    assert released
    assert all("output" in x for x in lines)  # in-flight predicts completed and were written
    assert len(lines) == len(model.calls)


def test_a_write_error_fails_the_task(
    model: FakeModel, waits: list[float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any, data: bytes) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(LocalSink, "write", broken)
    with pytest.raises(BasetenError, match="Writing the results"):
        make_op(waits, tmp_path, inputs=list(range(10))).execute({"ti": ti()})


def test_lines_are_written_as_they_complete(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    seen: list[int] = []
    model.on_call = lambda _body: seen.append(len(out.read_text().splitlines()) if out.exists() else 0)
    make_op(waits, tmp_path, inputs=list(range(12)), max_concurrency=2).execute({"ti": ti()})
    assert seen[-1] >= 8  # by the last request most earlier results were already on disk


def test_an_fsync_error_fails_the_task(
    model: FakeModel, waits: list[float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any) -> None:
        raise OSError("I/O error")

    monkeypatch.setattr(LocalSink, "sync", broken)
    ticks = itertools.count(step=5.0)
    op = make_op(waits, tmp_path, inputs=list(range(10)))
    op._clock = lambda: float(next(ticks))
    with pytest.raises(BasetenError, match="Writing the results"):
        op.execute({"ti": ti()})


def test_object_store_input_counts_its_total_while_streaming(
    model: FakeModel, waits: list[float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    source = tmp_path / "in.jsonl"
    source.write_text("".join(f"{n}\n" for n in range(7)))
    (tmp_path / "out.jsonl").write_text(line(5, output=5) + line(6, output=6))
    real_as_path = batch_module.as_path
    monkeypatch.setattr(
        batch_module,
        "as_path",
        lambda value: ObjectStoragePath(source.as_uri()) if str(value).endswith("in.jsonl") else real_as_path(value),
    )
    manifest = make_op(waits, tmp_path, input_path=str(source)).execute({"ti": ti(2)})
    assert sorted(model.calls) == [0, 1, 2, 3, 4]
    assert manifest["total"] == 7
    assert manifest["skipped_existing"] == 2


def test_importing_the_operator_loads_no_http_stack() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import airflow_provider_baseten.operators.batch\n"
        "heavy = [m for m in ('httpx_aiohttp', 'aiohttp', 'airflow_provider_baseten.hooks.baseten',"
        " 'airflow_provider_baseten.emulator') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_outside_a_task_instance_a_run_starts_fresh(model: FakeModel, waits: list[float], tmp_path: Path) -> None:
    (tmp_path / "out.jsonl").write_text(line(0, output="stale"))
    manifest = make_op(waits, tmp_path, inputs=[0, 1]).execute({})
    assert sorted(model.calls) == [0, 1]
    assert manifest["skipped_existing"] == 0


def test_outside_a_task_instance_output_path_is_required(waits: list[float], tmp_path: Path) -> None:
    with pytest.raises(BasetenConfigError, match="output_path"):
        make_op(waits, tmp_path, inputs=[0], output_path=None).execute({})


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ({"index": 0, "output": [0.5, 1e-05, "é"]}, '{"index":0,"output":[0.5,0.00001,"é"]}\n'),
        ({"index": 0, "output": float("nan")}, '{"index":0,"output":NaN}\n'),  # as json.dumps wrote it, not null
        ({"index": 0, "output": 2**70}, '{"index":0,"output":1180591620717411303424}\n'),
        ({"index": 0, "output": {1: None}}, '{"index":0,"output":{"1":null}}\n'),
    ],
)
def test_journal_lines_read_back_as_json_dumps_wrote_them(line: dict[str, Any], expected: str) -> None:
    from airflow_provider_baseten.operators._batch_journal import encode_line

    assert encode_line(line) == expected

"""Rerank and classify ``execute`` against a fake BEI on a loopback server: outputs, options, resume, stops."""

from __future__ import annotations

import asyncio
import json
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest

from airflow_provider_baseten.exceptions import BasetenAuthError, BasetenConfigError, BasetenError
from airflow_provider_baseten.hooks.baseten import BasetenHook
from airflow_provider_baseten.hooks.clients import build_client
from airflow_provider_baseten.operators.links import BasetenModelLink
from airflow_provider_baseten.operators.scoring import BasetenClassifyOperator, BasetenRerankOperator

from .loopback import LoopbackServer


def score_of(query: str, text: str) -> float:
    """A deterministic score: the share of the query's words in the text."""
    wanted = set(query.split())
    return len(wanted & set(text.split())) / len(wanted)


class FakeBEI:
    """``/sync/rerank`` and ``/sync/predict`` of a BEI deployment; ``fail(texts)`` may answer instead, ``hang``
    holds a request, ``on_call`` runs on each one (in the server's thread)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.request_ids: list[str | None] = []
        self.fail: Callable[[list[str]], httpx.Response | None] = lambda _texts: None
        self.hang: Callable[[list[str]], bool] = lambda _texts: False
        self.on_call: Callable[[list[str]], None] | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        rerank = request.url.path.endswith("/rerank")
        texts = body["texts"] if rerank else [item[0] for item in body["inputs"]]
        self.calls.append(texts)
        self.bodies.append(body)
        self.paths.append(request.url.path)
        self.request_ids.append(request.headers.get("x-baseten-customer-request-id"))
        if self.on_call is not None:
            self.on_call(texts)
        if self.hang(texts):
            await asyncio.sleep(3600)
        answer = self.fail(texts)
        if answer is not None:
            return answer
        if rerank:
            results = [{"index": i, "score": score_of(body["query"], t)} for i, t in enumerate(texts)]
            if body.get("return_text"):
                for result in results:
                    result["text"] = texts[result["index"]]
            return httpx.Response(200, json=sorted(results, key=lambda r: -r["score"]))
        labels = [[{"label": "long" if len(t) > 6 else "short", "score": 0.9}] for t in texts]
        return httpx.Response(200, json=labels)

    def sent(self) -> list[str]:
        return [text for call in self.calls for text in call]


@pytest.fixture
def bei(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBEI]:
    fake = FakeBEI()
    with LoopbackServer(fake) as server:
        monkeypatch.setenv(
            "AIRFLOW_CONN_BASETEN_DEFAULT",
            json.dumps({"conn_type": "baseten", "password": "sk-test-score-key-1", "host": server.url}),
        )

        def management(request: httpx.Request) -> httpx.Response:  # the status read before the first request
            return httpx.Response(200, json={"id": "dep1", "status": "ACTIVE", "active_replica_count": 1})

        monkeypatch.setattr(
            "airflow_provider_baseten.hooks.baseten.build_client",
            lambda settings, **_kwargs: build_client(settings, transport=httpx.MockTransport(management)),
        )
        yield fake


def ti(try_number: int = 1) -> mock.MagicMock:
    instance = mock.MagicMock(name="ti")
    instance.configure_mock(try_number=try_number, dag_id="dag", task_id="score", run_id="manual__1")
    instance.map_index = -1
    return instance


def no_wait(op: Any) -> Any:
    async def no_sleep(_seconds: float) -> None:
        return None

    op.hook = BasetenHook(customer_request_id="", async_sleep=no_sleep)
    return op


def rerank(tmp_path: Path, **kwargs: Any) -> BasetenRerankOperator:
    kwargs = {"task_id": "score", "model_id": "bei123", "query": "red fox", "output_path": str(tmp_path / "out.jsonl"),
              **kwargs}  # fmt: skip
    return no_wait(BasetenRerankOperator(**kwargs))


def classify(tmp_path: Path, **kwargs: Any) -> BasetenClassifyOperator:
    kwargs = {"task_id": "score", "model_id": "bei123", "output_path": str(tmp_path / "out.jsonl"), **kwargs}
    return no_wait(BasetenClassifyOperator(**kwargs))


def read_lines(path: Path) -> list[dict[str, Any]]:
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda line: line["index"])


TEXTS = [f"doc {n} {'red fox' if n % 3 == 0 else 'blue bird'}" for n in range(10)]


# --- what a run writes ------------------------------------------------------------------------------------------


def test_rerank_writes_one_score_per_candidate_packed_and_traced(bei: FakeBEI, tmp_path: Path) -> None:
    manifest = rerank(tmp_path, texts=TEXTS, batch_size=4, max_concurrency=1).execute({"ti": ti()})
    assert bei.calls == [TEXTS[0:4], TEXTS[4:8], TEXTS[8:10]]
    assert all(path.endswith("/sync/rerank") for path in bei.paths)
    assert bei.bodies[0]["query"] == "red fox"
    assert bei.request_ids == [f"dag.score.manual__1.-1.1:{key}" for key in ("0+4", "4+4", "8+2")]
    lines = read_lines(tmp_path / "out.jsonl")
    assert [(line["index"], line["id"], line["score"]) for line in lines] == [
        (n, n, score_of("red fox", text)) for n, text in enumerate(TEXTS)
    ]
    assert all("text" not in line for line in lines)
    assert {k: manifest[k] for k in ("total", "succeeded", "failed", "skipped_existing", "requests")} == {
        "total": 10, "succeeded": 10, "failed": 0, "skipped_existing": 0, "requests": 3,
    }  # fmt: skip
    assert manifest["output_path"] == (tmp_path / "out.jsonl").as_uri()


def test_rerank_options_reach_the_body_and_return_text_is_written(bei: FakeBEI, tmp_path: Path) -> None:
    op = rerank(tmp_path, texts=["red fox"], return_text=True, raw_scores=True, truncate=True,
                truncation_direction="Left", model="m")  # fmt: skip
    op.execute({})
    body = bei.bodies[0]
    assert (body["return_text"], body["raw_scores"], body["truncate"], body["truncation_direction"], body["model"]) == (
        True, True, True, "Left", "m",
    )  # fmt: skip
    assert read_lines(tmp_path / "out.jsonl")[0]["text"] == "red fox"


def test_classify_reads_a_file_with_id_and_text_fields_and_writes_labels(bei: FakeBEI, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    records = [{"key": f"k{n}", "body": "x" * (n + 3)} for n in range(6)]
    source.write_text("".join(json.dumps(record) + "\n" for record in records))
    op = classify(tmp_path, input_path=str(source), text_field="body", id_field="key", batch_size=4)
    manifest = op.execute({})
    assert all(path.endswith("/sync/predict") for path in bei.paths)
    assert bei.bodies[0]["inputs"][0] == ["xxx"]
    lines = read_lines(tmp_path / "out.jsonl")
    assert [line["id"] for line in lines] == [f"k{n}" for n in range(6)]
    assert [line["labels"][0]["label"] for line in lines] == ["short"] * 4 + ["long"] * 2
    assert manifest["succeeded"] == 6


def test_invalid_records_are_error_lines_never_sent_and_count_against_max_failed_fraction(
    bei: FakeBEI, tmp_path: Path
) -> None:
    texts = ["good one", "", {"text": 3}, "fine two"]
    with pytest.raises(BasetenError, match=r"2 of 4 texts failed \(50.0%\)"):
        classify(tmp_path, texts=texts).execute({})
    assert bei.sent() == ["good one", "fine two"]
    manifest = classify(tmp_path, texts=texts, max_failed_fraction=0.5).execute({})
    assert (manifest["succeeded"], manifest["failed"]) == (2, 2)
    assert ["error" in line for line in read_lines(tmp_path / "out.jsonl")] == [False, True, True, False]


def test_default_output_path_is_under_the_output_location(
    bei: FakeBEI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__BASETEN__OUTPUT_LOCATION", str(tmp_path / "lake"))
    op = no_wait(BasetenRerankOperator(task_id="score", model_id="bei123", query="red fox", texts=["red"]))
    with mock.patch.object(BasetenModelLink, "persist") as persist:
        manifest = op.execute({"ti": ti()})
    expected = tmp_path / "lake" / "baseten-scores" / "dag" / "manual__1" / "score.jsonl"
    assert manifest["output_path"] == expected.as_uri()
    assert len(read_lines(expected)) == 1
    persist.assert_called_once()


# --- retries, stops and re-runs -------------------------------------------------------------------------------------


def test_503_and_timeouts_alike_are_retried_and_every_candidate_written_once(bei: FakeBEI, tmp_path: Path) -> None:
    seen: dict[str, int] = {}

    def flaky(texts: list[str]) -> httpx.Response | None:
        seen[texts[0]] = seen.get(texts[0], 0) + 1
        return httpx.Response(503, json={"error": "busy"}) if seen[texts[0]] == 1 else None

    bei.fail = flaky
    manifest = rerank(tmp_path, texts=TEXTS, batch_size=2).execute({})
    assert manifest["succeeded"] == 10
    assert len(bei.calls) == 10  # 5 packs, each sent twice
    assert [line["index"] for line in read_lines(tmp_path / "out.jsonl")] == list(range(10))


def test_a_retry_sends_only_what_is_missing_or_never_reached_the_model(bei: FakeBEI, tmp_path: Path) -> None:
    def fail(texts: list[str]) -> httpx.Response | None:
        if TEXTS[0] in texts:
            return httpx.Response(429, json={"error": "slow down"})  # never ran: sent again by the retry
        if TEXTS[3] in texts:
            return httpx.Response(400, json={"error": "too long"})  # reached the model: kept as an error
        return None

    bei.fail = fail
    rerank(tmp_path, texts=TEXTS, batch_size=3, max_concurrency=1, max_failed_fraction=1.0).execute({"ti": ti(1)})
    bei.calls.clear()
    bei.fail = lambda _texts: None
    manifest = rerank(tmp_path, texts=TEXTS, batch_size=3, max_failed_fraction=1.0).execute({"ti": ti(2)})
    assert bei.calls == [TEXTS[0:3]]
    assert (manifest["skipped_existing"], manifest["succeeded"], manifest["failed"]) == (7, 7, 3)
    assert [line["index"] for line in read_lines(tmp_path / "out.jsonl")] == list(range(10))


def test_a_changed_query_re_scores_everything_and_on_rerun_fail_refuses(bei: FakeBEI, tmp_path: Path) -> None:
    rerank(tmp_path, texts=TEXTS).execute({"ti": ti(1)})
    bei.calls.clear()
    with pytest.raises(BasetenConfigError, match="on_rerun='fail'"):
        rerank(tmp_path, texts=TEXTS, query="blue bird", on_rerun="fail").execute({"ti": ti(2)})
    assert bei.calls == []
    rerank(tmp_path, texts=TEXTS, query="blue bird").execute({"ti": ti(2)})
    assert sorted(bei.sent()) == sorted(TEXTS)
    assert [line["score"] for line in read_lines(tmp_path / "out.jsonl")] == [score_of("blue bird", t) for t in TEXTS]


def test_on_rerun_replace_and_a_first_try_start_over(bei: FakeBEI, tmp_path: Path) -> None:
    classify(tmp_path, texts=TEXTS).execute({"ti": ti(1)})
    for on_rerun, try_number in (("resume", 1), ("replace", 2)):
        bei.calls.clear()
        classify(tmp_path, texts=TEXTS, on_rerun=on_rerun).execute({"ti": ti(try_number)})
        assert sorted(bei.sent()) == sorted(TEXTS)
        assert len(read_lines(tmp_path / "out.jsonl")) == 10


def test_a_killed_try_leaves_in_flight_packs_to_the_retry_and_resends_no_written_one(
    bei: FakeBEI, tmp_path: Path
) -> None:
    texts = [f"t{n}" for n in range(12)]
    bei.hang = lambda batch: "t6" in batch
    op = rerank(tmp_path, texts=texts, batch_size=2, max_concurrency=1, kill_grace_period=0)
    bei.on_call = lambda batch: op.on_kill() if "t6" in batch else None  # from the server's thread
    with pytest.raises(BasetenError, match="rerank stopped early"):
        op.execute({"ti": ti(1)})
    assert {line["index"] for line in read_lines(tmp_path / "out.jsonl")} == set(range(6))
    assert (tmp_path / "out.jsonl.inflight").exists()
    bei.calls.clear()
    bei.hang, bei.on_call = (lambda _batch: False), None
    manifest = rerank(tmp_path, texts=texts, batch_size=2).execute({"ti": ti(2)})
    assert sorted(bei.sent()) == sorted(texts[6:])
    assert (manifest["succeeded"], manifest["skipped_existing"]) == (12, 6)
    assert not (tmp_path / "out.jsonl.inflight").exists()


def test_a_sigkilled_try_s_intents_are_sent_again(bei: FakeBEI, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    classify(tmp_path, texts=TEXTS[:4]).execute({"ti": ti(1)})
    fingerprints = {line["index"]: line["input_fp"] for line in read_lines(out)}
    # as a SIGKILL mid-request leaves it: indices 2 and 3 intended, no line written, no release recorded
    out.write_text("".join(line + "\n" for line in out.read_text().splitlines() if json.loads(line)["index"] < 2))
    intents = [{"index": n, "id": n, "input_fp": fingerprints[n]} for n in (2, 3)]
    (tmp_path / "out.jsonl.inflight").write_text("".join(json.dumps(i) + "\n" for i in intents))
    bei.calls.clear()
    assert classify(tmp_path, texts=TEXTS[:4]).execute({"ti": ti(2)})["succeeded"] == 4
    assert bei.sent() == TEXTS[2:4]
    assert not (tmp_path / "out.jsonl.inflight").exists()


def test_authentication_errors_stop_at_once(bei: FakeBEI, tmp_path: Path) -> None:
    bei.fail = lambda _texts: httpx.Response(401, json={"error": "bad key"})
    with pytest.raises(BasetenAuthError):
        classify(tmp_path, texts=TEXTS * 10, batch_size=2, max_concurrency=2).execute({})
    assert len(bei.calls) <= 2


def test_a_templated_query_is_checked_after_rendering(bei: FakeBEI, tmp_path: Path) -> None:
    op = rerank(tmp_path, texts=["a"])
    op.query = ""  # as a template rendering to nothing leaves it
    with pytest.raises(BasetenConfigError, match="query must render"):
        op.execute({})
    assert bei.calls == []


# --- declarations ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("operator", [BasetenRerankOperator, BasetenClassifyOperator])
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
    source = tmp_path / "in.csv"
    kwargs = {"query": "q"} if operator is BasetenRerankOperator else {}
    op = operator(task_id="score", model_id="x", input_path=str(source), **kwargs)
    assert op.get_openlineage_facets_on_complete(ti()) == {
        "inputs": [("file", str(source))],
        "outputs": [("s3://lake", "out/baseten-scores/dag/manual__1/score.jsonl")],
    }


@pytest.mark.parametrize(("kwargs", "message"), [({"on_rerun": "again"}, "on_rerun"), ({"part_size": 0}, "part_size"),
                                                 ({"part_interval": 0}, "part_interval")])  # fmt: skip
def test_resume_parameters_are_checked_at_parse_time(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(BasetenConfigError, match=message):
        BasetenClassifyOperator(task_id="c", model_id="x", texts=["a"], **kwargs)


def test_templated_fields_and_links() -> None:
    op = BasetenClassifyOperator(task_id="c", model_id="x", texts=["a"])
    assert {"texts", "input_path", "output_path", "model_id", "baseten_conn_id"} <= set(op.template_fields)
    assert "query" in BasetenRerankOperator.template_fields
    assert [type(link) for link in op.operator_extra_links] == [BasetenModelLink]

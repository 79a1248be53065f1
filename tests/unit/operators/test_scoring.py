"""Rerank and classify: parameters, request bodies through the jobs, answers -> lines, and the resume salt."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_baseten.exceptions import BasetenConfigError, BasetenModelError
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.baseten import BasetenHook
from airflow_provider_baseten.hooks.engine_models import ClassifyLabel, RerankResult
from airflow_provider_baseten.operators.scoring import (
    BasetenClassifyOperator,
    BasetenRerankOperator,
    ClassifyJob,
    RerankJob,
    classify_lines,
    rerank_lines,
)

MODEL = Target.of(model_id="abc123")


class FakeSender:
    """Records what a job sends; answers ``answer`` (decoded as the hot path's ``result`` would)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.sent: list[tuple[Any, dict[str, Any], dict[str, str]]] = []

    async def request(self, call: Any, body: bytes, *, headers: dict[str, str]) -> bytes:
        self.sent.append((call, json.loads(body), headers))
        return json.dumps(self.answer).encode()

    def result(self, reply: bytes, call: Any) -> Any:
        return SimpleNamespace(data=json.loads(reply))


def unit(texts: list[str], first: int = 0) -> Any:
    lines = [{"index": first + k, "id": f"d{first + k}", "input_fp": "fp"} for k in range(len(texts))]
    return SimpleNamespace(key=first, lines=lines, payload=texts)


def rerank_op(**kwargs: Any) -> BasetenRerankOperator:
    return BasetenRerankOperator(**{"task_id": "r", "model_id": "abc123", "query": "q", "texts": ["a"], **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"texts": None}, "exactly one of texts"),
        ({"input_path": "in.jsonl"}, "exactly one of texts"),
        ({"texts": ("a",)}, "must be a list"),
        ({"query": ""}, "query must be"),
        ({"batch_size": 0}, "batch_size must be a positive"),
        ({"batch_size": 1025}, "at most 1024"),
        ({"max_concurrency": True}, "max_concurrency"),
        ({"raw_scores": "yes"}, "raw_scores must be True or False"),
        ({"truncate": 1}, "truncate must be True or False"),
        ({"return_text": None}, "return_text must be"),
        ({"truncation_direction": "right"}, "truncation_direction"),
        ({"max_failed_fraction": 2}, "max_failed_fraction"),
        ({"text_field": ""}, "text_field"),
    ],
)
def test_bad_parameters_fail_at_parse_time(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(BasetenConfigError, match=message):
        rerank_op(**kwargs)


def test_query_is_templated_and_a_literal_output_path_is_an_outlet(tmp_path: Any) -> None:
    op = rerank_op(output_path=str(tmp_path / "scores.jsonl"))
    assert "query" in op.template_fields
    assert "texts" in op.template_fields
    assert [asset.uri for asset in op.outlets][-1].endswith("scores.jsonl")


def test_rerank_job_sends_the_performance_client_body_and_writes_one_score_per_candidate() -> None:
    op = rerank_op(return_text=True, truncate=True, model="m")
    sender = FakeSender([{"index": 1, "score": 0.9, "text": "y"}, {"index": 0, "score": 0.1, "text": "x"}])
    job = RerankJob(BasetenHook, MODEL, op._packer(op._source()), "dag.task", "q", op.options())  # type: ignore[arg-type]
    lines = asyncio.run(job.send(sender, unit(["x", "y"], first=5)))  # type: ignore[arg-type]
    call, body, headers = sender.sent[0]
    assert "rerank" in repr(call.endpoint)
    assert body == {"query": "q", "raw_scores": False, "return_text": True, "texts": ["x", "y"], "truncate": True,
                    "truncation_direction": "Right", "model": "m"}  # fmt: skip
    assert headers == {"x-baseten-customer-request-id": "dag.task:5+2"}
    assert lines == [
        {"index": 5, "id": "d5", "input_fp": "fp", "score": 0.1, "text": "x"},
        {"index": 6, "id": "d6", "input_fp": "fp", "score": 0.9, "text": "y"},
    ]


def test_classify_job_sends_one_input_list_per_text_and_writes_their_labels() -> None:
    op = BasetenClassifyOperator(task_id="c", model_id="abc123", texts=["good", "bad"], raw_scores=True)
    answer = [[{"label": "pos", "score": 0.8}, {"label": "neg", "score": 0.2}], [{"label": "neg", "score": 0.7}]]
    sender = FakeSender(answer)
    job = ClassifyJob(BasetenHook, MODEL, op._packer(op._source()), "p", op.options())  # type: ignore[arg-type]
    lines = asyncio.run(job.send(sender, unit(["good", "bad"])))  # type: ignore[arg-type]
    call, body, _ = sender.sent[0]
    assert "predict" in repr(call.endpoint)
    assert body == {"inputs": [["good"], ["bad"]], "raw_scores": True, "truncate": False,
                    "truncation_direction": "Right"}  # fmt: skip
    assert [line["labels"] for line in lines] == answer


def test_classify_answer_with_too_few_label_lists_fails_the_pack() -> None:
    op = BasetenClassifyOperator(task_id="c", model_id="abc123", texts=["good", "bad"])
    job = ClassifyJob(BasetenHook, MODEL, op._packer(op._source()), "p", op.options())  # type: ignore[arg-type]
    with pytest.raises(BasetenModelError):
        asyncio.run(job.send(FakeSender([[{"label": "pos", "score": 1.0}]]), unit(["good", "bad"])))  # type: ignore[arg-type]


def test_rerank_lines_without_text_and_a_missing_candidate_is_an_error_line() -> None:
    lines = rerank_lines(unit(["x", "y"]).lines, [RerankResult(index=1, score=0.5)], return_text=False)
    assert lines[1] == {"index": 1, "id": "d1", "input_fp": "fp", "score": 0.5}
    assert "score" not in lines[0]
    assert lines[0]["error"]["model_may_have_run"] is True


def test_classify_lines_keep_label_order() -> None:
    labels = [[ClassifyLabel(label="b", score=0.6), ClassifyLabel(label="a", score=0.4)]]
    assert classify_lines(unit(["t"]).lines, labels)[0]["labels"] == [
        {"label": "b", "score": 0.6},
        {"label": "a", "score": 0.4},
    ]


def test_packing_is_bounded_by_batch_size_and_characters_and_skips_invalid_records() -> None:
    op = rerank_op(texts=["aaaa", "", "bbbb", "cc", {"text": "d"}], batch_size=2, max_chars_per_request=6)
    job = RerankJob(BasetenHook, MODEL, op._packer(op._source()), "p", "q", op.options())  # type: ignore[arg-type]
    first, invalid = job.take()
    assert first is not None
    assert first.payload == ["aaaa"]  # "bbbb" would pass 6 characters
    assert [line["index"] for line in invalid] == [1]
    second, _ = job.take()
    assert second is not None
    assert second.payload == ["bbbb", "cc"]


def test_a_changed_query_or_option_changes_every_fingerprint() -> None:
    def fingerprints(**kwargs: Any) -> list[str]:
        return [fp for _, _, fp in rerank_op(texts=["x", "y"], **kwargs)._source().fingerprints()]

    base = fingerprints()
    assert fingerprints() == base
    for change in ({"query": "other"}, {"raw_scores": True}, {"truncate": True}, {"model": "m"}):
        assert set(fingerprints(**change)).isdisjoint(base), change


def test_take_gives_units_of_packed_intents_then_none() -> None:
    op = rerank_op(texts=["x", "", "y"], batch_size=2, id_field=None)
    job = RerankJob(BasetenHook, MODEL, op._packer(op._source()), "p", "q", op.options())  # type: ignore[arg-type]
    first, invalid = job.take()
    assert first is not None
    assert first.payload == ["x", "y"]
    assert [line["index"] for line in first.lines] == [0, 2]
    assert [line["index"] for line in invalid] == [1]
    assert job.take() == (None, [])


def test_a_bad_label_or_score_names_the_field_not_the_value() -> None:
    """The answer is validated in one pydantic call; a bad one still fails with the fields it got wrong."""
    classify_call = BasetenHook._classify_call(MODEL, ["a", "b"], {})
    with pytest.raises(BasetenModelError, match=r"not a valid ClassifyLabel \(check: label\)"):
        BasetenHook._labels_of([[{"label": "ok", "score": 1.0}], [{"label": 3, "score": 0.5}]], classify_call)
    rerank_call = BasetenHook._rerank_call(MODEL, "q", ["a", "b"], {})
    with pytest.raises(BasetenModelError, match=r"not a valid RerankResult \(check: score\)"):
        BasetenHook._rerank_of([{"index": 0, "score": 0.5}, {"index": 1, "score": "high"}], rerank_call)
    labels = BasetenHook._labels_of([[{"label": "pos", "score": 1}], []], classify_call)
    assert [[(label.label, label.score) for label in row] for row in labels] == [[("pos", 1.0)], []]

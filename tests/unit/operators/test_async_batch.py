"""BasetenAsyncBatchOperator: submit pacing (injected clock), the max_in_flight cap, the manifest (intents, outcomes,
resume, ambiguous submits, resubmit), status mapping into counts and success, kill, timeout and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from airflow.providers.common.compat.sdk import TaskDeferred
from airflow_testing import FakeClock, set_conn

from airflow_provider_baseten.exceptions import BasetenAsyncRequestError, BasetenConfigError, BasetenDeploymentError
from airflow_provider_baseten.operators._async_manifest import BasetenManifestError, Manifest
from airflow_provider_baseten.operators.async_batch import BasetenAsyncBatchOperator
from airflow_provider_baseten.triggers.async_batch import BasetenAsyncBatchTrigger

HOST = "https://model-abc123.api.baseten.co"
SUBMIT_URL = f"{HOST}/production/async_predict"


@pytest.fixture(autouse=True)
def _conn(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch)


class Submits:
    """Answers async_predict with fresh ids (or scripted statuses) and remembers each body's ``n``."""

    def __init__(self, script: dict[int, list[int]] | None = None) -> None:
        self.script = script or {}
        self.seen: list[int] = []
        self.accepted: list[int] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        n = json.loads(request.content)["model_input"]["n"]
        self.seen.append(n)
        planned = self.script.get(n)
        if planned:
            status = planned.pop(0)
            if status != 200:
                return httpx.Response(status, json={"error": "injected", "error_code": "injected"})
        self.accepted.append(n)
        return httpx.Response(201, json={"request_id": f"req{n:04d}"})


def make(tmp_path: Path, count: int = 5, **kwargs: Any) -> BasetenAsyncBatchOperator:
    defaults: dict[str, Any] = {
        "task_id": "batch",
        "model_id": "abc123",
        "inputs": [{"n": n} for n in range(count)],
        "manifest_location": str(tmp_path / "manifest"),
        "submit_concurrency": 1,
        "poll_interval": 5,
    }
    return BasetenAsyncBatchOperator(**{**defaults, **kwargs})


def deferred(op: BasetenAsyncBatchOperator, context: dict[str, Any] | None = None) -> BasetenAsyncBatchTrigger:
    with pytest.raises(TaskDeferred) as info:
        op.execute(context or {})
    trigger = info.value.trigger
    assert isinstance(trigger, BasetenAsyncBatchTrigger)
    return trigger


def loaded(tmp_path: Path) -> Manifest:
    return Manifest(str(tmp_path / "manifest")).load()


def statuses_of(manifest: Manifest) -> dict[int, str]:
    return {index: entry.status for index, entry in sorted(manifest.entries.items())}


def test_submits_are_paced_by_the_shared_bucket(api: respx.MockRouter, tmp_path: Path, clock: FakeClock) -> None:
    submits = Submits()
    api.post(SUBMIT_URL).mock(side_effect=submits)
    op = make(tmp_path, count=60, submit_rate=20)
    op._clock, op._sleep = clock.time, clock.sleep  # type: ignore[method-assign]
    start = clock.now
    deferred(op)
    assert sorted(submits.accepted) == list(range(60))
    burst = 20 / 5  # status_burst: a fifth of a second's budget
    assert clock.now - start == pytest.approx((60 - burst) / 20, abs=0.06)


@pytest.mark.parametrize("rate", [50, 190, 200])
def test_no_second_of_submits_exceeds_baseten_limit(tmp_path: Path, clock: FakeClock, rate: int) -> None:
    """The submit bucket's burst is cut so that rate + burst stays within Baseten's 200 req/s (at most one over)."""
    op = make(tmp_path, count=1, submit_rate=rate)
    op._clock, op._sleep = clock.time, clock.sleep  # type: ignore[method-assign]
    bucket = op._bucket()
    granted, start = 0, clock.now
    while clock.now < start + 1.0:
        bucket.acquire()
        granted += 1
    assert granted - 1 <= max(rate + 1, min(rate * 1.2, 200))  # the last grant is at or past the second's end


def test_max_in_flight_caps_the_submits_and_the_trigger_reports_capacity(api: respx.MockRouter, tmp_path: Path) -> None:
    submits = Submits()
    api.post(SUBMIT_URL).mock(side_effect=submits)
    trigger = deferred(make(tmp_path, count=10, max_in_flight=4))
    assert sorted(submits.accepted) == [0, 1, 2, 3]
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_baseten.triggers.baseten.BasetenAsyncBatchTrigger"
    assert kwargs["refill_below"] == 3
    assert kwargs["total"] == 10
    assert "req0" not in json.dumps(kwargs)  # the ids live in the manifest, never in the kwargs
    assert BasetenAsyncBatchTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_capacity_event_submits_the_next_inputs(api: respx.MockRouter, tmp_path: Path) -> None:
    submits = Submits()
    api.post(SUBMIT_URL).mock(side_effect=submits)
    op = make(tmp_path, count=6, max_in_flight=4)
    deferred(op)
    manifest = loaded(tmp_path)
    manifest.write(status(manifest, 0, "SUCCEEDED") + status(manifest, 1, "SUCCEEDED"))
    with pytest.raises(TaskDeferred):
        op.execute_complete({}, event={"status": "capacity", "manifest_uri": manifest.uri})
    assert sorted(submits.accepted) == [0, 1, 2, 3, 4, 5]


def status(manifest: Manifest, index: int, value: str) -> list[dict[str, Any]]:
    entry = manifest.entries[index]
    return [{"event": "status", "index": index, "attempt": entry.attempt, "request_id": entry.request_id,
             "status": value}]  # fmt: skip


def test_a_retry_waits_on_accepted_requests_without_resubmitting(api: respx.MockRouter, tmp_path: Path) -> None:
    submits = Submits()
    api.post(SUBMIT_URL).mock(side_effect=submits)
    deferred(make(tmp_path))
    trigger = deferred(make(tmp_path))  # the retry: a new operator object on the same manifest
    assert submits.seen == [0, 1, 2, 3, 4]
    assert trigger.total == 5


def test_an_intent_without_outcome_is_ambiguous_and_never_resent(api: respx.MockRouter, tmp_path: Path) -> None:
    submits = Submits()
    api.post(SUBMIT_URL).mock(side_effect=submits)
    manifest = Manifest(str(tmp_path / "manifest"))
    manifest.write([{"event": "intent", "index": 2, "attempt": 0}])  # the worker died mid-wave
    deferred(make(tmp_path))
    assert sorted(submits.seen) == [0, 1, 3, 4]
    assert loaded(tmp_path).entries[2].status == "AMBIGUOUS"


def test_submit_outcomes_are_classified(api: respx.MockRouter, tmp_path: Path) -> None:
    # 0: 429 then accepted (a later wave); 1: 502 (may have been queued); 2: 422 (refused); 3: accepted.
    submits = Submits({0: [429, 200], 1: [502], 2: [422]})
    api.post(SUBMIT_URL).mock(side_effect=submits)
    deferred(make(tmp_path, count=4))
    assert submits.seen.count(0) == 2
    assert submits.seen.count(1) == 1
    assert statuses_of(loaded(tmp_path)) == {0: "QUEUED", 1: "AMBIGUOUS", 2: "REJECTED", 3: "QUEUED"}


def test_auth_error_stops_the_batch_and_leaves_the_rest(api: respx.MockRouter, tmp_path: Path) -> None:
    api.post(SUBMIT_URL).respond(401, json={"error": "bad key"})
    with pytest.raises(Exception, match="401"):
        make(tmp_path, count=3).execute({})
    assert set(statuses_of(loaded(tmp_path)).values()) == {"NOT_SUBMITTED"}


@pytest.mark.parametrize(
    ("final", "fraction", "succeeds"),
    [
        ({0: "SUCCEEDED", 1: "SUCCEEDED", 2: "SUCCEEDED", 3: "SUCCEEDED"}, 0.0, True),
        ({0: "SUCCEEDED", 1: "FAILED", 2: "SUCCEEDED", 3: "SUCCEEDED"}, 0.0, False),
        ({0: "SUCCEEDED", 1: "FAILED", 2: "SUCCEEDED", 3: "SUCCEEDED"}, 0.25, True),
        ({0: "SUCCEEDED", 1: "WEBHOOK_FAILED", 2: "EXPIRED", 3: "LOST"}, 0.5, False),
        ({0: "SUCCEEDED", 1: "CANCELED", 2: "SUCCEEDED", 3: "SUCCEEDED"}, 0.25, True),
    ],
)
def test_counts_per_status_and_max_failed_fraction(
    api: respx.MockRouter, tmp_path: Path, final: dict[int, str], fraction: float, succeeds: bool
) -> None:
    api.post(SUBMIT_URL).mock(side_effect=Submits())
    op = make(tmp_path, count=4, max_failed_fraction=fraction)
    deferred(op)
    manifest = loaded(tmp_path)
    manifest.write([record for index, value in final.items() for record in status(manifest, index, value)])
    expected_counts: dict[str, int] = {}
    for value in final.values():
        expected_counts[value] = expected_counts.get(value, 0) + 1
    event = {"status": "done", "manifest_uri": manifest.uri}
    if succeeds:
        result = op.execute_complete({}, event=event)
    else:
        with pytest.raises(BasetenAsyncRequestError) as info:
            op.execute_complete({}, event=event)
        result = info.value.manifest
    assert result["counts"] == dict(sorted(expected_counts.items()))
    assert result["succeeded"] == list(final.values()).count("SUCCEEDED")
    assert result["manifest_uri"] == manifest.uri
    assert json.loads((tmp_path / "manifest" / "index.json").read_text())["counts"] == result["counts"]


def test_resubmit_sends_only_the_named_statuses_again_on_a_retry(api: respx.MockRouter, tmp_path: Path) -> None:
    submits = Submits()
    api.post(SUBMIT_URL).mock(side_effect=submits)
    deferred(make(tmp_path, count=4))
    manifest = loaded(tmp_path)
    manifest.write(
        status(manifest, 0, "FAILED") + status(manifest, 1, "EXPIRED") + status(manifest, 2, "LOST")
        + status(manifest, 3, "SUCCEEDED")
    )  # fmt: skip
    deferred(make(tmp_path, count=4, resubmit=("FAILED", "LOST")))
    assert sorted(submits.seen) == [0, 0, 1, 2, 2, 3]
    again = loaded(tmp_path)
    assert statuses_of(again) == {0: "QUEUED", 1: "EXPIRED", 2: "QUEUED", 3: "SUCCEEDED"}
    assert again.entries[0].attempt == 1


def test_on_kill_cancels_only_queued_requests_and_records_the_outcome(api: respx.MockRouter, tmp_path: Path) -> None:
    api.post(SUBMIT_URL).mock(side_effect=Submits())
    cancels = api.delete(url__regex=rf"{HOST}/async_request/req\d+").mock(
        side_effect=lambda request: httpx.Response(
            200, json={"request_id": request.url.path.rsplit("/", 1)[1], "canceled": True, "message": "ok"}
        )
    )
    op = make(tmp_path, count=3)
    deferred(op)
    assert op._manifest is not None
    op._manifest.write(status(op._manifest, 1, "IN_PROGRESS"))
    op.on_kill()
    assert sorted(call.request.url.path for call in cancels.calls) == [
        "/async_request/req0000",
        "/async_request/req0002",
    ]
    assert statuses_of(loaded(tmp_path)) == {0: "CANCELED", 1: "IN_PROGRESS", 2: "CANCELED"}
    assert op._stopping


def test_timeout_event_cancels_queued_requests_and_fails(api: respx.MockRouter, tmp_path: Path) -> None:
    api.post(SUBMIT_URL).mock(side_effect=Submits())
    cancels = api.delete(url__regex=rf"{HOST}/async_request/req\d+").respond(
        200, json={"request_id": "x", "canceled": False, "message": "running"}
    )
    op = make(tmp_path, count=2)
    deferred(op)
    with pytest.raises(BasetenAsyncRequestError, match="deadline"):
        op.execute_complete({}, event={"status": "timeout", "manifest_uri": "x", "deadline": 1.0})
    assert cancels.call_count == 2


@pytest.mark.parametrize("event", [None, {"status": "success"}, "done", {}])
def test_invalid_events_never_finish_green(tmp_path: Path, event: Any) -> None:
    with pytest.raises(BasetenAsyncRequestError, match="valid batch trigger event"):
        make(tmp_path).execute_complete({}, event=event)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"inputs": []}, "empty"),
        ({"inputs": None}, "exactly one"),
        ({"model_id": "bad id!"}, "model_id"),
        ({"resubmit": ("AMBIGUOUS",)}, "resubmit"),
        ({"submit_rate": 500}, "200"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_in_flight": 60_000}, "50,000"),
        ({"max_failed_fraction": 2}, "max_failed_fraction"),
        ({"output_uri_template": "s3://b/{ds}.json"}, "index"),
        ({"priority": 7}, "priority"),
    ],
)
def test_bad_arguments_fail_at_parse_time(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(BasetenConfigError, match=match):
        make(tmp_path, **kwargs)


def test_templated_empty_inputs_fail_before_sending(api: respx.MockRouter, tmp_path: Path) -> None:
    route = api.post(SUBMIT_URL)
    with pytest.raises(BasetenConfigError, match="no inputs"):
        make(tmp_path, inputs="[]").execute({})
    assert not route.called


def test_a_corrupt_manifest_part_is_a_clear_error(api: respx.MockRouter, tmp_path: Path) -> None:
    api.post(SUBMIT_URL).mock(side_effect=Submits())
    deferred(make(tmp_path))
    part = sorted((tmp_path / "manifest").glob("part-*.jsonl"))[0]
    part.write_text(part.read_text() + "{not json\n")
    with pytest.raises(BasetenManifestError, match=rf"corrupt at .*{part.name} line 6"):
        make(tmp_path).execute({})


def test_a_manifest_of_other_inputs_is_refused(api: respx.MockRouter, tmp_path: Path) -> None:
    api.post(SUBMIT_URL).mock(side_effect=Submits())
    deferred(make(tmp_path))
    with pytest.raises(BasetenManifestError, match="other inputs"):
        make(tmp_path, inputs=[{"n": 9}] * 5).execute({})


def test_output_uri_template_is_recorded_per_input(api: respx.MockRouter, tmp_path: Path) -> None:
    api.post(SUBMIT_URL).mock(side_effect=Submits())
    inputs = [{"id": f"doc{n}", "input": {"n": n}} for n in range(2)]
    deferred(
        make(tmp_path, inputs=inputs, id_field="id", input_field="input", output_uri_template="s3://b/{input_id}.json")
    )
    entries = loaded(tmp_path).entries
    assert [entries[n].output_uri for n in range(2)] == ["s3://b/doc0.json", "s3://b/doc1.json"]
    assert [entries[n].input_id for n in range(2)] == ["doc0", "doc1"]


def test_the_operator_survives_deepcopy(tmp_path: Path) -> None:
    import copy

    assert copy.deepcopy(make(tmp_path)).inputs == make(tmp_path).inputs  # Airflow copies tasks before running them


def test_importable_from_the_public_paths() -> None:
    from airflow_provider_baseten.operators.baseten import BasetenAsyncBatchOperator as Public
    from airflow_provider_baseten.triggers.baseten import BasetenAsyncBatchTrigger as PublicTrigger

    assert Public is BasetenAsyncBatchOperator
    assert PublicTrigger is BasetenAsyncBatchTrigger


class Interrupted(BaseException):
    """execution_timeout / SIGTERM raised into the main thread while it waits on a wave."""


def test_an_interrupted_wave_records_every_send_and_releases_the_rest(
    api: respx.MockRouter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import concurrent.futures

    submits = Submits()
    api.post(SUBMIT_URL).mock(side_effect=submits)
    real = concurrent.futures.as_completed

    def interrupted_after_one(futures: Any) -> Any:
        yield next(iter(real(futures)))
        raise Interrupted

    monkeypatch.setattr(concurrent.futures, "as_completed", interrupted_after_one)
    with pytest.raises(Interrupted):
        make(tmp_path, count=5).execute({})
    found = statuses_of(loaded(tmp_path))
    assert "AMBIGUOUS" not in found.values()  # every send that ran is recorded, none left to guess about
    assert sorted(i for i, s in found.items() if s == "QUEUED") == sorted(submits.accepted)
    assert set(found.values()) == {"QUEUED", "NOT_SUBMITTED"}


@pytest.mark.parametrize(
    ("kwargs", "expected"), [({}, 259_200), ({"timeout": 3600}, 3600), ({"max_time_in_queue_seconds": 60}, 60)]
)
def test_time_in_queue_defaults_to_the_deadline_else_the_maximum(
    api: respx.MockRouter, tmp_path: Path, clock: FakeClock, kwargs: dict[str, Any], expected: int
) -> None:
    route = api.post(SUBMIT_URL).respond(201, json={"request_id": "req0000"})
    op = make(tmp_path, count=1, **kwargs)
    op._wall = clock.time  # type: ignore[method-assign]
    deferred(op)
    assert json.loads(route.calls[0].request.content)["max_time_in_queue_seconds"] == expected


def test_an_inactive_deployment_fails_before_any_submit(api: respx.MockRouter, tmp_path: Path) -> None:
    submits = Submits()
    api.post(SUBMIT_URL).mock(side_effect=submits)
    status = api.get("https://api.baseten.co/v1/models/abc123/deployments/production").mock(
        return_value=httpx.Response(200, json={"id": "dep1", "status": "INACTIVE"})
    )
    with pytest.raises(BasetenDeploymentError, match=r"activate_if_inactive=True.*billed"):
        make(tmp_path).execute({})
    assert status.call_count == 1
    assert submits.seen == []

"""Async inference over a manual clock: queue order, concurrency, expiry, cancel, retention, retries, webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from airflow_provider_baseten.emulator import DEMO_WEBHOOK_SECRET, DeploymentSpec, Emulator, Limits, ModelSpec, World
from airflow_provider_baseten.emulator.behaviours import Echo, Fail, Sleep

pytestmark = [pytest.mark.integration, pytest.mark.baseten_emulator(manual_clock=True)]


def submit(client, host="model-slow01", prefix="/production", **body):
    body.setdefault("model_input", {"text": "good"})
    response = client.post(host, f"{prefix}/async_predict", json=body)
    assert response.status_code == 201, response.text
    return response.json()["request_id"]


def status(client, request_id, host="model-slow01"):
    response = client.get(host, f"/async_request/{request_id}")
    assert response.status_code == 200, response.text
    return response.json()


def test_request_goes_queued_in_progress_succeeded(baseten_emulator: Emulator, client):
    request_id = submit(client)
    state = status(client, request_id)

    assert state["status"] == "IN_PROGRESS"  # slow01 was idle: it started at once
    assert state["model_id"] == "slow01"
    assert state["deployment_id"] == "slowprod01"
    assert state["webhook_status"] == "NO_WEBHOOK_PROVIDED"
    baseten_emulator.advance(5)
    done = status(client, request_id)
    assert (done["status"], done["errors"]) == ("SUCCEEDED", [])
    assert done["status_at"] > done["created_at"]
    assert baseten_emulator.requests[request_id].output == {"label": "positive", "score": 1.0}
    assert baseten_emulator.journal.count(method="POST", path_suffix="/async_predict") == 1


def test_concurrency_then_priority_then_arrival(baseten_emulator: Emulator, client):
    first, second = submit(client), submit(client)  # slow01 runs two at a time
    low = submit(client, priority=2)
    high = submit(client, priority=0)
    mid = submit(client, priority=1)
    queue = client.get("model-slow01", "/production/async_queue_status").json()

    assert queue == {
        "model_id": "slow01",
        "deployment_id": "slowprod01",
        "num_queued_requests": 3,
        "num_in_progress_requests": 2,
    }
    assert [status(client, r)["status"] for r in (first, second)] == ["IN_PROGRESS"] * 2
    baseten_emulator.advance(5)
    assert [status(client, r)["status"] for r in (high, mid, low)] == ["IN_PROGRESS", "IN_PROGRESS", "QUEUED"]
    baseten_emulator.advance(5)
    assert status(client, low)["status"] == "IN_PROGRESS"
    baseten_emulator.advance(5)
    assert {status(client, r)["status"] for r in (first, second, low, high, mid)} == {"SUCCEEDED"}


def test_queue_wakes_a_scaled_to_zero_model(baseten_emulator: Emulator, client):
    request_id = submit(client, "model-coldstart01")

    assert baseten_emulator.status("coldstart01") == "WAKING_UP"
    assert status(client, request_id, "model-coldstart01")["status"] == "QUEUED"
    baseten_emulator.advance(180)
    assert status(client, request_id, "model-coldstart01")["status"] == "SUCCEEDED"


def test_request_expires_when_the_model_is_not_ready_in_time(baseten_emulator: Emulator, client):
    request_id = submit(client, "model-coldstart01", max_time_in_queue_seconds=60)

    baseten_emulator.advance(60)
    expired = status(client, request_id, "model-coldstart01")

    assert expired["status"] == "EXPIRED"
    assert expired["errors"][0]["code"] == "MODEL_NOT_READY"
    assert baseten_emulator.deployment("coldstart01").calls == 0


def test_cancel_only_while_queued(baseten_emulator: Emulator, client):
    running, _ = submit(client), submit(client)
    queued = submit(client)

    canceled = client.delete("model-slow01", f"/async_request/{queued}").json()
    refused = client.delete("model-slow01", f"/async_request/{running}").json()

    assert canceled == {"request_id": queued, "canceled": True, "message": "Request canceled."}
    assert (refused["canceled"], refused["request_id"]) == (False, running)
    assert status(client, queued)["status"] == "CANCELED"
    baseten_emulator.advance(10)
    assert status(client, queued)["status"] == "CANCELED"
    assert baseten_emulator.deployment("slow01").calls == 2


def test_status_is_kept_one_hour_after_completion_then_404(baseten_emulator: Emulator, client):
    request_id = submit(client)
    baseten_emulator.advance(5)

    baseten_emulator.advance(3599)
    assert status(client, request_id)["status"] == "SUCCEEDED"
    baseten_emulator.advance(1)
    assert client.get("model-slow01", f"/async_request/{request_id}").status_code == 404
    assert client.delete("model-slow01", f"/async_request/{request_id}").status_code == 404


def test_request_ids_are_only_known_on_their_own_models_host(client):
    request_id = submit(client)

    assert client.get("model-echo01", f"/async_request/{request_id}").status_code == 404
    assert client.get("model-slow01", "/async_request/unknown").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"model_input": {"a": 1}, "priority": 3},
        {"model_input": {"a": 1}, "max_time_in_queue_seconds": 5},
        {"model_input": {"a": 1}, "max_time_in_queue_seconds": 259_201},
        {"model_input": {"a": 1}, "webhook_endpoint": "http://example.com/hook"},
        {"model_input": {"a": 1}, "inference_retry_config": {"max_attempts": 11}},
        {"model_input": {"a": 1}, "unknown": True},
        {"model_input": [1, 2]},
        {},
    ],
)
def test_invalid_envelopes_answer_400(client, body):
    response = client.post("model-echo01", "/production/async_predict", json=body)

    assert response.status_code == 400
    assert response.json()["error_code"] == "client_error"


def test_payload_over_256_kib_answers_413(client):
    response = client.post("model-echo01", "/production/async_predict", json={"model_input": {"x": "a" * 262_144}})

    assert response.status_code == 413
    assert response.json()["error"].startswith("payload size of ")
    assert response.json()["error"].endswith("exceeds maximum size of 262144 bytes")


@pytest.mark.baseten_emulator(manual_clock=True, limits=Limits(org_queue_limit=3))
def test_org_queue_limit_answers_429(client):
    for _ in range(3):
        submit(client)

    response = client.post("model-slow01", "/production/async_predict", json={"model_input": {}})

    assert response.status_code == 429
    assert response.json()["error_code"] == "rate_limited"


def test_submit_to_an_inactive_deployment_answers_404(client):
    assert client.post("model-inactive01", "/production/async_predict", json={"model_input": {}}).status_code == 404


def _failing_world() -> World:
    return World(webhook_secrets=["old-secret", "new-secret"]).add(
        ModelSpec("fail01", Fail(503, after=0), deployments=[DeploymentSpec("failprod01", min_replicas=1)]),
        ModelSpec(
            "recover01",
            Fail(500, after=0),
            deployments=[DeploymentSpec("recprod01", min_replicas=1, behaviour=Fail(422))],
        ),
        ModelSpec("ok01", Sleep(2, Echo()), deployments=[DeploymentSpec("okprod01", min_replicas=1)]),
    )


@pytest.mark.baseten_emulator(manual_clock=True, world=_failing_world)
def test_retry_config_retries_model_5xx_with_backoff_then_fails(baseten_emulator: Emulator, client):
    retry = {"max_attempts": 3, "initial_delay_ms": 1000, "max_delay_ms": 1500}
    request_id = submit(client, "model-fail01", inference_retry_config=retry)
    baseten_emulator.settle()

    assert baseten_emulator.deployment("fail01").calls == 1
    baseten_emulator.advance(1)  # first backoff 1000 ms
    assert baseten_emulator.deployment("fail01").calls == 2
    baseten_emulator.advance(1.4)
    assert baseten_emulator.deployment("fail01").calls == 2
    baseten_emulator.advance(0.1)  # second backoff capped at 1500 ms
    failed = status(client, request_id, "model-fail01")

    assert baseten_emulator.deployment("fail01").calls == 3
    assert failed["status"] == "FAILED"
    assert failed["errors"][0]["code"] == "MODEL_UNAVAILABLE"


@pytest.mark.baseten_emulator(manual_clock=True, world=_failing_world)
def test_model_4xx_is_not_retried(baseten_emulator: Emulator, client):
    request_id = submit(client, "model-recover01", inference_retry_config={"max_attempts": 5})
    baseten_emulator.settle()
    failed = status(client, request_id, "model-recover01")

    assert failed["status"] == "FAILED"
    assert failed["errors"][0]["code"] == "MODEL_INVALID_INPUT"
    assert baseten_emulator.deployment("recover01").calls == 1


@pytest.mark.baseten_emulator(manual_clock=True, world=_failing_world)
def test_webhook_is_signed_with_every_secret(baseten_emulator: Emulator, client, webhook_receiver, wait_until):
    request_id = submit(client, "model-ok01", model_input={"x": 1}, webhook_endpoint=webhook_receiver.url)
    assert status(client, request_id, "model-ok01")["webhook_status"] == "PENDING"

    baseten_emulator.advance(2)
    wait_until(lambda: status(client, request_id, "model-ok01")["status"] != "IN_PROGRESS", what="delivery")

    final = status(client, request_id, "model-ok01")
    assert (final["status"], final["webhook_status"]) == ("SUCCEEDED", "SUCCEEDED")
    [delivery] = webhook_receiver.received
    headers = {k.lower(): v for k, v in delivery["headers"].items()}
    assert headers["x-baseten-request-id"] == request_id
    signatures = headers["x-baseten-signature"].split(",")
    expected = [
        f"v1={hmac.new(s, delivery['body'], hashlib.sha256).hexdigest()}" for s in (b"old-secret", b"new-secret")
    ]
    assert signatures == expected
    body = json.loads(delivery["body"])
    assert body["type"] == "async_request_completed"
    assert (body["request_id"], body["model_id"], body["deployment_id"]) == (request_id, "ok01", "okprod01")
    assert (body["data"], body["errors"]) == ({"x": 1}, [])
    assert body["time"].endswith("Z")


@pytest.mark.baseten_emulator(manual_clock=True, world=_failing_world)
def test_webhook_failing_twice_loses_the_output(baseten_emulator: Emulator, client, webhook_receiver, wait_until):
    webhook_receiver.statuses = [500, 502]
    request_id = submit(client, "model-ok01", webhook_endpoint=webhook_receiver.url)

    baseten_emulator.advance(2)
    wait_until(lambda: status(client, request_id, "model-ok01")["status"] != "IN_PROGRESS", what="delivery")

    final = status(client, request_id, "model-ok01")
    assert (final["status"], final["webhook_status"]) == ("WEBHOOK_FAILED", "FAILED")
    assert len(webhook_receiver.received) == 2
    assert baseten_emulator.webhooks[0].attempts == [500, 502]


@pytest.mark.baseten_emulator(manual_clock=True, world=_failing_world)
def test_webhook_4xx_is_not_retried_and_failures_are_delivered(
    baseten_emulator: Emulator, client, webhook_receiver, wait_until
):
    webhook_receiver.statuses = [400]
    ok = submit(client, "model-ok01", webhook_endpoint=webhook_receiver.url)
    baseten_emulator.advance(2)
    wait_until(lambda: status(client, ok, "model-ok01")["status"] != "IN_PROGRESS", what="delivery")
    failed = submit(client, "model-fail01", webhook_endpoint=webhook_receiver.url)
    wait_until(lambda: status(client, failed, "model-fail01")["status"] != "IN_PROGRESS", what="delivery")

    assert status(client, ok, "model-ok01")["status"] == "WEBHOOK_FAILED"
    assert len(webhook_receiver.received) == 2
    failure = json.loads(webhook_receiver.received[1]["body"])
    assert failure["data"] is None
    assert failure["errors"][0]["code"] == "MODEL_UNAVAILABLE"
    assert status(client, failed, "model-fail01")["webhook_status"] == "SUCCEEDED"


def test_external_webhooks_are_not_sent_but_count_as_delivered(baseten_emulator: Emulator, client):
    request_id = submit(client, "model-echo01", webhook_endpoint="https://hooks.example.com/baseten")
    baseten_emulator.settle()
    final = status(client, request_id, "model-echo01")

    assert (final["status"], final["webhook_status"]) == ("SUCCEEDED", "SUCCEEDED")
    [delivery] = baseten_emulator.webhooks
    assert (delivery.sent, delivery.delivered) == (False, True)
    assert delivery.headers["x-baseten-signature"].startswith("v1=")
    raw = json.dumps(delivery.body, separators=(",", ":")).encode()
    assert delivery.headers["x-baseten-signature"] == (
        f"v1={hmac.new(DEMO_WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()}"
    )


def test_chain_async_run_remote(baseten_emulator: Emulator, client):
    response = client.post(
        "chain-summarize01", "/production/async_run_remote", json={"model_input": {"text": "Hello there. Bye."}}
    )
    request_id = response.json()["request_id"]
    baseten_emulator.settle()
    state = client.get("chain-summarize01", f"/async_request/{request_id}").json()

    assert response.status_code == 201
    assert state["chain_id"] == "summarize01"
    assert "model_id" not in state
    assert state["status"] == "SUCCEEDED"
    assert baseten_emulator.requests[request_id].output == {"summary": "Hello there", "words": 3}
    queue = client.get("chain-summarize01", "/production/async_queue_status").json()
    assert queue["num_queued_requests"] == 0

"""``BasetenHook`` runs every one of its methods, sync and async, against the emulator over loopback HTTP."""

from __future__ import annotations

import json

import pytest

from airflow_provider_baseten.emulator import Emulator

pytestmark = [pytest.mark.integration, pytest.mark.baseten_emulator(manual_clock=True)]


@pytest.fixture
def hook(baseten_emulator: Emulator):
    from airflow_provider_baseten.hooks.baseten import BasetenHook

    hook = BasetenHook(customer_request_id="dag/task/run/-1/1")
    yield hook
    hook.close()


@pytest.fixture
def target():
    from airflow_provider_baseten.hooks.addressing import Target

    return Target.of


def test_predict_run_remote_and_regional(hook, target, baseten_emulator: Emulator):
    result = hook.predict(target(model_id="sentiment01"), {"text": "great stuff"})
    regional = hook.predict(target(model_id="sentiment01", environment="prod-us", regional=True), {"text": "bad"})
    pinned = hook.predict(target(model_id="sentiment01", deployment_id="sentdev01"), {"text": "ok"})
    chain = hook.run_remote(target(chain_id="summarize01"), {"text": "One. Two."})

    assert result.data == {"label": "positive", "score": 1.0}
    assert result.status_code == 200
    assert result.request_id
    assert regional.data["label"] == "negative"
    assert pinned.data["label"] == "neutral"
    assert chain.data == {"summary": "One", "words": 2}
    hosts = {entry.host for entry in baseten_emulator.journal}
    assert "model-sentiment01-prod-us.api.baseten.co" in hosts


def test_async_request_lifecycle(hook, target, baseten_emulator: Emulator):
    slow = target(model_id="slow01")
    submitted = [hook.async_predict(slow, {"model_input": {"text": "x"}}) for _ in range(3)]

    queue = hook.get_async_queue_status(slow)
    state = hook.get_async_request(slow, submitted[0].request_id)
    canceled = hook.cancel_async_request(slow, submitted[2].request_id)
    refused = hook.cancel_async_request(slow, submitted[0].request_id)

    assert (queue.num_in_progress_requests, queue.num_queued_requests) == (2, 1)
    assert state.known_status is not None
    assert state.known_status.is_pending
    assert state.model_id == "slow01"
    assert canceled.canceled
    assert not refused.canceled
    assert baseten_emulator.journal.count(method="POST", path_suffix="/async_predict") == 3


def test_wake_and_readiness(hook, target, baseten_emulator: Emulator):
    cold = target(model_id="coldstart01")

    hook.wake(cold)
    deployment = hook.get_deployment(cold)
    environment = hook.get_environment("sentiment01", "staging")
    named = hook.get_deployment(target(model_id="sentiment01", environment="staging"))

    assert deployment.status == "WAKING_UP"
    assert deployment.id == "coldprod01"
    assert environment.current_deployment.id == "sentstage01"
    assert named.id == "sentstage01"


def test_activate_and_management_listing(hook, target):
    assert hook.activate(target(model_id="inactive01")) is True
    assert hook.get_deployment(target(model_id="inactive01")).status == "WAKING_UP"
    assert {m["id"] for m in hook.list_models()} >= {"sentiment01", "echo01", "coldstart01", "llm01"}
    assert hook.get_model("sentiment01")["production_deployment_id"] == "sentprod01"
    assert {d.id for d in hook.list_deployments("sentiment01")} == {
        "sentprod01",
        "sentdev01",
        "sentstage01",
        "sentus01",
    }
    assert hook.get_user().email == "developer@example.com"


def test_chat_completion_stream_and_model_apis(hook, target):
    request = {"model": "zai-org/GLM-5.2", "messages": [{"role": "user", "content": "What is 6 * 7?"}]}

    completion = hook.chat_completion(request)
    deployed = hook.chat_completion(request, target=target(model_id="llm01"))
    chunks = list(hook.stream_chat_completion(request))
    models = hook.list_model_api_models()

    assert completion.choices[0].message.content == "6 * 7 = 42."
    assert completion.usage.total_tokens > 0
    assert deployed.choices[0].message.content == "6 * 7 = 42."
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "6 * 7 = 42."
    assert chunks[-1]["usage"]["completion_tokens"] == completion.usage.completion_tokens
    assert next(m.id for m in models) == "deepseek-ai/DeepSeek-V3.1"


def test_openai_clients_from_the_connection(hook, target):
    pytest.importorskip("openai")
    client = hook.get_openai_client()
    deployed = hook.get_openai_client(target(model_id="llm01"))
    try:
        answer = client.chat.completions.create(model="zai-org/GLM-5.2", messages=[{"role": "user", "content": "hi"}])
        engine = deployed.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == engine.choices[0].message.content == "You said: hi"
    finally:
        client.close()
        deployed.close()


def test_test_connection(hook, baseten_emulator: Emulator, monkeypatch):
    from airflow_provider_baseten.hooks.baseten import BasetenHook

    assert hook.test_connection() == (True, "Connected to Baseten as developer@example.com.")

    baseten_emulator.reset(keys={"invoke-only": "invoke"})
    conn = json.loads(baseten_emulator.conn_uri())
    monkeypatch.setenv("AIRFLOW_CONN_BASETEN_INVOKE", json.dumps({**conn, "password": "invoke-only"}))
    ok, message = BasetenHook("baseten_invoke").test_connection()
    assert ok, message
    assert "cannot use the management API" in message
    monkeypatch.setenv("AIRFLOW_CONN_BASETEN_BAD", json.dumps({**conn, "password": "wrong"}))
    assert BasetenHook("baseten_bad").test_connection()[0] is False


def test_errors_map_to_the_hook_exceptions(hook, target):
    from airflow_provider_baseten.exceptions import (
        BasetenModelAPINotEnabledError,
        BasetenNotFoundError,
        BasetenPayloadTooLargeError,
    )

    with pytest.raises(BasetenNotFoundError):
        hook.predict(target(model_id="inactive01"), {"a": 1})
    with pytest.raises(BasetenNotFoundError):
        hook.get_async_request(target(model_id="echo01"), "doesnotexist")
    with pytest.raises(BasetenModelAPINotEnabledError):
        hook.chat_completion({"model": "nope/nope", "messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(BasetenPayloadTooLargeError):
        hook.async_predict(target(model_id="echo01"), {"model_input": {"x": "a" * 300_000}})


async def test_async_twins(hook, target, baseten_emulator: Emulator):
    from airflow_provider_baseten.hooks.baseten import close_shared_async_clients

    echo, slow = target(model_id="echo01"), target(model_id="slow01")
    try:
        result = await hook.apredict(echo, {"a": 1})
        submitted = hook.async_predict(slow, {"model_input": {"text": "x"}})
        state = await hook.aget_async_request(slow, submitted.request_id)
        unlimited = await hook.aget_async_request(slow, submitted.request_id, rate_limited=False)
        queue = await hook.aget_async_queue_status(slow)
        deployment = await hook.aget_deployment(target(model_id="coldstart01"))
        extra = hook.async_predict(slow, {"model_input": {"text": "y"}})
        queued = hook.async_predict(slow, {"model_input": {"text": "z"}})
        canceled = await hook.acancel_async_request(slow, queued.request_id)
    finally:
        await close_shared_async_clients()

    assert result.data == {"a": 1}
    assert state.request_id == unlimited.request_id == submitted.request_id
    assert queue.num_in_progress_requests == 1
    assert deployment.status == "SCALED_TO_ZERO"
    assert extra.request_id
    assert canceled.canceled is True

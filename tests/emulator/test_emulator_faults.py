"""Fault injection (statuses, resets, slow answers; scripted or seeded) and Baseten's rate limits."""

from __future__ import annotations

import httpx
import pytest

from airflow_provider_baseten.emulator import Emulator, FaultPlan, Limits

pytestmark = [pytest.mark.integration, pytest.mark.baseten_emulator(manual_clock=True)]

ECHO = ("model-echo01", "/production/predict")


def predict(client, host="model-echo01"):
    return client.post(host, "/production/predict", json={"text": "hi"})


def test_scripted_sequence_then_pass_through(baseten_emulator: Emulator, client):
    baseten_emulator.faults.set(FaultPlan(route="predict", sequence=[503, 529, "ok", 502], retry_after=3))

    statuses = [predict(client).status_code for _ in range(5)]

    assert statuses == [503, 529, 200, 502, 200]
    assert baseten_emulator.deployment("echo01").calls == 2


def test_injected_429_carries_retry_after(baseten_emulator: Emulator, client):
    baseten_emulator.faults.set(FaultPlan(route="predict", sequence=[429], retry_after=3))

    response = predict(client)

    assert response.headers["retry-after"] == "3"
    assert response.json()["error_code"] == "rate_limited"


def test_seeded_probability_is_reproducible(baseten_emulator: Emulator, client):
    def run():
        baseten_emulator.faults.set(FaultPlan(route="predict", probability=0.5, action=500, seed=11))
        return [predict(client).status_code for _ in range(20)]

    first, second = run(), run()

    assert first == second
    assert {200, 500} == set(first)


def test_plans_can_target_one_model(client, baseten_emulator: Emulator):
    baseten_emulator.faults.set({"route": "*", "target_id": "echo01", "sequence": [500, 500]})

    assert predict(client, "model-sentiment01").status_code == 200
    assert predict(client).status_code == 500
    assert client.get("model-echo01", "/production/async_queue_status").status_code == 500
    assert predict(client).status_code == 200


@pytest.mark.parametrize(("action", "ran"), [("reset_before", False), ("reset_after", True)])
def test_connection_reset_before_or_after_the_model_ran(baseten_emulator: Emulator, client, action, ran):
    baseten_emulator.faults.set(FaultPlan(route="predict", sequence=[action]))

    with pytest.raises(httpx.TransportError):
        predict(client)

    [entry] = baseten_emulator.journal
    assert (entry.status, entry.model_ran) == (0, ran)
    assert baseten_emulator.deployment("echo01").calls == int(ran)
    assert predict(client).status_code == 200  # the server carries on


def test_status_after_the_model_ran(baseten_emulator: Emulator, client):
    baseten_emulator.faults.set(FaultPlan(route="predict", sequence=[502], after_model=True))

    assert predict(client).status_code == 502
    assert baseten_emulator.deployment("echo01").calls == 1
    assert baseten_emulator.journal[0].model_ran is True


def test_slow_answers_trip_client_read_timeouts(baseten_emulator: Emulator, client):
    baseten_emulator.faults.set(FaultPlan(route="predict", sequence=["slow"], delay=0.5))

    with pytest.raises(httpx.ReadTimeout):
        client.post(*ECHO, json={"a": 1}, timeout=httpx.Timeout(5, read=0.05))

    assert baseten_emulator.deployment("echo01").calls == 1


def test_async_submit_reset_after_queues_the_work(baseten_emulator: Emulator, client):
    baseten_emulator.faults.set(FaultPlan(route="async_predict", sequence=["reset_after"]))

    with pytest.raises(httpx.TransportError):
        client.post("model-echo01", "/production/async_predict", json={"model_input": {"a": 1}})

    assert len(baseten_emulator.requests) == 1  # the request was queued: the client cannot know


def test_hook_retries_a_503_and_refuses_to_retry_a_reset_predict(baseten_emulator: Emulator):
    from airflow_provider_baseten.exceptions import BasetenAmbiguousSubmitError
    from airflow_provider_baseten.hooks.addressing import Target
    from airflow_provider_baseten.hooks.baseten import BasetenHook

    hook = BasetenHook(sleep=lambda _: None)
    echo = Target.of(model_id="echo01")
    try:
        baseten_emulator.faults.set(FaultPlan(route="predict", sequence=[503, 503]))
        assert hook.predict(echo, {"a": 1}).data == {"a": 1}  # 503 provably never reached the model
        assert [e.status for e in baseten_emulator.journal] == [503, 503, 200]

        baseten_emulator.faults.set(FaultPlan(route="predict", sequence=["reset_after"]))
        with pytest.raises(BasetenAmbiguousSubmitError):
            hook.predict(echo, {"a": 1})
        assert baseten_emulator.journal.count(route="predict") == 4
    finally:
        hook.close()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"route": "predict", "sequence": [200]}, "invalid fault action"),
        ({"route": "nope"}, "unknown route"),
        ({"probability": 2}, "probability"),
        ({"routes": "predict"}, "unknown fault plan keys"),
    ],
)
def test_invalid_plans_are_refused(value, problem):
    with pytest.raises(ValueError, match=problem):
        FaultPlan.from_dict(value)


# --- rate limits ----------------------------------------------------------------------------------------------


def _burst(client, n, path="/async_request/unknown", method="GET", host="model-echo01"):
    return [client.request(method, host, path) for _ in range(n)]


@pytest.mark.baseten_emulator(manual_clock=True, limits=Limits(status_per_second=2))
def test_status_rate_limit_answers_429_with_retry_after(client):
    responses = _burst(client, 9)

    limited = [r for r in responses if r.status_code == 429]
    assert [r.status_code for r in responses[:2]] == [404] * 2
    assert len(limited) >= 4
    assert limited[0].headers["retry-after"] == "1"
    assert limited[0].json()["error_code"] == "rate_limited"
    assert "retry_after" not in limited[0].json()


@pytest.mark.baseten_emulator(manual_clock=True, limits=Limits(status_per_second=2, retry_after="body"))
def test_retry_after_can_come_in_the_body_instead(client):
    limited = [r for r in _burst(client, 9) if r.status_code == 429]

    assert "retry-after" not in limited[0].headers
    assert limited[0].json()["retry_after"] == 1


@pytest.mark.baseten_emulator(manual_clock=True, limits=Limits(cancel_per_second=1, retry_after="none"))
def test_cancel_limit_without_retry_after(client):
    limited = [r for r in _burst(client, 6, method="DELETE") if r.status_code == 429]

    assert limited
    assert "retry-after" not in limited[0].headers
    assert "retry_after" not in limited[0].json()


@pytest.mark.baseten_emulator(manual_clock=True, limits=Limits(submit_per_second=1))
def test_submit_limit_is_shared_by_models_and_chains(client):
    body = {"model_input": {"text": "x"}}
    model = client.post("model-echo01", "/production/async_predict", json=body)
    chain = client.post("chain-summarize01", "/production/async_run_remote", json=body)

    assert (model.status_code, chain.status_code) == (201, 429)


@pytest.mark.baseten_emulator(manual_clock=True, limits=Limits(activate_per_minute=2))
def test_activate_is_limited_per_minute(client):
    path = "/v1/models/inactive01/deployments/production/activate"
    statuses = [client.post("api.baseten.co", path).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]


@pytest.mark.baseten_emulator(manual_clock=True, limits=Limits(status_per_second=None))
def test_limits_can_be_turned_off(client):
    assert {r.status_code for r in _burst(client, 40)} == {404}


def test_default_limits_are_baseten_s_lower_figures():
    limits = Limits()

    assert (limits.status_per_second, limits.cancel_per_second, limits.queue_status_per_second) == (20, 20, 20)
    assert (limits.submit_per_second, limits.org_queue_limit, limits.async_payload_bytes) == (200, 50_000, 262_144)

"""Deployment lifecycle over a manual clock: wake, cold start, parking, scale to zero, activate. No wall sleeps."""

from __future__ import annotations

import threading

import pytest

from airflow_provider_baseten.emulator import DeploymentSpec, Emulator, ModelSpec, World
from airflow_provider_baseten.emulator.behaviours import Echo, Sleep

pytestmark = [pytest.mark.integration, pytest.mark.baseten_emulator(manual_clock=True)]


def _in_thread(fn):
    """Run a blocking request in a thread; returns (thread, result holder)."""
    result: dict = {}

    def run():
        result["response"] = fn()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_wake_walks_through_waking_up_and_loading_model_to_active(baseten_emulator: Emulator, client):
    emu = baseten_emulator
    assert emu.status("coldstart01") == "SCALED_TO_ZERO"

    response = client.post("model-coldstart01", "/production/wake")

    assert response.status_code == 202
    assert emu.status("coldstart01") == "WAKING_UP"
    emu.advance(60)
    assert emu.status("coldstart01") == "LOADING_MODEL"
    emu.advance(119)
    assert emu.status("coldstart01") == "LOADING_MODEL"
    emu.advance(1)
    assert emu.status("coldstart01") == "ACTIVE"
    record = client.get("api.baseten.co", "/v1/models/coldstart01/deployments/production").json()
    assert (record["status"], record["active_replica_count"]) == ("ACTIVE", 1)


def test_active_deployment_scales_to_zero_after_the_delay_since_its_last_request(baseten_emulator: Emulator, client):
    emu = baseten_emulator
    client.post("model-coldstart01", "/production/wake")
    emu.advance(180)
    emu.advance(600)
    assert client.post("model-coldstart01", "/production/predict", json={"text": "fine"}).status_code == 200

    emu.advance(899)
    assert emu.status("coldstart01") == "ACTIVE"
    emu.advance(1)
    assert emu.status("coldstart01") == "SCALED_TO_ZERO"


def test_min_replicas_keep_a_deployment_up(baseten_emulator: Emulator):
    baseten_emulator.advance(10 * 3600)

    assert baseten_emulator.status("echo01") == "ACTIVE"


def test_sync_predict_on_a_cold_deployment_is_parked_until_ready(baseten_emulator: Emulator, client, wait_until):
    emu = baseten_emulator
    thread, result = _in_thread(lambda: client.post("model-coldstart01", "/production/predict", json={"text": "good"}))
    wait_until(lambda: emu.status("coldstart01") == "WAKING_UP", what="the parked predict to wake the model")

    emu.advance(179)
    assert thread.is_alive()
    emu.advance(1)
    thread.join(10)

    assert result["response"].status_code == 200
    assert result["response"].json()["label"] == "positive"
    assert emu.deployment("coldstart01").calls == 1


def _slow_cold_world() -> World:
    return World().add(
        ModelSpec(
            "big01",
            Sleep(30, Echo()),
            deployments=[
                DeploymentSpec("bigprod01", status="SCALED_TO_ZERO", cold_start_seconds=900, predict_timeout=600)
            ],
        )
    )


@pytest.mark.baseten_emulator(manual_clock=True, world=_slow_cold_world)
def test_parking_longer_than_the_predict_timeout_answers_500(baseten_emulator: Emulator, client, wait_until):
    emu = baseten_emulator
    thread, result = _in_thread(lambda: client.post("model-big01", "/production/predict", json={"a": 1}))
    wait_until(lambda: emu.status("big01") == "WAKING_UP", what="the parked predict")

    emu.advance(600)
    thread.join(10)

    assert result["response"].status_code == 500
    assert result["response"].json()["error_code"] == "model_not_ready"
    assert emu.deployment("big01").calls == 0
    assert emu.status("big01") == "LOADING_MODEL"  # the cold start goes on


@pytest.mark.baseten_emulator(manual_clock=True, world=_slow_cold_world)
def test_model_work_longer_than_the_predict_timeout_answers_504(baseten_emulator: Emulator, client, wait_until):
    emu = baseten_emulator
    emu.set_status("big01", "ACTIVE")
    emu.deployment("big01").spec.predict_timeout = 20
    thread, result = _in_thread(lambda: client.post("model-big01", "/production/predict", json={"a": 1}))
    wait_until(lambda: emu.deployment("big01").in_flight == 1, what="the predict to run")

    emu.advance(20)
    thread.join(10)

    assert result["response"].status_code == 504
    assert result["response"].json()["error_code"] == "timeout"


def test_slow_model_answers_after_its_emulated_work(baseten_emulator: Emulator, client, wait_until):
    emu = baseten_emulator
    thread, result = _in_thread(lambda: client.post("model-slow01", "/production/predict", json={"text": "bad"}))
    wait_until(lambda: emu.deployment("slow01").in_flight == 1, what="the predict to run")

    emu.advance(4.9)
    assert thread.is_alive()
    emu.advance(0.1)
    thread.join(10)

    assert result["response"].json()["label"] == "negative"


def test_inactive_answers_404_wake_does_not_revive_and_activate_does(baseten_emulator: Emulator, client):
    emu = baseten_emulator

    assert client.post("model-inactive01", "/production/predict", json={}).status_code == 404
    assert client.post("model-inactive01", "/production/wake").status_code == 202
    emu.advance(3600)
    assert emu.status("inactive01") == "INACTIVE"

    activated = client.post("api.baseten.co", "/v1/models/inactive01/deployments/production/activate")
    assert activated.json() == {"success": True}
    assert emu.status("inactive01") == "WAKING_UP"
    emu.advance(60)
    assert emu.status("inactive01") == "ACTIVE"
    assert client.post("model-inactive01", "/production/predict", json={"a": 1}).json() == {"a": 1}


def test_deactivate_makes_a_deployment_inactive(baseten_emulator: Emulator, client):
    response = client.post("api.baseten.co", "/v1/models/sentiment01/environments/staging/deactivate")

    assert response.json() == {"success": True}
    assert baseten_emulator.status("sentiment01", environment="staging") == "INACTIVE"
    assert client.post("model-sentiment01", "/environments/staging/predict", json={"text": "x"}).status_code == 404


def test_failed_and_unhealthy_deployments(baseten_emulator: Emulator, client):
    failed = client.post("model-buildfail01", "/production/predict", json={})
    unhealthy = client.post("model-unhealthy01", "/production/predict", json={})
    cannot_activate = client.post("api.baseten.co", "/v1/models/buildfail01/deployments/production/activate")

    assert failed.status_code == 404
    assert unhealthy.status_code == 503
    assert unhealthy.json()["error_code"] == "model_unavailable"
    assert cannot_activate.status_code == 400


def _booting_world() -> World:
    return World().add(
        ModelSpec("new01", "echo", deployments=[DeploymentSpec("newprod01", status="BUILDING", cold_start_seconds=100)])
    )


@pytest.mark.baseten_emulator(manual_clock=True, world=_booting_world)
def test_a_deployment_that_starts_pending_becomes_active_after_its_cold_start(baseten_emulator: Emulator):
    assert baseten_emulator.status("new01") == "BUILDING"
    baseten_emulator.advance(30)
    assert baseten_emulator.status("new01") == "LOADING_MODEL"
    baseten_emulator.advance(70)
    assert baseten_emulator.status("new01") == "ACTIVE"


@pytest.mark.baseten_emulator(time_scale=2000)
def test_scaled_clock_runs_cold_starts_in_wall_time(baseten_emulator: Emulator, client):
    response = client.post("model-coldstart01", "/production/predict", json={"text": "good"})  # 180 s / 2000

    assert response.status_code == 200
    assert baseten_emulator.status("coldstart01") == "ACTIVE"

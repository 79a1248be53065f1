"""Payload models and what each status means (decided once, next to its enum)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from airflow_provider_baseten.hooks.models import (
    AsyncPredictRequest,
    AsyncRequestState,
    AsyncRequestStatus,
    Deployment,
    DeploymentStatus,
    Environment,
    Readiness,
    check_webhook_endpoint,
)


@pytest.mark.parametrize(
    ("status", "pending"),
    [
        ("QUEUED", True),
        ("IN_PROGRESS", True),
        ("SUCCEEDED", False),
        ("FAILED", False),
        ("EXPIRED", False),
        ("CANCELED", False),
        ("WEBHOOK_FAILED", False),
    ],
)
def test_async_status_pending_and_terminal(status: str, pending: bool) -> None:
    assert AsyncRequestStatus(status).is_pending is pending
    assert AsyncRequestStatus(status).is_terminal is not pending


@pytest.mark.parametrize(
    ("status", "readiness"),
    [
        ("ACTIVE", Readiness.READY),
        ("SCALED_TO_ZERO", Readiness.PENDING),
        ("WAKING_UP", Readiness.PENDING),
        ("LOADING_MODEL", Readiness.PENDING),
        ("DEPLOYING", Readiness.PENDING),
        ("BUILDING", Readiness.PENDING),
        ("UPDATING", Readiness.PENDING),
        ("BUILD_FAILED", Readiness.FAILED),
        ("BUILD_STOPPED", Readiness.FAILED),
        ("DEPLOY_FAILED", Readiness.FAILED),
        ("FAILED", Readiness.FAILED),
        ("INACTIVE", Readiness.INACTIVE),
        ("DEACTIVATING", Readiness.INACTIVE),
        ("UNHEALTHY", Readiness.UNHEALTHY),
    ],
)
def test_deployment_readiness(status: str, readiness: Readiness) -> None:
    assert DeploymentStatus(status).readiness is readiness


def test_every_deployment_status_has_a_readiness() -> None:
    for status in DeploymentStatus:
        assert isinstance(status.readiness, Readiness)


def test_unknown_statuses_are_none_not_errors() -> None:
    state = AsyncRequestState.model_validate({"request_id": "r1", "status": "PAUSED"})
    assert state.known_status is None
    assert Deployment.model_validate({"id": "d1", "status": "HIBERNATING"}).known_status is None


def test_state_keeps_unknown_fields_and_its_manifest_is_json() -> None:
    body = {
        "request_id": "r1",
        "model_id": "m1",
        "deployment_id": "d1",
        "status": "FAILED",
        "webhook_status": "NO_WEBHOOK_PROVIDED",
        "created_at": "2026-01-01T00:00:00Z",
        "status_at": "2026-01-01T00:01:00Z",
        "errors": [{"code": "MODEL_PREDICT_ERROR", "message": "boom"}],
        "new_field": 1,
    }
    state = AsyncRequestState.model_validate(body)
    assert state.known_status is AsyncRequestStatus.FAILED
    manifest = state.manifest()
    assert manifest["errors"] == [{"code": "MODEL_PREDICT_ERROR", "message": "boom"}]
    assert manifest["new_field"] == 1
    assert manifest["chain_id"] is None


def test_environment_carries_its_current_deployment() -> None:
    env = Environment.model_validate({"name": "staging", "current_deployment": {"id": "d1", "status": "ACTIVE"}})
    assert env.current_deployment is not None
    assert env.current_deployment.known_status is DeploymentStatus.ACTIVE


# --- AsyncPredictRequest -------------------------------------------------------------------------------------


def request(**fields: Any) -> AsyncPredictRequest:
    return AsyncPredictRequest.model_validate({"model_input": {"text": "hi"}, **fields})


def test_defaults_match_the_spec() -> None:
    r = request()
    assert (r.priority, r.max_time_in_queue_seconds, r.webhook_endpoint, r.inference_retry_config) == (
        0,
        600,
        None,
        None,
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"priority": 0},
        {"priority": 2},
        {"max_time_in_queue_seconds": 10},
        {"max_time_in_queue_seconds": 259_200},
        {"inference_retry_config": {"max_attempts": 1, "initial_delay_ms": 0, "max_delay_ms": 0}},
        {"inference_retry_config": {"max_attempts": 10, "initial_delay_ms": 10_000, "max_delay_ms": 60_000}},
        {"webhook_endpoint": "https://hooks.example.com/baseten"},
        {"webhook_endpoint": "http://localhost:8080/hook"},
        {"webhook_endpoint": "http://127.0.0.1/hook"},
        {"webhook_endpoint": "http://[::1]:9000/hook"},
    ],
)
def test_valid_fields(fields: dict[str, Any]) -> None:
    request(**fields)


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"priority": -1}, "priority"),
        ({"priority": 3}, "priority"),
        ({"max_time_in_queue_seconds": 9}, "max_time_in_queue_seconds"),
        ({"max_time_in_queue_seconds": 259_201}, "max_time_in_queue_seconds"),
        ({"inference_retry_config": {"max_attempts": 0}}, "max_attempts"),
        ({"inference_retry_config": {"max_attempts": 11}}, "max_attempts"),
        ({"inference_retry_config": {"initial_delay_ms": -1}}, "initial_delay_ms"),
        ({"inference_retry_config": {"initial_delay_ms": 10_001}}, "initial_delay_ms"),
        ({"inference_retry_config": {"max_delay_ms": 60_001}}, "max_delay_ms"),
        ({"inference_retry_config": {"retries": 3}}, "retries"),
        ({"webhook_endpoint": "http://hooks.example.com/baseten"}, "webhook_endpoint"),
        ({"webhook_endpoint": "http://localhost.evil.com/hook"}, "webhook_endpoint"),
        ({"webhook_endpoint": "ftp://hooks.example.com/x"}, "webhook_endpoint"),
        ({"webhook_endpoint": "hooks.example.com/x"}, "webhook_endpoint"),
        ({"webhook_endpoint": "https://"}, "webhook_endpoint"),
        ({"callback": "https://x"}, "callback"),
        ({"model_input": "not an object"}, "model_input"),
    ],
)
def test_invalid_fields(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError, match=where):
        request(**fields)


def test_model_input_is_required() -> None:
    with pytest.raises(ValidationError, match="model_input"):
        AsyncPredictRequest.model_validate({})


@pytest.mark.parametrize("url", ["https://a.example/x", "http://localhost/x"])
def test_check_webhook_endpoint_accepts(url: str) -> None:
    check_webhook_endpoint(url)


@pytest.mark.parametrize("url", ["http://a.example/x", "", "javascript:alert(1)"])
def test_check_webhook_endpoint_refuses(url: str) -> None:
    with pytest.raises(ValueError, match="https"):
        check_webhook_endpoint(url)

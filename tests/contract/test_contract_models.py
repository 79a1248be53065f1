"""The payload models agree with the specs: enums equal, request ranges equal, documented responses parse."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import pytest
from openapi_contract import Spec
from pydantic import BaseModel, ValidationError

from airflow_provider_baseten.hooks.baseten import encode_json
from airflow_provider_baseten.hooks.models import (
    AsyncErrorCode,
    AsyncPredictRequest,
    AsyncQueueStatus,
    AsyncRequestError,
    AsyncRequestState,
    AsyncRequestStatus,
    AsyncSubmitResponse,
    CancelAsyncResponse,
    Deployment,
    DeploymentStatus,
    Environment,
    ErrorCode,
    ErrorResponse,
    InferenceRetryConfig,
    UserInfo,
    WebhookStatus,
)

pytestmark = pytest.mark.contract


# --- enums -----------------------------------------------------------------------------------------------------

ENUMS: list[tuple[type[StrEnum], str, tuple[str, ...]]] = [
    (AsyncRequestStatus, "inference", ("AsyncRequestStatusResponse", "status")),
    (WebhookStatus, "inference", ("AsyncRequestStatusResponse", "webhook_status")),
    (AsyncErrorCode, "inference", ("AsyncRequestError", "code")),
    (ErrorCode, "inference", ("ErrorResponse", "error_code")),
    (DeploymentStatus, "management", ("DeploymentStatusV1",)),
]


@pytest.fixture
def specs(inference_spec: Spec, management_spec: Spec) -> dict[str, Spec]:
    return {"inference": inference_spec, "management": management_spec}


@pytest.mark.parametrize(("enum", "which", "where"), ENUMS, ids=[e[0].__name__ for e in ENUMS])
def test_enum_equals_the_spec(specs: dict[str, Spec], enum: type[StrEnum], which: str, where: tuple[str, ...]) -> None:
    schema = specs[which].schema(where[0])
    for name in where[1:]:
        schema = specs[which].resolve(schema["properties"][name])
    assert sorted(member.value for member in enum) == sorted(schema["enum"])


# --- request bodies --------------------------------------------------------------------------------------------


def sent_body(request: AsyncPredictRequest) -> Any:
    """The JSON the hook sends for ``request`` (as ``BasetenHook.async_predict`` serialises it)."""
    import json

    return json.loads(encode_json(request.model_dump(mode="json", exclude_none=True)))


def async_request_schema(spec: Spec) -> dict[str, Any]:
    operation = spec.match("POST", "/production/async_predict")
    assert operation is not None
    schema = spec.request_schema(operation.operation)
    assert schema is not None
    return schema


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"priority": 0, "max_time_in_queue_seconds": 10},
        {"priority": 2, "max_time_in_queue_seconds": 259_200},
        {"webhook_endpoint": "https://hooks.example.com/baseten"},
        {"inference_retry_config": {}},
        {"inference_retry_config": {"max_attempts": 1, "initial_delay_ms": 0, "max_delay_ms": 0}},
        {"inference_retry_config": {"max_attempts": 10, "initial_delay_ms": 10_000, "max_delay_ms": 60_000}},
        {
            "webhook_endpoint": "https://hooks.example.com/baseten",
            "priority": 1,
            "max_time_in_queue_seconds": 3600,
            "inference_retry_config": {"max_attempts": 4, "initial_delay_ms": 250, "max_delay_ms": 9000},
        },
    ],
)
def test_async_request_body_validates(inference_spec: Spec, fields: dict[str, Any]) -> None:
    request = AsyncPredictRequest.model_validate({"model_input": {"text": "hi", "n": [1, 2]}, **fields})
    assert inference_spec.errors(async_request_schema(inference_spec), sent_body(request)) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"priority": -1},
        {"priority": 3},
        {"max_time_in_queue_seconds": 9},
        {"max_time_in_queue_seconds": 259_201},
        {"inference_retry_config": {"max_attempts": 0}},
        {"inference_retry_config": {"max_attempts": 11}},
        {"inference_retry_config": {"initial_delay_ms": -1}},
        {"inference_retry_config": {"initial_delay_ms": 10_001}},
        {"inference_retry_config": {"max_delay_ms": -1}},
        {"inference_retry_config": {"max_delay_ms": 60_001}},
        {"model_input": ["not", "an", "object"]},
    ],
)
def test_out_of_range_is_refused_by_both(inference_spec: Spec, fields: dict[str, Any]) -> None:
    """Ranges agree: whatever the spec refuses, the model refuses before sending."""
    body = {"model_input": {"text": "hi"}, **fields}
    assert inference_spec.errors(async_request_schema(inference_spec), body) != []
    with pytest.raises(ValidationError):
        AsyncPredictRequest.model_validate(body)


@pytest.mark.parametrize(
    ("model", "schema"),
    [(AsyncPredictRequest, "AsyncPredictRequest"), (InferenceRetryConfig, "InferenceRetryConfig")],
)
def test_request_model_fields_and_defaults_match_the_spec(
    inference_spec: Spec, model: type[BaseModel], schema: str
) -> None:
    spec_schema = inference_spec.schema(schema)
    properties = spec_schema["properties"]
    assert set(model.model_fields) == set(properties)
    required = {name for name, field in model.model_fields.items() if field.is_required()}
    assert required == set(spec_schema.get("required", []))
    for name, field in model.model_fields.items():
        if "default" in properties[name]:
            assert field.default == properties[name]["default"], name


# --- responses -------------------------------------------------------------------------------------------------

# model -> (spec, schema name, or the operation whose response it parses)
RESPONSES: list[tuple[type[BaseModel], str, tuple[str, str, str]]] = [
    (AsyncSubmitResponse, "inference", ("POST", "/production/async_predict", "201")),
    (AsyncRequestState, "inference", ("GET", "/async_request/r1", "200")),
    (CancelAsyncResponse, "inference", ("DELETE", "/async_request/r1", "200")),
    (AsyncQueueStatus, "inference", ("GET", "/production/async_queue_status", "200")),
    (Deployment, "management", ("GET", "/v1/models/m1/deployments/production", "200")),
    (Environment, "management", ("GET", "/v1/models/m1/environments/staging", "200")),
    (UserInfo, "management", ("GET", "/v1/users/me", "200")),
]
SCHEMAS: list[tuple[type[BaseModel], str, str]] = [
    (AsyncRequestError, "inference", "AsyncRequestError"),
    (ErrorResponse, "inference", "ErrorResponse"),
]


def response_schema(spec: Spec, method: str, path: str, status: str) -> dict[str, Any]:
    found = spec.match(method, path)
    assert found is not None, f"{method} {path}"
    schema = spec.response_schema(found.operation, status)
    assert schema is not None
    return spec.resolve(schema)


def all_response_cases(specs_names: bool = False) -> list[Any]:
    cases = [pytest.param(model, which, ("op", *operation), id=model.__name__) for model, which, operation in RESPONSES]
    cases += [pytest.param(model, which, ("schema", name), id=model.__name__) for model, which, name in SCHEMAS]
    return cases


def schema_of(specs: dict[str, Spec], which: str, where: tuple[str, ...]) -> dict[str, Any]:
    spec = specs[which]
    if where[0] == "op":
        return response_schema(spec, *where[1:])
    return spec.schema(where[1])


@pytest.mark.parametrize(("model", "which", "where"), all_response_cases())
@pytest.mark.parametrize("shape", ["minimal", "full"])
def test_documented_response_shapes_parse(
    specs: dict[str, Spec], model: type[BaseModel], which: str, where: tuple[str, ...], shape: str
) -> None:
    """A spec-valid body (only required fields with nulls where allowed, or every field) parses."""
    spec = specs[which]
    schema = schema_of(specs, which, where)
    example = spec.example(schema, nullable=shape == "minimal")
    assert spec.errors(schema, example) == []  # the generator makes documented shapes
    parsed = model.model_validate(example)
    for name in model.model_fields:
        if name in example and not isinstance(example[name], dict | list):
            assert getattr(parsed, name) == example[name], name


@pytest.mark.parametrize(("model", "which", "where"), all_response_cases())
def test_model_requires_nothing_the_spec_leaves_optional(
    specs: dict[str, Spec], model: type[BaseModel], which: str, where: tuple[str, ...]
) -> None:
    schema = schema_of(specs, which, where)
    required = {name for name, field in model.model_fields.items() if field.is_required()}
    assert required <= set(schema.get("required", []))
    assert set(model.model_fields) - set(schema.get("properties", {})) == set(), "fields the spec does not have"


def test_status_of_a_chain_request_parses(inference_spec: Spec) -> None:
    schema = response_schema(inference_spec, "GET", "/async_request/r1", "200")
    body = {
        "request_id": "r1",
        "chain_id": "c1",
        "deployment_id": "d1",
        "status": "WEBHOOK_FAILED",
        "webhook_status": "FAILED",
        "created_at": "2026-01-01T00:00:00Z",
        "status_at": "2026-01-01T00:00:00Z",
        "errors": [{"code": "MODEL_PREDICT_ERROR", "message": "boom"}],
    }
    assert inference_spec.errors(schema, body) == []
    state = AsyncRequestState.model_validate(body)
    assert (state.chain_id, state.known_status) == ("c1", AsyncRequestStatus.WEBHOOK_FAILED)

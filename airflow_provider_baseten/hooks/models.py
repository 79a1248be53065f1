"""Baseten's payloads as pydantic models, mirroring the OpenAPI specs (contract tests compare them with the specs in
``../shared/reference/baseten``).

The status enums and what each status means live in :mod:`~airflow_provider_baseten.hooks.statuses`, re-exported
here: a module that needs only a status imports that one and skips building these models. Models use
``defer_build`` so importing this module (at DAG-parse time, through the hook) stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Re-exported: this module stays the import path of every payload and status (the statuses live apart, cheap).
from airflow_provider_baseten.hooks.statuses import (  # noqa: F401
    AsyncErrorCode,
    AsyncRequestStatus,
    CancelPromotionStatus,
    DeploymentStatus,
    ErrorCode,
    PromotionStatus,
    Readiness,
    UpdateAutoscalingStatus,
    WebhookStatus,
    readiness_after_wake,
)

ASYNC_PAYLOAD_LIMIT_BYTES = 256 * 1024
"""Baseten's per-organization limit for an async request body (413 beyond)."""


class _Payload(BaseModel):
    """Responses keep unknown fields (Baseten adds fields over time); requests forbid them."""

    model_config = ConfigDict(extra="allow", defer_build=True)


EnumT = TypeVar("EnumT", bound=StrEnum)


def _known(enum: type[EnumT], value: str) -> EnumT | None:
    """``value`` as a member of ``enum``, or ``None`` for a value this provider does not know."""
    try:
        return enum(value)
    except ValueError:
        return None


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


# --- async inference -------------------------------------------------------------------------------------------


class InferenceRetryConfig(_Request):
    """How Baseten retries the model's 500/502/503/504 for one async request."""

    max_attempts: int = Field(default=3, ge=1, le=10)
    initial_delay_ms: int = Field(default=1000, ge=0, le=10_000)
    max_delay_ms: int = Field(default=5000, ge=0, le=60_000)


class AsyncPredictRequest(_Request):
    """Body of ``async_predict`` and ``async_run_remote``."""

    model_config = ConfigDict(extra="forbid", defer_build=True, protected_namespaces=())

    model_input: dict[str, Any]
    webhook_endpoint: str | None = None
    priority: int = Field(default=0, ge=0, le=2)
    max_time_in_queue_seconds: int = Field(default=600, ge=10, le=259_200)
    inference_retry_config: InferenceRetryConfig | None = None

    @field_validator("webhook_endpoint")
    @classmethod
    def _https_or_local(cls, value: str | None) -> str | None:
        if value is not None:
            check_webhook_endpoint(value)
        return value


def check_webhook_endpoint(url: str) -> None:
    """Baseten delivers webhooks over HTTPS only; plain http is accepted for localhost during development."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    local = parts.hostname in {"localhost", "127.0.0.1", "::1"}
    if not parts.hostname or parts.scheme not in ("https", "http") or (parts.scheme == "http" and not local):
        raise ValueError(f"webhook_endpoint {url!r} must be an https:// URL (http:// only for localhost)")


class AsyncSubmitResponse(_Payload):
    request_id: str


class AsyncRequestError(_Payload):
    code: str
    message: str


class AsyncRequestState(_Payload):
    """``GET /async_request/{id}``: status only; Baseten never returns the prediction here."""

    model_config = ConfigDict(extra="allow", defer_build=True, protected_namespaces=())

    request_id: str
    model_id: str | None = None
    chain_id: str | None = None
    deployment_id: str | None = None
    status: str
    webhook_status: str | None = None
    created_at: str | None = None
    status_at: str | None = None
    errors: list[AsyncRequestError] = Field(default_factory=list)

    @property
    def known_status(self) -> AsyncRequestStatus | None:
        """The status as an enum, or ``None`` for a value this provider does not know (treated as a failure)."""
        try:
            return AsyncRequestStatus(self.status)
        except ValueError:
            return None

    def manifest(self) -> dict[str, Any]:
        """The small JSON record operators and the sensor return (never the prediction)."""
        return self.model_dump(mode="json", exclude_none=False)


class CancelAsyncResponse(_Payload):
    request_id: str
    canceled: bool
    message: str = ""


class AsyncQueueStatus(_Payload):
    model_config = ConfigDict(extra="allow", defer_build=True, protected_namespaces=())

    model_id: str | None = None
    deployment_id: str | None = None
    num_queued_requests: int
    num_in_progress_requests: int


class ErrorResponse(_Payload):
    error: str | None = None
    error_code: str | None = None
    detail: str | None = None


# --- management API --------------------------------------------------------------------------------------------


AUTOSCALING_FIELDS: tuple[str, ...] = (
    "min_replica",
    "max_replica",
    "autoscaling_window",
    "scale_down_delay",
    "concurrency_target",
    "target_utilization_percentage",
    "target_in_flight_tokens",
    "max_scale_down_rate",
)
"""The fields of ``UpdateAutoscalingSettingsV1``: only the ones sent change."""


class AutoscalingSettings(_Payload):
    """``AutoscalingSettingsV1``: a deployment's or environment's current autoscaling values."""

    min_replica: int
    max_replica: int
    autoscaling_window: int | None = None
    scale_down_delay: int | None = None
    concurrency_target: int | None = None
    target_utilization_percentage: int | None = None
    target_in_flight_tokens: int | None = None
    max_scale_down_rate: int | None = None

    def values(self, fields: Iterable[str]) -> dict[str, Any]:
        """The current values of ``fields`` (those a window changes), as they would be sent back."""
        return {name: getattr(self, name, None) for name in fields}


class UpdateAutoscalingSettings(_Request):
    """``UpdateAutoscalingSettingsV1``: every field optional; only those set are sent (and changed)."""

    min_replica: int | None = Field(default=None, ge=0)
    max_replica: int | None = Field(default=None, ge=0)
    autoscaling_window: int | None = Field(default=None, ge=0)
    scale_down_delay: int | None = Field(default=None, ge=0)
    concurrency_target: int | None = Field(default=None, ge=1)
    target_utilization_percentage: int | None = Field(default=None, ge=1, le=100)
    target_in_flight_tokens: int | None = Field(default=None, ge=1)
    max_scale_down_rate: int | None = Field(default=None, ge=1, le=50)

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class UpdateAutoscalingResponse(_Payload):
    """``{status, message}``: how Baseten took an autoscaling update (and, as a subclass, a promotion cancel)."""

    status: str
    message: str = ""


class InProgressPromotion(_Payload):
    """``InProgressPromotionV1``."""

    status: str
    percent_traffic_to_new_version: int = 0
    error_message: str | None = None
    rolling_deploy: bool | None = None

    @property
    def known_status(self) -> PromotionStatus | None:
        return _known(PromotionStatus, self.status)


class CancelPromotionResponse(UpdateAutoscalingResponse):
    """``CancelPromotionResponseV1``: ``CANCELED``, or ``RAMPING_DOWN`` on the way there."""


class SignalPromotionResponse(_Payload):
    success: bool


class Deployment(_Payload):
    """``DeploymentV1`` (the fields a waiter needs; the rest are kept as extras)."""

    model_config = ConfigDict(extra="allow", defer_build=True, protected_namespaces=())

    id: str
    name: str | None = None
    model_id: str | None = None
    status: str
    active_replica_count: int | None = None
    environment: str | None = None
    is_production: bool | None = None
    is_development: bool | None = None
    autoscaling_settings: AutoscalingSettings | None = None

    @property
    def known_status(self) -> DeploymentStatus | None:
        return _known(DeploymentStatus, self.status)


class Environment(_Payload):
    """``EnvironmentV1``: a named environment and the deployment it currently serves."""

    model_config = ConfigDict(extra="allow", defer_build=True, protected_namespaces=())

    name: str
    model_id: str | None = None
    current_deployment: Deployment | None = None
    candidate_deployment: Deployment | None = None
    in_progress_promotion: InProgressPromotion | None = None
    autoscaling_settings: AutoscalingSettings | None = None


class Chainlet(_Payload):
    """``ChainletV1``: one chainlet of a chain deployment, with its own status and replicas."""

    id: str
    name: str
    status: str
    active_replica_count: int | None = None
    autoscaling_settings: AutoscalingSettings | None = None


class ChainDeployment(_Payload):
    """``ChainDeploymentV1``: a chain deployment's status and its chainlets."""

    id: str
    chain_id: str | None = None
    environment: str | None = None
    status: str
    chainlets: list[Chainlet] = Field(default_factory=list)

    @property
    def known_status(self) -> DeploymentStatus | None:
        return _known(DeploymentStatus, self.status)


class ChainEnvironment(_Payload):
    """``ChainEnvironmentV1``."""

    name: str
    chain_id: str | None = None
    current_deployment: ChainDeployment | None = None
    candidate_deployment: ChainDeployment | None = None


class UserInfo(_Payload):
    user_id: str
    email: str | None = None
    name: str | None = None
    workspace_name: str | None = None


# --- chat completions (OpenAI-compatible) ----------------------------------------------------------------------


class ChatMessage(_Payload):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Any = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class ChatCompletionRequest(BaseModel):
    """The fields this provider knows; anything else a caller passes goes through unchanged."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    model: str
    messages: list[ChatMessage]
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None


class ChatChoice(_Payload):
    index: int = 0
    message: ChatMessage
    finish_reason: str | None = None


class Usage(_Payload):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletion(_Payload):
    id: str | None = None
    object: str | None = None
    created: int | None = None
    model: str | None = None
    choices: list[ChatChoice]
    usage: Usage | None = None


class ModelAPIModel(_Payload):
    id: str
    object: str | None = None
    owned_by: str | None = None

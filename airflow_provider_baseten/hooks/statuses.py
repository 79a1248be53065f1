"""Baseten's status enums and what each status means, decided here once, next to its enum.

Operators, sensors and triggers ask these helpers instead of comparing strings of their own; contract tests compare
every enum with the specs in ``../shared/reference/baseten``. No pydantic here: a DAG file that only needs a status
(the wake and async operators, at parse time) does not pay for building the payload models of
:mod:`~airflow_provider_baseten.hooks.models`, which re-exports every name of this module.
"""

from __future__ import annotations

from enum import StrEnum


class AsyncRequestStatus(StrEnum):
    """``status`` of ``GET /async_request/{id}``."""

    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    CANCELED = "CANCELED"
    WEBHOOK_FAILED = "WEBHOOK_FAILED"

    @property
    def is_pending(self) -> bool:
        return self in (AsyncRequestStatus.QUEUED, AsyncRequestStatus.IN_PROGRESS)

    @property
    def is_terminal(self) -> bool:
        return not self.is_pending


class WebhookStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    NO_WEBHOOK_PROVIDED = "NO_WEBHOOK_PROVIDED"


class AsyncErrorCode(StrEnum):
    MODEL_PREDICT_ERROR = "MODEL_PREDICT_ERROR"
    MODEL_PREDICT_TIMEOUT = "MODEL_PREDICT_TIMEOUT"
    MODEL_NOT_READY = "MODEL_NOT_READY"
    MODEL_DOES_NOT_EXIST = "MODEL_DOES_NOT_EXIST"
    MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"
    MODEL_INVALID_INPUT = "MODEL_INVALID_INPUT"
    ASYNC_REQUEST_NOT_SUPPORTED = "ASYNC_REQUEST_NOT_SUPPORTED"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"


class ErrorCode(StrEnum):
    """``error_code`` of Baseten's ``ErrorResponse``."""

    TIMEOUT = "timeout"
    CLIENT_ERROR = "client_error"
    MODEL_UNAVAILABLE = "model_unavailable"
    MODEL_NOT_READY = "model_not_ready"
    MODEL_DOES_NOT_EXIST = "model_does_not_exist"
    RATE_LIMITED = "rate_limited"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNAUTHORIZED = "unauthorized"
    APPLICATION_ERROR = "application_error"
    INTERNAL_BASETEN_ERROR = "internal_baseten_error"


class Readiness(StrEnum):
    """What a deployment status means for a caller waiting to send traffic."""

    READY = "ready"
    PENDING = "pending"
    FAILED = "failed"
    INACTIVE = "inactive"
    UNHEALTHY = "unhealthy"


class DeploymentStatus(StrEnum):
    """``DeploymentStatusV1`` of the management API."""

    BUILDING = "BUILDING"
    DEPLOYING = "DEPLOYING"
    DEPLOY_FAILED = "DEPLOY_FAILED"
    LOADING_MODEL = "LOADING_MODEL"
    ACTIVE = "ACTIVE"
    UNHEALTHY = "UNHEALTHY"
    BUILD_FAILED = "BUILD_FAILED"
    BUILD_STOPPED = "BUILD_STOPPED"
    DEACTIVATING = "DEACTIVATING"
    INACTIVE = "INACTIVE"
    FAILED = "FAILED"
    UPDATING = "UPDATING"
    SCALED_TO_ZERO = "SCALED_TO_ZERO"
    WAKING_UP = "WAKING_UP"

    @property
    def readiness(self) -> Readiness:
        return _READINESS[self]


_READINESS: dict[DeploymentStatus, Readiness] = {
    DeploymentStatus.ACTIVE: Readiness.READY,
    DeploymentStatus.SCALED_TO_ZERO: Readiness.PENDING,
    DeploymentStatus.WAKING_UP: Readiness.PENDING,
    DeploymentStatus.LOADING_MODEL: Readiness.PENDING,
    DeploymentStatus.DEPLOYING: Readiness.PENDING,
    DeploymentStatus.BUILDING: Readiness.PENDING,
    DeploymentStatus.UPDATING: Readiness.PENDING,
    DeploymentStatus.BUILD_FAILED: Readiness.FAILED,
    DeploymentStatus.BUILD_STOPPED: Readiness.FAILED,
    DeploymentStatus.DEPLOY_FAILED: Readiness.FAILED,
    DeploymentStatus.FAILED: Readiness.FAILED,
    DeploymentStatus.INACTIVE: Readiness.INACTIVE,
    DeploymentStatus.DEACTIVATING: Readiness.INACTIVE,
    DeploymentStatus.UNHEALTHY: Readiness.UNHEALTHY,
}


def readiness_after_wake(
    status: str,
    *,
    seconds_since_wake: float,
    stale_read_grace: float,
    activated: bool = False,
) -> Readiness | None:
    """What a status read after a wake means to a caller waiting for ``ACTIVE``; ``None`` for an unknown status.

    Like :attr:`DeploymentStatus.readiness`, except that the first reads after a wake may be stale:

    - ``SCALED_TO_ZERO`` is pending within ``stale_read_grace`` seconds of the wake; later it means the wake did not
      take (nothing else wakes the deployment while a trigger only reads), so it is a failure.
    - ``INACTIVE``/``DEACTIVATING`` is pending within the grace period when the caller activated the deployment just
      before waking it (the activation may not show yet); otherwise it stays :attr:`Readiness.INACTIVE`.
    """
    try:
        known = DeploymentStatus(status)
    except ValueError:
        return None
    readiness = known.readiness
    within_grace = seconds_since_wake <= stale_read_grace
    if known is DeploymentStatus.SCALED_TO_ZERO and not within_grace:
        return Readiness.FAILED
    if readiness is Readiness.INACTIVE and activated and within_grace:
        return Readiness.PENDING
    return readiness


class UpdateAutoscalingStatus(StrEnum):
    """``UpdateAutoscalingSettingsStatusV1``."""

    ACCEPTED = "ACCEPTED"
    QUEUED = "QUEUED"
    UNCHANGED = "UNCHANGED"


class PromotionStatus(StrEnum):
    """``InProgressPromotionStatusV1``: where a promotion is, and what it means to a caller waiting on it."""

    RELEASING = "RELEASING"
    RAMPING_UP = "RAMPING_UP"
    RAMPING_DOWN = "RAMPING_DOWN"
    PAUSED = "PAUSED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def is_pending(self) -> bool:
        """Still moving (``PAUSED`` too: a paused promotion waits for a resume, it has not ended)."""
        return self not in (PromotionStatus.SUCCEEDED, PromotionStatus.FAILED, PromotionStatus.CANCELED)


class CancelPromotionStatus(StrEnum):
    CANCELED = "CANCELED"
    RAMPING_DOWN = "RAMPING_DOWN"

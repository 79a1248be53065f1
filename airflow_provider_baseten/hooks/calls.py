"""What one call is (method, endpoint, idempotency) and what it answered: shared by the hook and its mixins.

Light on purpose (no pydantic, no httpx): operators import :data:`ResponseFormat` from here at DAG-parse time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

from airflow_provider_baseten.exceptions import BasetenConfigError, BasetenModelError
from airflow_provider_baseten.hooks.addressing import Endpoint

if TYPE_CHECKING:
    from pydantic import BaseModel

    from airflow_provider_baseten.hooks.retry_budget import RetryBudget

ModelT = TypeVar("ModelT", bound="BaseModel")
#: How a predict or chain run returns the model's answer: parsed JSON (strict), text, or bytes.
ResponseFormat = Literal["json", "text", "bytes"]
RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)
REQUEST_ID_HEADER = "x-baseten-request-id"
CUSTOMER_REQUEST_ID_HEADER = "x-baseten-customer-request-id"
_ERROR_BODY_LIMIT = 500


@dataclass(frozen=True)
class BasetenResult:
    """A JSON (or text) answer with the ``X-BASETEN-REQUEST-ID`` Baseten gave it."""

    data: Any
    request_id: str | None = None
    status_code: int = 200


@dataclass(frozen=True)
class _Call:
    """One logical call: what it is, where it goes, and whether sending it twice is harmless."""

    method: str
    endpoint: Endpoint
    what: str
    idempotent: bool
    json_body: Any = None
    read_timeout: float | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    retry_budget: RetryBudget | None = None
    """A batch-wide budget every retry of this call (but rate-limit ones) must take from."""


def check_response_format(value: object) -> ResponseFormat:
    """Return ``value`` if it is a :data:`ResponseFormat`; :class:`BasetenConfigError` otherwise."""
    if value not in RESPONSE_FORMATS:
        raise BasetenConfigError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {value!r}.")
    return value  # type: ignore[return-value]


def encode_json(body: Any) -> bytes:
    """The exact bytes sent for a JSON body (compact UTF-8), so a size check measures what goes on the wire.

    NaN, infinities and values JSON cannot express fail here with :class:`BasetenConfigError`, before any request.
    """
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as err:
        raise BasetenConfigError(f"The request body cannot be sent as JSON: {err}.") from None


def _validated(model: type[ModelT], data: Any, what: str) -> ModelT:
    """``model.model_validate(data)``, failing as a BasetenModelError that names the bad fields (not their values)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as err:
        fields = ", ".join(sorted({".".join(map(str, error["loc"])) or "(body)" for error in err.errors()}))
        raise BasetenModelError(f"{what}: the answer is not a valid {model.__name__} (check: {fields}).") from None


def _truncate(text: str, limit: int = _ERROR_BODY_LIMIT) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"

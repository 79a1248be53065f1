"""Verify Baseten's async webhook deliveries in your own receiver (no Airflow machinery needed at run time).

Baseten signs each delivery with the workspace's webhook secret: ``X-BASETEN-SIGNATURE: v1=<hex hmac-sha256 of the raw
body>``, with several comma-separated ``v1=`` values while a secret is being rotated. The body is
``{request_id, model_id, deployment_id, type: "async_request_completed", time, data, errors}``.

Example (any web framework; read the *raw* body before parsing it)::

    from airflow_provider_baseten.webhooks import WebhookVerificationError, verify_webhook_signature

    try:
        payload = verify_webhook_signature(raw_body, headers.get("X-BASETEN-SIGNATURE"), [current, previous])
    except WebhookVerificationError:
        return 401
    store(payload["request_id"], payload["data"])  # the output: Baseten does not keep it anywhere else
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

__all__ = ["SIGNATURE_HEADER", "WebhookVerificationError", "verify_webhook_signature"]

SIGNATURE_HEADER = "X-BASETEN-SIGNATURE"


class WebhookVerificationError(ValueError):
    """The delivery is not authentic (no or wrong signature) or too old (replay); reject it."""


def _signatures(header: str | None) -> list[bytes]:
    values = []
    for part in (header or "").split(","):
        scheme, _, value = part.strip().partition("=")
        if scheme.strip() == "v1" and value.strip():
            values.append(value.strip().lower().encode("utf-8", "replace"))
    return values


def _timestamp(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            return None  # no zone: ambiguous, so not trusted
        return when.timestamp()
    return None


def verify_webhook_signature(
    body: bytes | str,
    signature_header: str | None,
    secrets: str | Sequence[str],
    *,
    tolerance_s: float | None = 300,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a delivery's signature and age; return the parsed payload.

    Every expected signature (one per secret, so a receiver can accept the old and the new secret during rotation)
    is compared in constant time with every ``v1=`` value of the header; all comparisons run, whatever matches.
    Only then is the body parsed, and its ``time`` must be within ``tolerance_s`` seconds of ``now`` (either way,
    to bound replays and clock skew); ``tolerance_s=None`` skips that check.

    :param body: the raw request body, exactly as received.
    :param signature_header: the ``X-BASETEN-SIGNATURE`` header value.
    :param secrets: the webhook secret, or several (rotation).
    :param tolerance_s: the accepted age of the payload's ``time`` in seconds (default 300).
    :param now: the current epoch time (tests).
    :raises WebhookVerificationError: missing or wrong signature, unparseable body, missing or stale ``time``.
    :raises ValueError: no secret given (a configuration error, not a bad delivery).
    """
    secret_list = [secrets] if isinstance(secrets, str) else list(secrets)
    keys = [secret.encode() for secret in secret_list if secret]
    if not keys:
        raise ValueError("verify_webhook_signature needs at least one non-empty webhook secret.")
    raw = body.encode() if isinstance(body, str) else bytes(body)
    received = _signatures(signature_header)
    if not received:
        raise WebhookVerificationError(f"No v1= signature in the {SIGNATURE_HEADER} header.")
    expected = [hmac.new(key, raw, hashlib.sha256).hexdigest().encode() for key in keys]
    matched = False
    for want in expected:
        for got in received:
            matched |= hmac.compare_digest(want, got)
    if not matched:
        raise WebhookVerificationError("The webhook signature does not match the body for any configured secret.")
    try:
        payload = json.loads(raw)
    except ValueError:
        raise WebhookVerificationError("The signed webhook body is not JSON.") from None
    if not isinstance(payload, dict):
        raise WebhookVerificationError("The signed webhook body is not a JSON object.")
    if tolerance_s is not None:
        sent_at = _timestamp(payload.get("time"))
        if sent_at is None:
            raise WebhookVerificationError("The webhook payload has no valid 'time' (ISO 8601 with a zone).")
        age = (time.time() if now is None else now) - sent_at
        if abs(age) > tolerance_s:
            raise WebhookVerificationError(
                f"The webhook payload's time is {age:.0f} s from now, outside the {tolerance_s:.0f} s tolerance "
                "(a replay, or a clock that is off)."
            )
    return payload

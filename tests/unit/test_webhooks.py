"""verify_webhook_signature: every v1= value, every secret, constant-time compares, the time tolerance."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
from typing import Any

import pytest

from airflow_provider_baseten import webhooks
from airflow_provider_baseten.webhooks import WebhookVerificationError, verify_webhook_signature

NOW = 1_712_089_993.0  # 2024-04-02T20:33:13Z
SECRET = "whsec_current"
OLD_SECRET = "whsec_previous"


def body(**overrides: Any) -> bytes:
    payload = {
        "request_id": "req1",
        "model_id": "abc123",
        "deployment_id": "dep1",
        "type": "async_request_completed",
        "time": "2024-04-02T20:33:13.409144Z",
        "data": {"label": "positive"},
        "errors": [],
        **overrides,
    }
    return json.dumps(payload).encode()


def sign(raw: bytes, secret: str = SECRET) -> str:
    return "v1=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def test_valid_signature_returns_the_payload() -> None:
    raw = body()
    payload = verify_webhook_signature(raw, sign(raw), SECRET, now=NOW)
    assert payload["request_id"] == "req1"
    assert payload["data"] == {"label": "positive"}


def test_str_body_and_uppercase_hex_are_accepted() -> None:
    raw = body()
    header = sign(raw).upper().replace("V1=", "v1=")
    assert verify_webhook_signature(raw.decode(), header, SECRET, now=NOW)["request_id"] == "req1"


@pytest.mark.parametrize("position", [0, 1, 2])
def test_any_of_several_v1_values_matches_during_rotation(position: int) -> None:
    raw = body()
    values = [sign(raw, "other-1"), sign(raw, "other-2"), sign(raw, "other-3")]
    values[position] = sign(raw)
    assert verify_webhook_signature(raw, ", ".join(values), SECRET, now=NOW)


def test_receiver_side_rotation_accepts_old_and_new_secret() -> None:
    raw = body()
    assert verify_webhook_signature(raw, sign(raw, OLD_SECRET), [SECRET, OLD_SECRET], now=NOW)


def test_every_comparison_runs_even_after_a_match(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(webhooks.hmac, "compare_digest", counting)
    raw = body()
    header = ",".join([sign(raw), sign(raw, "x"), sign(raw, "y")])
    verify_webhook_signature(raw, header, [SECRET, OLD_SECRET], now=NOW)
    assert len(calls) == 2 * 3  # every secret against every v1= value, whatever matched first


@pytest.mark.parametrize(
    "header",
    [None, "", "v0=abc", "t=123", sign(body(), "wrong-secret"), "v1=" + "0" * 64, "v1=not-hex-ü"],
    ids=["none", "empty", "other-scheme", "no-v1", "wrong-secret", "zeros", "garbage"],
)
def test_bad_or_missing_signature_is_rejected(header: str | None) -> None:
    with pytest.raises(WebhookVerificationError):
        verify_webhook_signature(body(), header, SECRET, now=NOW)


def test_tampered_body_is_rejected() -> None:
    raw = body()
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify_webhook_signature(body(data={"label": "negative"}), sign(raw), SECRET, now=NOW)


@pytest.mark.parametrize(("offset", "ok"), [(0, True), (299, True), (-299, True), (301, False), (-301, False)])
def test_time_tolerance(offset: float, ok: bool) -> None:
    raw = body()
    if ok:
        verify_webhook_signature(raw, sign(raw), SECRET, now=NOW + offset)
    else:
        with pytest.raises(WebhookVerificationError, match="tolerance"):
            verify_webhook_signature(raw, sign(raw), SECRET, now=NOW + offset)


def test_custom_tolerance_and_epoch_time() -> None:
    raw = body(time=NOW - 1000)
    with pytest.raises(WebhookVerificationError):
        verify_webhook_signature(raw, sign(raw), SECRET, now=NOW)
    assert verify_webhook_signature(raw, sign(raw), SECRET, tolerance_s=3600, now=NOW)
    assert verify_webhook_signature(raw, sign(raw), SECRET, tolerance_s=None, now=NOW)


@pytest.mark.parametrize("value", [None, "yesterday", "2024-04-02T20:33:13", True])
def test_missing_or_unusable_time_is_rejected(value: Any) -> None:
    raw = body(time=value)
    with pytest.raises(WebhookVerificationError, match="time"):
        verify_webhook_signature(raw, sign(raw), SECRET, now=NOW)


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]"])
def test_signed_non_object_body_is_rejected(raw: bytes) -> None:
    with pytest.raises(WebhookVerificationError, match="JSON"):
        verify_webhook_signature(raw, sign(raw), SECRET, now=NOW)


@pytest.mark.parametrize("secrets", ["", [], [""]])
def test_no_secret_is_a_configuration_error(secrets: Any) -> None:
    with pytest.raises(ValueError, match="secret") as err:
        verify_webhook_signature(body(), sign(body()), secrets, now=NOW)
    assert not isinstance(err.value, WebhookVerificationError)


def test_importing_the_helper_does_not_import_airflow() -> None:
    """A webhook receiver (any web app) can use it without loading Airflow."""
    code = "import sys, airflow_provider_baseten.webhooks; print('airflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_verifies_what_the_emulator_signs_during_rotation() -> None:
    """Interop with the emulator's sender (which signs with every configured secret, comma-separated)."""
    from airflow_provider_baseten.emulator.webhooks import signature_header

    raw = body()
    header = signature_header(raw, [OLD_SECRET, SECRET])
    assert header is not None
    assert header.count("v1=") == 2
    assert verify_webhook_signature(raw, header, SECRET, now=NOW)["request_id"] == "req1"
    with pytest.raises(WebhookVerificationError):
        verify_webhook_signature(raw, header, "not-a-configured-secret", now=NOW)

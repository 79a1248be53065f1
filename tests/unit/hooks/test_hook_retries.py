"""The retry policy as pure functions: classification, the aiohttp subtlety, Retry-After and the wait."""

from __future__ import annotations

import email.utils
from typing import Any

import aiohttp
import httpx
import pytest
from tenacity import Retrying

from airflow_provider_baseten.exceptions import (
    BasetenAPIError,
    BasetenAuthError,
    BasetenModelError,
    BasetenRateLimitError,
    BasetenTimeoutError,
)
from airflow_provider_baseten.hooks.retries import (
    RetryPolicy,
    ambiguous_submit,
    is_retryable,
    never_reached_server,
    parse_retry_after,
    retry_after_of,
)

NOW = 1_800_000_000.0


def api_error(status: int, error_code: str | None = None) -> BasetenAPIError:
    return BasetenAPIError("failed", status_code=status, error_code=error_code)


def caused_by(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


def _server_disconnected() -> BaseException:
    return aiohttp.ServerDisconnectedError()


def _connector_error() -> BaseException:
    return aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("127.0.0.1", 1, False, True, None, None, None),
        ConnectionRefusedError(111, "refused"),
    )


# (outcome, retried when idempotent, retried when not idempotent)
CLASSIFICATION: list[tuple[str, BaseException, bool, bool]] = [
    ("connect error", httpx.ConnectError("refused"), True, True),
    ("connect timeout", httpx.ConnectTimeout("slow"), True, True),
    ("pool timeout", httpx.PoolTimeout("busy"), True, True),
    ("429", api_error(429), True, True),
    ("529", api_error(529), True, True),
    ("503 model_unavailable", api_error(503, "model_unavailable"), True, True),
    ("503 model_not_ready", api_error(503, "model_not_ready"), True, True),
    ("500 model_not_ready", api_error(500, "model_not_ready"), True, True),
    ("502 rate_limited", api_error(502, "rate_limited"), True, True),
    ("503 MODEL_UNAVAILABLE", api_error(503, "MODEL_UNAVAILABLE"), True, True),
    ("503 (the model's own)", api_error(503), True, False),
    ("503 application_error", api_error(503, "application_error"), True, False),
    ("500 internal_baseten_error", api_error(500, "internal_baseten_error"), True, False),
    ("502", api_error(502), True, False),
    ("500", api_error(500), True, False),
    ("504", api_error(504), True, False),
    ("read timeout", httpx.ReadTimeout("slow"), True, False),
    ("reset mid-response", httpx.RemoteProtocolError("peer closed"), True, False),
    ("read error", httpx.ReadError("reset"), True, False),
    ("write timeout", httpx.WriteTimeout("slow"), True, False),
    ("400", api_error(400), False, False),
    ("401", api_error(401), False, False),
    ("403", api_error(403), False, False),
    ("404", api_error(404), False, False),
    ("413", api_error(413), False, False),
    ("422", api_error(422), False, False),
    ("no status", BasetenAPIError("x"), False, False),
    ("programming error", ValueError("bug"), False, False),
    ("aiohttp disconnect as ConnectTimeout", caused_by(httpx.ConnectTimeout("x"), _server_disconnected()), True, False),
    ("aiohttp connector error", caused_by(httpx.ConnectTimeout("x"), _connector_error()), True, True),
]


@pytest.mark.parametrize(
    ("exc", "idempotent", "retried"),
    [
        pytest.param(exc, idempotent, retried, id=f"{name}-{'GET' if idempotent else 'POST'}")
        for name, exc, get_retried, post_retried in CLASSIFICATION
        for idempotent, retried in ((True, get_retried), (False, post_retried))
    ],
)
def test_is_retryable(exc: BaseException, idempotent: bool, retried: bool) -> None:
    assert is_retryable(exc, idempotent=idempotent) is retried


@pytest.mark.parametrize(
    ("exc", "never_sent"),
    [
        pytest.param(httpx.ConnectError("refused"), True, id="httpx-connect-error"),
        pytest.param(httpx.ConnectTimeout("slow"), True, id="httpx-connect-timeout"),
        pytest.param(httpx.PoolTimeout("busy"), True, id="pool-timeout"),
        pytest.param(
            caused_by(httpx.ConnectError("x"), OSError(111, "refused")), True, id="connect-error-from-oserror"
        ),
        # The aiohttp transport maps every ClientConnectionError to ConnectTimeout, a disconnect mid-response too.
        pytest.param(caused_by(httpx.ConnectTimeout("x"), _server_disconnected()), False, id="aiohttp-disconnected"),
        pytest.param(
            caused_by(httpx.ConnectTimeout("x"), aiohttp.ClientOSError(104, "reset by peer")),
            False,
            id="aiohttp-reset",
        ),
        pytest.param(
            caused_by(httpx.ConnectTimeout("x"), aiohttp.ServerFingerprintMismatch(b"a", b"b", "h", 443)),
            False,
            id="aiohttp-other-connection-error",
        ),
        pytest.param(caused_by(httpx.ConnectTimeout("x"), _connector_error()), True, id="aiohttp-connector-error"),
        pytest.param(
            caused_by(httpx.ConnectTimeout("x"), aiohttp.ConnectionTimeoutError()), True, id="aiohttp-connect-timeout"
        ),
        pytest.param(httpx.ReadTimeout("slow"), False, id="read-timeout"),
        pytest.param(httpx.RemoteProtocolError("closed"), False, id="remote-protocol-error"),
        pytest.param(httpx.ReadError("reset"), False, id="read-error"),
        pytest.param(caused_by(httpx.ReadTimeout("x"), aiohttp.SocketTimeoutError()), False, id="aiohttp-read-timeout"),
    ],
)
def test_never_reached_server(exc: BaseException, never_sent: bool) -> None:
    assert never_reached_server(exc) is never_sent


async def test_aiohttp_transport_maps_a_disconnect_to_connect_timeout() -> None:
    """The reason never_reached_server looks at the cause: check the installed transport still does this."""
    from httpx_aiohttp.transport import map_aiohttp_exceptions

    with pytest.raises(httpx.ConnectTimeout) as info, map_aiohttp_exceptions():
        raise aiohttp.ServerDisconnectedError()
    assert isinstance(info.value.__cause__, aiohttp.ServerDisconnectedError)
    assert never_reached_server(info.value) is False


def test_ambiguous_submit_message_says_it_may_have_run() -> None:
    err = ambiguous_submit(httpx.ReadTimeout("slow"), "predict on model a1 (production)")
    assert "may have reached the model" in str(err)
    assert "ReadTimeout" in str(err)
    assert "predict on model a1" in str(err)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("7", 7.0),
        (" 12 ", 12.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-5", 0.0),
        ("soon", None),
        ("Wed, 99 Foo 2015 07:28:00 GMT", None),
        (email.utils.formatdate(NOW + 90, usegmt=True), 90.0),
        (email.utils.formatdate(NOW + 90), 90.0),  # "-0000": still GMT, never local time
        (email.utils.formatdate(NOW + 90, usegmt=True).removesuffix(" GMT"), 90.0),  # no zone at all
        (email.utils.formatdate(NOW - 90, usegmt=True), 0.0),  # already past
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    parsed = parse_retry_after(value, now=NOW)
    assert parsed == (pytest.approx(seconds) if seconds is not None else None)


def test_parse_retry_after_date_ignores_local_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert parse_retry_after(email.utils.formatdate(NOW + 60), now=NOW) == pytest.approx(60.0)
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("headers", "body", "seconds"),
    [
        ({"Retry-After": "3"}, None, 3.0),
        ({"Retry-After": "3"}, {"retry_after": 37}, 3.0),  # the header wins
        ({}, {"error": "slow down", "retry_after": 37}, 37.0),
        ({}, {"retry_after": 2.5}, 2.5),
        ({"Retry-After": "soon"}, {"retry_after": 4}, 4.0),
        ({}, {"retry_after": "37"}, None),
        ({}, {"retry_after": -1}, None),
        ({}, {"retry_after": True}, None),
        ({}, ["retry_after", 3], None),
        ({}, None, None),
    ],
)
def test_retry_after_of(headers: dict[str, str], body: Any, seconds: float | None) -> None:
    assert retry_after_of(httpx.Response(429, headers=headers), body) == seconds


@pytest.mark.parametrize(
    ("attempt", "jitter", "retry_after", "wait"),
    [
        (1, 0.0, None, 0.25),
        (1, 1.0, None, 0.5),
        (1, 0.5, None, 0.375),
        (2, 1.0, None, 1.0),
        (4, 0.0, None, 2.0),
        (4, 1.0, None, 4.0),
        (10, 1.0, None, 30.0),  # capped at max_wait
        (10, 0.0, None, 15.0),
        (1, 0.0, 7.0, 7.0),  # the server's wait wins over a shorter backoff
        (4, 1.0, 0.1, 4.0),  # ... but never shortens the backoff
        (1, 0.0, 1000.0, 120.0),  # capped at four times max_wait
        (1, 0.0, 0.0, 0.25),
    ],
)
def test_wait_seconds(attempt: int, jitter: float, retry_after: float | None, wait: float) -> None:
    policy = RetryPolicy(jitter=lambda: jitter)
    assert policy.wait_seconds(attempt, retry_after) == pytest.approx(wait)


def _run(policy: RetryPolicy, errors: list[BaseException], *, idempotent: bool) -> tuple[int, list[float], Any]:
    calls: list[int] = []
    waits: list[float] = []

    def attempt() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    retrying = Retrying(sleep=waits.append, **policy.tenacity_kwargs(idempotent=idempotent))
    try:
        result: Any = retrying(attempt)
    except BaseException as err:
        result = err
    return len(calls), waits, result


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_attempts_are_capped(max_retries: int) -> None:
    errors = [api_error(503) for _ in range(10)]
    calls, waits, result = _run(RetryPolicy(max_retries=max_retries, jitter=lambda: 0), errors, idempotent=True)
    assert calls == max_retries + 1
    assert len(waits) == max_retries
    assert result is errors[max_retries]  # the last error is re-raised as is


def test_retry_after_reaches_the_wait() -> None:
    error = BasetenRateLimitError("slow down", status_code=429, retry_after=9.0)
    calls, waits, result = _run(RetryPolicy(jitter=lambda: 0), [error], idempotent=False)
    assert (calls, waits, result) == (2, [9.0], "ok")


def test_non_retryable_fails_at_once() -> None:
    error = BasetenAuthError("no", status_code=401)
    assert _run(RetryPolicy(), [error], idempotent=True) == (1, [], error)


@pytest.mark.parametrize(
    ("error", "idempotent", "calls"),
    [
        (BasetenModelError("boom", status_code=500), True, 2),
        (BasetenModelError("boom", status_code=500), False, 1),
        (BasetenTimeoutError("slow", status_code=504), False, 1),
        (httpx.ReadTimeout("slow"), True, 2),
        (httpx.ReadTimeout("slow"), False, 1),
    ],
)
def test_policy_follows_classification(error: BaseException, idempotent: bool, calls: int) -> None:
    assert _run(RetryPolicy(jitter=lambda: 0), [error], idempotent=idempotent)[0] == calls

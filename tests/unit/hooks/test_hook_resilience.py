"""Retries and timeouts through the hook: what is sent again, what raises, and how long each wait is."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx
from airflow_testing import FakeClock
from hook_testing import API_KEY, ASYNC_STATE

from airflow_provider_baseten.exceptions import (
    BasetenAmbiguousSubmitError,
    BasetenAuthError,
    BasetenConnectionError,
    BasetenModelError,
    BasetenRateLimitError,
    BasetenTimeoutError,
)
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.baseten import BasetenHook

MODEL = Target.of(model_id="abc123")
PREDICT_URL = "https://model-abc123.api.baseten.co/production/predict"
STATUS_URL = "https://model-abc123.api.baseten.co/async_request/req1"
STATE = {"request_id": "req1", "status": "QUEUED"}
QUEUE_URL = "https://model-abc123.api.baseten.co/production/async_queue_status"
DEPLOYMENT_URL = "https://api.baseten.co/v1/models/abc123/deployments/production"


def failure(kind: str) -> Any:
    """A respx side effect: an exception to raise or a response to return."""
    if kind.isdigit():
        return httpx.Response(int(kind), json={"error": f"status {kind}"})
    if "-" in kind and kind.split("-", 1)[0].isdigit():  # "503-model_unavailable": Baseten's own error code
        status, code = kind.split("-", 1)
        return httpx.Response(int(status), json={"error": "refused", "error_code": code})
    return {
        "connect-error": httpx.ConnectError("refused"),
        "connect-timeout": httpx.ConnectTimeout("slow connect"),
        "pool-timeout": httpx.PoolTimeout("pool"),
        "read-timeout": httpx.ReadTimeout("slow read"),
        "reset-mid-response": httpx.RemoteProtocolError("peer closed connection without sending complete message"),
        "read-error": httpx.ReadError("connection reset"),
    }[kind]


# outcome of the first attempt -> (POST predict, GET status): "retried", or the error class raised at once
TABLE: list[tuple[str, Any, Any]] = [
    ("connect-error", "retried", "retried"),
    ("connect-timeout", "retried", "retried"),
    ("pool-timeout", "retried", "retried"),
    ("429", "retried", "retried"),
    ("529", "retried", "retried"),
    # Baseten says no replica took the request: even a billed POST is sent again.
    ("503-model_unavailable", "retried", "retried"),
    ("503-model_not_ready", "retried", "retried"),
    ("500-model_not_ready", "retried", "retried"),
    ("502-model_unavailable", BasetenAmbiguousSubmitError, "retried"),  # a 502: the replica failed with it
    # A 502/503 without such a code may be the model's own answer (Baseten passes it through): it may have run.
    ("503", BasetenAmbiguousSubmitError, "retried"),
    ("502", BasetenAmbiguousSubmitError, "retried"),
    ("503-application_error", BasetenAmbiguousSubmitError, "retried"),
    ("500", BasetenModelError, "retried"),
    ("504", BasetenTimeoutError, "retried"),
    ("read-timeout", BasetenAmbiguousSubmitError, "retried"),
    ("reset-mid-response", BasetenAmbiguousSubmitError, "retried"),
    ("read-error", BasetenAmbiguousSubmitError, "retried"),
    ("400", BasetenModelError, BasetenModelError),
    ("401", BasetenAuthError, BasetenAuthError),
]


@pytest.mark.parametrize(
    ("first", "expected", "method"),
    [
        pytest.param(first, expected, method, id=f"{first}-{method}")
        for first, on_post, on_get in TABLE
        for method, expected in (("POST", on_post), ("GET", on_get))
    ],
)
def test_retry_classification(
    hook: BasetenHook, mock_http: respx.MockRouter, sleeps: list[float], first: str, expected: Any, method: str
) -> None:
    url, call, ok = (
        (PREDICT_URL, lambda: hook.predict(MODEL, {"x": 1}), httpx.Response(200, json={"y": 2}))
        if method == "POST"
        else (STATUS_URL, lambda: hook.get_async_request(MODEL, "req1"), httpx.Response(200, json=STATE))
    )
    route = mock_http.route(method=method, url=url).mock(side_effect=[failure(first), ok])
    if expected == "retried":
        call()
        assert route.call_count == 2
        assert len(sleeps) == 1
    else:
        with pytest.raises(expected):
            call()
        assert route.call_count == 1
        assert sleeps == []


@pytest.mark.parametrize(
    ("call", "url", "method"),
    [
        (lambda h: h.async_predict(MODEL, {"model_input": {}}), "/production/async_predict", "POST"),
        (
            lambda h: h.chat_completion({"model": "m", "messages": []}, target=MODEL),
            "/sync/v1/chat/completions",
            "POST",
        ),
        (lambda h: h.run_remote(Target.of(chain_id="abc123"), {}), "/production/run_remote", "POST"),
    ],
    ids=["async_predict", "chat", "run_remote"],
)
def test_every_billed_post_is_ambiguous_after_a_read_timeout(
    hook: BasetenHook, mock_http: respx.MockRouter, call: Any, url: str, method: str
) -> None:
    route = mock_http.route(method=method, path__regex=f"{url}$").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(BasetenAmbiguousSubmitError, match="may have reached the model"):
        call(hook)
    assert route.call_count == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda h: h.wake(MODEL),
        lambda h: h.activate(MODEL),
        lambda h: h.cancel_async_request(MODEL, "req1"),
        lambda h: h.get_deployment(MODEL),
    ],
    ids=["wake", "activate", "cancel", "deployment"],
)
def test_idempotent_calls_retry_after_a_read_timeout(
    hook: BasetenHook, mock_http: respx.MockRouter, call: Any, sleeps: list[float]
) -> None:
    from hook_testing import fake_baseten

    outcomes = iter([httpx.ReadTimeout("slow")])

    def answer(request: httpx.Request) -> httpx.Response:
        for exc in outcomes:
            raise exc
        return fake_baseten(request)

    route = mock_http.route().mock(side_effect=answer)
    call(hook)
    assert route.call_count == 2


def test_chained_cause_of_ambiguous_error(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    mock_http.post(PREDICT_URL).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(BasetenAmbiguousSubmitError) as info:
        hook.predict(MODEL, {})
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


@pytest.mark.parametrize("max_retries", [0, 2, 5])
def test_attempts_capped_by_max_retries(
    set_conn: Callable[..., None], make_hook, mock_http: respx.MockRouter, sleeps: list[float], max_retries: int
) -> None:
    set_conn(extra={"max_retries": max_retries})
    route = mock_http.post(PREDICT_URL).respond(429, json={"error": "busy"})
    with pytest.raises(BasetenRateLimitError):
        make_hook().predict(MODEL, {})
    assert route.call_count == max_retries + 1
    assert len(sleeps) == max_retries


def test_default_max_retries_is_five(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    route = mock_http.get(STATUS_URL).respond(503)
    with pytest.raises(BasetenModelError):
        hook.get_async_request(MODEL, "req1")
    assert route.call_count == 6


def test_connect_errors_exhaust_then_raise_a_connection_error(hook: BasetenHook, mock_http) -> None:
    route = mock_http.post(PREDICT_URL).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(BasetenConnectionError) as info:
        hook.predict(MODEL, {})
    assert route.call_count == 6
    assert info.value.attempts == 6
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_backoff_grows(
    set_conn: Callable[..., None], make_hook, mock_http: respx.MockRouter, sleeps: list[float]
) -> None:
    set_conn(extra={"status_rate_limit": 1_000_000})  # only the backoff, no wait for a poll token
    mock_http.get(STATUS_URL).respond(503)
    with pytest.raises(BasetenModelError):
        make_hook().get_async_request(MODEL, "req1")
    for attempt, wait in enumerate(sleeps, start=1):
        full = min(30.0, 0.5 * 2 ** (attempt - 1))
        assert full / 2 <= wait <= full


@pytest.mark.parametrize(
    ("headers", "body", "wait"),
    [
        (lambda: {"Retry-After": "7"}, {"error": "busy"}, 7.0),
        (lambda: {"Retry-After": email.utils.formatdate(time.time() + 20, usegmt=True)}, {"error": "busy"}, 20.0),
        (dict, {"error": "slow down", "retry_after": 37}, 37.0),
        (lambda: {"Retry-After": "1000"}, {}, 120.0),
    ],
    ids=["seconds", "http-date", "body", "capped"],
)
def test_retry_after_is_honoured(
    hook: BasetenHook, mock_http: respx.MockRouter, sleeps: list[float], headers: Any, body: dict, wait: float
) -> None:
    mock_http.post(PREDICT_URL).mock(
        side_effect=[httpx.Response(429, headers=headers(), json=body), httpx.Response(200, json={})]
    )
    hook.predict(MODEL, {})
    assert sleeps == [pytest.approx(wait, abs=1.5)]


def test_invalid_retry_after_falls_back_to_backoff(hook: BasetenHook, mock_http, sleeps: list[float]) -> None:
    mock_http.post(PREDICT_URL).mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "later"}), httpx.Response(200, json={})]
    )
    hook.predict(MODEL, {})
    assert 0.25 <= sleeps[0] <= 0.5


def test_rate_limit_error_carries_retry_after(set_conn: Callable[..., None], make_hook, mock_http) -> None:
    set_conn(extra={"max_retries": 0})
    mock_http.post(PREDICT_URL).respond(429, headers={"Retry-After": "11"})
    with pytest.raises(BasetenRateLimitError) as info:
        make_hook().predict(MODEL, {})
    assert info.value.retry_after == 11.0


async def test_async_calls_retry_with_the_async_sleep(hook: BasetenHook, mock_http, sleeps: list[float]) -> None:
    route = mock_http.get(STATUS_URL).mock(side_effect=[httpx.Response(503), httpx.Response(200, json=STATE)])
    state = await hook.aget_async_request(MODEL, "req1", rate_limited=False)
    assert state.status == "QUEUED"
    assert route.call_count == 2
    assert len(sleeps) == 1


async def test_async_predict_read_timeout_is_ambiguous(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    route = mock_http.post(PREDICT_URL).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(BasetenAmbiguousSubmitError):
        await hook.apredict(MODEL, {})
    assert route.call_count == 1


# --- timeouts --------------------------------------------------------------------------------------------------


def sent_timeout(router: respx.MockRouter) -> dict[str, float]:
    return router.calls.last.request.extensions["timeout"]


def test_predict_default_read_timeout_is_above_baseten_1200s(hook: BasetenHook, baseten_api) -> None:
    hook.predict(MODEL, {})
    assert sent_timeout(baseten_api) == {"connect": 10.0, "read": 1230.0, "write": 1230.0, "pool": 1230.0}


def test_per_call_timeout(hook: BasetenHook, baseten_api: respx.MockRouter) -> None:
    hook.predict(MODEL, {}, timeout=45)
    assert sent_timeout(baseten_api)["read"] == 45


async def test_async_per_call_timeout(hook: BasetenHook, baseten_api: respx.MockRouter) -> None:
    await hook.apredict(MODEL, {}, timeout=45)
    assert sent_timeout(baseten_api)["read"] == 45
    await hook.apredict(MODEL, {})
    assert sent_timeout(baseten_api)["read"] == 1230.0


def test_hook_timeout(conn: None, make_hook, baseten_api: respx.MockRouter) -> None:
    make_hook(timeout=300).predict(MODEL, {})
    assert sent_timeout(baseten_api)["read"] == 300


def test_connection_timeouts(set_conn: Callable[..., None], make_hook, baseten_api: respx.MockRouter) -> None:
    set_conn(extra={"timeout": 600, "connect_timeout": 3})
    make_hook().predict(MODEL, {})
    assert sent_timeout(baseten_api)["read"] == 600
    assert sent_timeout(baseten_api)["connect"] == 3


@pytest.mark.parametrize(
    "call",
    [
        lambda h: h.get_async_request(MODEL, "req1"),
        lambda h: h.cancel_async_request(MODEL, "req1"),
        lambda h: h.get_async_queue_status(MODEL),
        lambda h: h.get_user(),
    ],
    ids=["status", "cancel", "queue", "user"],
)
def test_short_calls_use_a_short_read_timeout(conn: None, make_hook, baseten_api, call: Any) -> None:
    call(make_hook(timeout=900))
    assert sent_timeout(baseten_api)["read"] == 30.0


def test_chat_uses_the_predict_timeout(hook: BasetenHook, baseten_api: respx.MockRouter) -> None:
    hook.chat_completion({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert sent_timeout(baseten_api)["read"] == 1230.0


def test_clients_have_explicit_timeouts_and_no_redirects(hook: BasetenHook) -> None:
    assert hook.client.timeout == httpx.Timeout(1230.0, connect=10.0)
    assert hook.client.follow_redirects is False


def test_redirect_is_an_error_not_followed(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    mock_http.post(PREDICT_URL).respond(307, headers={"Location": "https://evil.example/x"})
    with pytest.raises(BasetenModelError, match="307"):
        hook.predict(MODEL, {})
    assert mock_http.calls.call_count == 1


# --- TLS -------------------------------------------------------------------------------------------------------


def test_tls_context_is_shared_per_verify_value() -> None:
    import ssl

    from airflow_provider_baseten.hooks.baseten import ssl_context

    assert ssl_context(True) is ssl_context(True)
    assert ssl_context(True).verify_mode == ssl.CERT_REQUIRED
    assert ssl_context(False).verify_mode == ssl.CERT_NONE


def test_ca_bundle_path_becomes_a_context_without_deprecation(recwarn: pytest.WarningsRecorder) -> None:
    import warnings

    import certifi

    from airflow_provider_baseten.hooks.baseten import build_client
    from airflow_provider_baseten.hooks.connection import ClientSettings

    warnings.simplefilter("always")
    build_client(ClientSettings(api_key="k", verify=certifi.where())).close()
    assert [w for w in recwarn if "verify" in str(w.message)] == []


def test_missing_ca_bundle_names_the_extra(set_conn: Callable[..., None], make_hook) -> None:
    from airflow_provider_baseten.exceptions import BasetenConfigError

    set_conn(extra={"verify": "/nonexistent/ca.pem"})
    with pytest.raises(BasetenConfigError, match="'verify'"):
        make_hook().client


# --- a warning per retry, sync and async alike ---------------------------------------------------------------------


def _retry_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "retrying in" in r.getMessage()]


@pytest.mark.parametrize("path", ["sync", "async"])
async def test_every_retry_leaves_a_warning_line(
    path: str, hook: BasetenHook, mock_http: respx.MockRouter, caplog: pytest.LogCaptureFixture, sleeps: list[float]
) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_baseten.hooks.baseten")

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused") from ConnectionRefusedError(111, "refused")

    busy = httpx.Response(503, json={"error": "busy", "error_code": "model_unavailable"})
    mock_http.get(STATUS_URL).mock(side_effect=[busy, refused, httpx.Response(200, json=ASYNC_STATE)])
    if path == "sync":
        hook.get_async_request(MODEL, "req1")
    else:
        await hook.aget_async_request(MODEL, "req1", rate_limited=False)
    lines = _retry_lines(caplog)
    assert lines == [
        "async request status: GET model-abc123.api.baseten.co/async_request/req1 failed: answered 503 "
        f"[model_unavailable]; attempt 1 of 6, retrying in {sleeps[0]:.1f} s",
        "async request status: GET model-abc123.api.baseten.co/async_request/req1 failed: ConnectError: [Errno 111] "
        f"Connection refused; attempt 2 of 6, retrying in {sleeps[1]:.1f} s",
    ]
    assert API_KEY not in caplog.text


def test_no_warning_without_a_retry(
    hook: BasetenHook, mock_http: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_baseten.hooks.baseten")
    mock_http.get(STATUS_URL).respond(200, json=ASYNC_STATE)
    hook.get_async_request(MODEL, "req1")
    assert _retry_lines(caplog) == []


# --- the poll budget: every status and cancel attempt takes a token --------------------------------------------


class Clock(FakeClock):
    """A monotonic clock that moves only when the hook sleeps on it (the hook calls it)."""

    def __init__(self) -> None:
        super().__init__(1000.0)

    def __call__(self) -> float:
        return self.now


def clocked_hook(clock: Clock) -> BasetenHook:
    return BasetenHook(customer_request_id="", sleep=clock.sleep, async_sleep=clock.asleep, clock=clock)


@pytest.mark.parametrize(
    ("call", "url", "method"),
    [
        (lambda h: h.get_async_request(MODEL, "req1"), STATUS_URL, "GET"),
        (lambda h: h.cancel_async_request(MODEL, "req1"), STATUS_URL, "DELETE"),
        (lambda h: h.get_async_queue_status(MODEL), QUEUE_URL, "GET"),
        (lambda h: h.get_deployment(MODEL), DEPLOYMENT_URL, "GET"),
    ],
    ids=["status", "cancel", "queue", "deployment"],
)
def test_every_sync_attempt_takes_a_token(
    hook: BasetenHook, mock_http: respx.MockRouter, mocker: Any, call: Any, url: str, method: str
) -> None:
    from hook_testing import fake_baseten

    acquire = mocker.patch("airflow_provider_baseten.hooks.ratelimit.TokenBucket.acquire", return_value=0.0)
    outcomes = iter([httpx.Response(503), httpx.Response(429, headers={"Retry-After": "0"})])
    mock_http.route(method=method, url=url).mock(
        side_effect=lambda request: next(outcomes, None) or fake_baseten(request)
    )
    call(hook)
    assert acquire.call_count == 3  # the first attempt and both retries


@pytest.mark.parametrize(
    "call",
    [
        lambda h: h.aget_async_request(MODEL, "req1"),
        lambda h: h.acancel_async_request(MODEL, "req1"),
        lambda h: h.aget_async_queue_status(MODEL),
        lambda h: h.aget_deployment(MODEL),
    ],
    ids=["status", "cancel", "queue", "deployment"],
)
async def test_every_async_attempt_takes_a_token(
    hook: BasetenHook, mock_http: respx.MockRouter, mocker: Any, call: Any
) -> None:
    from hook_testing import fake_baseten

    acquire = mocker.patch("airflow_provider_baseten.hooks.ratelimit.AsyncTokenBucket.acquire", return_value=0.0)
    outcomes = iter([httpx.ConnectError("refused"), httpx.Response(503)])

    def answer(request: httpx.Request) -> httpx.Response:
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        return fake_baseten(request)

    mock_http.route().mock(side_effect=answer)
    await call(hook)
    assert acquire.await_count == 3


def test_rate_limited_false_and_billed_calls_take_no_token(hook: BasetenHook, baseten_api, mocker: Any) -> None:
    acquire = mocker.patch("airflow_provider_baseten.hooks.ratelimit.TokenBucket.acquire", return_value=0.0)
    hook.get_async_request(MODEL, "req1", rate_limited=False)
    hook.predict(MODEL, {})
    hook.wake(MODEL)
    assert acquire.call_count == 0


def test_a_429_shrinks_the_process_budget_and_blocks_it_for_retry_after(
    conn: None, mock_http: respx.MockRouter
) -> None:
    from airflow_provider_baseten.hooks.ratelimit import shared_sync_bucket

    clock = Clock()
    hook = clocked_hook(clock)
    route = mock_http.get(STATUS_URL).mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(200, json=STATE)]
    )
    start = clock.now
    hook.get_async_request(MODEL, "req1")
    budget = shared_sync_bucket(hook.settings, hook.settings.status_rate_limit)
    assert budget.rate == pytest.approx(hook.settings.status_rate_limit / 2, rel=0.05)
    assert route.call_count == 2
    assert clock.now - start >= 3.0  # the retry went out only after Retry-After

    # Another hook of the process (say, a second sensor) waits behind the same block and rate.
    other = clocked_hook(clock)
    clock.now = start + 1.0
    route.mock(side_effect=[httpx.Response(200, json=STATE)])
    other.get_async_request(MODEL, "req1")
    assert clock.now - start >= 3.0


def test_time_left_bounds_every_timeout_of_the_read(hook: BasetenHook, baseten_api: respx.MockRouter) -> None:
    hook.get_deployment(MODEL, time_left=0.3)
    timeout = baseten_api.calls.last.request.extensions["timeout"]
    assert max(timeout.values()) <= 0.3
    hook.get_deployment(MODEL)
    assert baseten_api.calls.last.request.extensions["timeout"]["read"] == 30.0


def test_time_left_stops_the_retries_at_the_deadline(conn: None, mock_http: respx.MockRouter) -> None:
    clock = Clock()
    route = mock_http.get(DEPLOYMENT_URL).respond(503)
    start = clock.now
    with pytest.raises(BasetenModelError):
        clocked_hook(clock).get_deployment(MODEL, time_left=0.6)
    assert clock.now - start <= 0.6 + 1e-9  # no backoff sleeps past the deadline
    assert route.call_count < 6  # the retries were cut short, not exhausted

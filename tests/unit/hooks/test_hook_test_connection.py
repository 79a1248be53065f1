"""``test_connection()``: costs no inference, falls back to Model APIs for invoke-only keys, never raises."""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx
import pytest
import respx
from hook_testing import API_KEY

from airflow_provider_baseten.exceptions import BasetenConnectionError
from airflow_provider_baseten.hooks.baseten import TEST_CONNECTION_TIMEOUT, BasetenHook

USERS_ME = "https://api.baseten.co/v1/users/me"
MODEL_APIS = "https://inference.baseten.co/v1/models"


def test_ok(hook: BasetenHook, baseten_api: respx.MockRouter) -> None:
    assert hook.test_connection() == (True, "Connected to Baseten as ada@example.com.")
    assert [call.request.method for call in baseten_api.calls] == ["GET"]


def test_ok_without_email(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    mock_http.get(USERS_ME).respond(200, json={"user_id": "u1"})
    assert hook.test_connection() == (True, "Connected to Baseten as u1.")


@pytest.mark.parametrize("status", [401, 403])
def test_invoke_only_key_falls_back_to_model_apis(hook: BasetenHook, mock_http: respx.MockRouter, status: int) -> None:
    mock_http.get(USERS_ME).respond(status, json={"error": "forbidden"})
    mock_http.get(MODEL_APIS).respond(200, json={"data": [{"id": "a/b"}, {"id": "c/d"}]})
    ok, message = hook.test_connection()
    assert ok is True
    assert "Model APIs (2 models)" in message


def test_rejected_key(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    mock_http.get(USERS_ME).respond(401, json={"error": f"invalid key {API_KEY}"})
    mock_http.get(MODEL_APIS).respond(401, json={"error": f"invalid key {API_KEY}"})
    ok, message = hook.test_connection()
    assert ok is False
    assert "401" in message
    assert API_KEY not in message


def test_refused_gateway_fails_fast_with_the_error_a_task_would_raise(
    set_conn: Callable[..., None], make_hook: Callable[..., BasetenHook], sleeps: list[float]
) -> None:
    with socket.socket() as sock:  # a loopback port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    set_conn(host=f"127.0.0.1:{port}")
    hook = make_hook()
    ok, message = hook.test_connection()
    assert ok is False
    assert sleeps == []  # one attempt, no backoff: the connection form waits for it
    assert message == (
        f"get user: GET the gateway http://127.0.0.1:{port} (for api.baseten.co/v1/users/me) failed: the connection "
        "was refused (nothing listens on that port) (1 attempt). Hint: is the gateway running? Check the "
        "connection's host."
    )
    with pytest.raises(BasetenConnectionError) as info:
        hook.get_user()
    assert str(info.value) == message.replace("(1 attempt)", "(6 attempts)")  # what a task says, after retries
    assert len(sleeps) == 5
    hook.close()


def test_timeouts_are_short_and_restored(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    seen: list[dict[str, float]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json={"user_id": "u1"})

    mock_http.get(USERS_ME).mock(side_effect=answer)
    assert hook.test_connection()[0] is True
    hook.get_user()
    assert (seen[0]["connect"], seen[0]["read"]) == (TEST_CONNECTION_TIMEOUT, TEST_CONNECTION_TIMEOUT)
    assert (seen[1]["connect"], seen[1]["read"]) == (10.0, 30.0)  # the connection's own timeouts again
    assert hook.settings.max_retries == 5


def test_server_error(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    mock_http.get(USERS_ME).respond(404, text="not here")
    ok, message = hook.test_connection()
    assert ok is False
    assert "404" in message


@pytest.mark.parametrize("password", [None, ""])
def test_missing_key(set_conn: Callable[..., None], make_hook, mock_http, password: str | None) -> None:
    set_conn(password=password)
    ok, message = make_hook().test_connection()
    assert ok is False
    assert "baseten_default" in message
    assert mock_http.calls.call_count == 0


def test_missing_connection(make_hook, mock_http: respx.MockRouter) -> None:
    ok, message = make_hook("no_such_conn").test_connection()
    assert ok is False
    assert "no_such_conn" in message


def test_bad_extras(set_conn: Callable[..., None], make_hook, mock_http: respx.MockRouter) -> None:
    set_conn(extra="{not json")  # Airflow 3.1 already refuses this connection; 3.3 hands the text to the hook
    ok, message = make_hook().test_connection()
    assert ok is False
    assert message

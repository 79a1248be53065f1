"""Every hook method sends the method, URL and headers DESIGN.md gives, directly and through a gateway."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import respx
from hook_testing import API_KEY

from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.baseten import BasetenHook, BasetenResult

CHAT = {"model": "deepseek-ai/DeepSeek-V3.1", "messages": [{"role": "user", "content": "hi"}]}
GATEWAY = "http://127.0.0.1:8765"

# form -> (addressing kwargs, model host, path prefix, management status path)
FORMS: dict[str, tuple[dict[str, Any], str, str, str]] = {
    "production": ({}, "model-abc123.api.baseten.co", "/production", "/v1/models/abc123/deployments/production"),
    "development": (
        {"environment": "development"},
        "model-abc123.api.baseten.co",
        "/development",
        "/v1/models/abc123/deployments/development",
    ),
    "named": (
        {"environment": "staging"},
        "model-abc123.api.baseten.co",
        "/environments/staging",
        "/v1/models/abc123/environments/staging",
    ),
    "deployment": (
        {"deployment_id": "dep42"},
        "model-abc123.api.baseten.co",
        "/deployment/dep42",
        "/v1/models/abc123/deployments/dep42",
    ),
    "regional": (
        {"environment": "prod-us", "regional": True},
        "model-abc123-prod-us.api.baseten.co",
        "",
        "/v1/models/abc123/environments/prod-us",
    ),
}


def consume(result: Any) -> Any:
    """Drain generators (streaming chat) so the request is actually sent."""
    return list(result) if hasattr(result, "__next__") else result


Call = Callable[[BasetenHook, Target], Any]

# name -> (call, method, host ("target" or a fixed host), path: "{prefix}..." or "{status}...")
MODEL_CALLS: dict[str, tuple[Call, str, str, str]] = {
    "predict": (lambda h, t: h.predict(t, {"x": 1}), "POST", "target", "{prefix}/predict"),
    "async_predict": (lambda h, t: h.async_predict(t, {"model_input": {}}), "POST", "target", "{prefix}/async_predict"),
    "get_async_request": (lambda h, t: h.get_async_request(t, "req1"), "GET", "target", "/async_request/req1"),
    "cancel_async_request": (lambda h, t: h.cancel_async_request(t, "req1"), "DELETE", "target", "/async_request/req1"),
    "get_async_queue_status": (
        lambda h, t: h.get_async_queue_status(t),
        "GET",
        "target",
        "{prefix}/async_queue_status",
    ),
    "wake": (lambda h, t: h.wake(t), "POST", "target", "{prefix}/wake"),
    "chat_completion": (
        lambda h, t: h.chat_completion(CHAT, target=t),
        "POST",
        "target",
        "{prefix}/sync/v1/chat/completions",
    ),
    "stream_chat_completion": (
        lambda h, t: h.stream_chat_completion(CHAT, target=t),
        "POST",
        "target",
        "{prefix}/sync/v1/chat/completions",
    ),
    "get_deployment": (lambda h, t: h.get_deployment(t), "GET", "api.baseten.co", "{status}"),
    "activate": (lambda h, t: h.activate(t), "POST", "api.baseten.co", "{status}/activate"),
}

CHAIN_CALLS: dict[str, tuple[Call, str, str, str]] = {
    "predict": (lambda h, t: h.predict(t, {"x": 1}), "POST", "target", "{prefix}/run_remote"),
    "run_remote": (lambda h, t: h.run_remote(t, {"x": 1}), "POST", "target", "{prefix}/run_remote"),
    "async_predict": (
        lambda h, t: h.async_predict(t, {"model_input": {}}),
        "POST",
        "target",
        "{prefix}/async_run_remote",
    ),
    "get_async_request": MODEL_CALLS["get_async_request"],
    "cancel_async_request": MODEL_CALLS["cancel_async_request"],
    "get_async_queue_status": MODEL_CALLS["get_async_queue_status"],
}

SERVICE_CALLS: dict[str, tuple[Callable[[BasetenHook], Any], str, str, str]] = {
    "list_models": (lambda h: h.list_models(), "GET", "api.baseten.co", "/v1/models"),
    "get_model": (lambda h: h.get_model("abc123"), "GET", "api.baseten.co", "/v1/models/abc123"),
    "list_deployments": (
        lambda h: h.list_deployments("abc123"),
        "GET",
        "api.baseten.co",
        "/v1/models/abc123/deployments",
    ),
    "get_environment": (
        lambda h: h.get_environment("abc123", "staging"),
        "GET",
        "api.baseten.co",
        "/v1/models/abc123/environments/staging",
    ),
    "get_user": (lambda h: h.get_user(), "GET", "api.baseten.co", "/v1/users/me"),
    "chat_completion": (lambda h: h.chat_completion(CHAT), "POST", "inference.baseten.co", "/v1/chat/completions"),
    "stream_chat_completion": (
        lambda h: h.stream_chat_completion(CHAT),
        "POST",
        "inference.baseten.co",
        "/v1/chat/completions",
    ),
    "list_model_api_models": (lambda h: h.list_model_api_models(), "GET", "inference.baseten.co", "/v1/models"),
}


@pytest.fixture(params=["direct", "gateway"])
def mode(request: pytest.FixtureRequest, set_conn: Callable[..., None]) -> str:
    set_conn(host=GATEWAY if request.param == "gateway" else None)
    return request.param


def assert_sent(router: respx.MockRouter, mode: str, method: str, host: str, path: str) -> None:
    assert router.calls.call_count == 1
    sent = router.calls.last.request
    assert sent.method == method
    if mode == "gateway":
        assert str(sent.url) == f"{GATEWAY}{path}"
        assert sent.headers["host"] == host
    else:
        assert str(sent.url) == f"https://{host}{path}"
        assert sent.headers["host"] == host
    assert "//" not in sent.url.path
    assert sent.headers["authorization"] == f"Api-Key {API_KEY}"


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", MODEL_CALLS)
def test_model_call_urls(
    mode: str, form: str, name: str, make_hook: Callable[..., BasetenHook], baseten_api: respx.MockRouter
) -> None:
    kwargs, model_host, prefix, status = FORMS[form]
    call, method, host, path = MODEL_CALLS[name]
    consume(call(make_hook(), Target.of(model_id="abc123", **kwargs)))
    expected_host = model_host if host == "target" else host
    assert_sent(baseten_api, mode, method, expected_host, path.format(prefix=prefix, status=status))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", CHAIN_CALLS)
def test_chain_call_urls(
    mode: str, form: str, name: str, make_hook: Callable[..., BasetenHook], baseten_api: respx.MockRouter
) -> None:
    kwargs, model_host, prefix, _ = FORMS[form]
    call, method, _, path = CHAIN_CALLS[name]
    consume(call(make_hook(), Target.of(chain_id="abc123", **kwargs)))
    chain_host = model_host.replace("model-", "chain-", 1)
    assert_sent(baseten_api, mode, method, chain_host, path.format(prefix=prefix))


@pytest.mark.parametrize("name", SERVICE_CALLS)
def test_service_call_urls(
    mode: str, name: str, make_hook: Callable[..., BasetenHook], baseten_api: respx.MockRouter
) -> None:
    call, method, host, path = SERVICE_CALLS[name]
    consume(call(make_hook()))
    assert_sent(baseten_api, mode, method, host, path)


# name -> async call, method, path template (model targets)
ASYNC_CALLS: dict[str, tuple[Callable[[BasetenHook, Target], Any], str, str, str]] = {
    "apredict": (lambda h, t: h.apredict(t, {"x": 1}), "POST", "target", "{prefix}/predict"),
    "aget_async_request": (lambda h, t: h.aget_async_request(t, "req1"), "GET", "target", "/async_request/req1"),
    "acancel_async_request": (
        lambda h, t: h.acancel_async_request(t, "req1"),
        "DELETE",
        "target",
        "/async_request/req1",
    ),
    "aget_async_queue_status": (
        lambda h, t: h.aget_async_queue_status(t),
        "GET",
        "target",
        "{prefix}/async_queue_status",
    ),
    "aget_deployment": (lambda h, t: h.aget_deployment(t), "GET", "api.baseten.co", "{status}"),
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", ASYNC_CALLS)
async def test_async_call_urls(
    mode: str, form: str, name: str, make_hook: Callable[..., BasetenHook], baseten_api: respx.MockRouter
) -> None:
    kwargs, model_host, prefix, status = FORMS[form]
    call, method, host, path = ASYNC_CALLS[name]
    await call(make_hook(), Target.of(model_id="abc123", **kwargs))
    expected_host = model_host if host == "target" else host
    assert_sent(baseten_api, mode, method, expected_host, path.format(prefix=prefix, status=status))


async def test_apredict_on_a_chain_runs_remote(conn: None, make_hook: Callable[..., BasetenHook], baseten_api) -> None:
    await make_hook().apredict(Target.of(chain_id="abc123"), {"x": 1})
    assert baseten_api.calls.last.request.url == "https://chain-abc123.api.baseten.co/production/run_remote"


@pytest.mark.parametrize(
    "call",
    [
        lambda h: h.wake(Target.of(chain_id="abc123")),
        lambda h: h.run_remote(Target.of(model_id="abc123"), {}),
        lambda h: h.get_deployment(Target.of(chain_id="abc123")),
        lambda h: h.activate(Target.of(chain_id="abc123")),
        lambda h: h.chat_completion(CHAT, target=Target.of(chain_id="abc123")),
    ],
    ids=["wake-chain", "run_remote-model", "deployment-chain", "activate-chain", "chat-chain"],
)
def test_wrong_kind_fails_before_sending(hook: BasetenHook, mock_http: respx.MockRouter, call: Any) -> None:
    with pytest.raises(BasetenConfigError):
        call(hook)
    assert mock_http.calls.call_count == 0


INJECTIONS = ["abc.evil.com#", "../x", "a/b", "%2e%2e", "https://evil.com/x", "", "\u0430bc", "abc\n"]


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize(
    "call",
    [
        lambda h, v: h.get_async_request(Target.of(model_id="abc123"), v),
        lambda h, v: h.cancel_async_request(Target.of(model_id="abc123"), v),
        lambda h, v: h.get_model(v),
        lambda h, v: h.list_deployments(v),
        lambda h, v: h.get_environment(v, "staging"),
        lambda h, v: h.get_environment("abc123", v),
    ],
    ids=["status", "cancel", "get_model", "list_deployments", "environment-model", "environment-name"],
)
def test_hook_rejects_injection_before_any_request(
    hook: BasetenHook, mock_http: respx.MockRouter, call: Any, value: str
) -> None:
    with pytest.raises(BasetenConfigError):
        call(hook, value)
    assert mock_http.calls.call_count == 0


async def test_async_status_rejects_injection_before_any_request(hook: BasetenHook, mock_http) -> None:
    with pytest.raises(BasetenConfigError):
        await hook.aget_async_request(Target.of(model_id="abc123"), "../x")
    assert mock_http.calls.call_count == 0


# --- gateway forms ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "base"),
    [
        ("127.0.0.1:8765", None, "http://127.0.0.1:8765"),
        ("http://127.0.0.1:8765", None, "http://127.0.0.1:8765"),
        ("localhost", 9000, "http://localhost:9000"),
        ("[::1]:8765", None, "http://[::1]:8765"),
        ("gateway.internal", 8443, "https://gateway.internal:8443"),
        ("https://gw.example.com/baseten/", None, "https://gw.example.com/baseten"),
    ],
)
def test_gateway_forms(
    set_conn: Callable[..., None],
    make_hook: Callable[..., BasetenHook],
    baseten_api: respx.MockRouter,
    host: str,
    port: int | None,
    base: str,
) -> None:
    set_conn(host=host, port=port)
    make_hook().predict(Target.of(model_id="abc123"), {"x": 1})
    sent = baseten_api.calls.last.request
    assert str(sent.url) == f"{base}/production/predict"
    assert sent.headers["host"] == "model-abc123.api.baseten.co"


# --- headers ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "authorization"),
    [
        (None, f"Api-Key {API_KEY}"),
        ({"auth_scheme": "Api-Key"}, f"Api-Key {API_KEY}"),
        ({"auth_scheme": "Bearer"}, f"Bearer {API_KEY}"),
        ({"auth_scheme": "bearer"}, f"Bearer {API_KEY}"),
    ],
)
def test_auth_schemes(
    set_conn: Callable[..., None],
    make_hook: Callable[..., BasetenHook],
    baseten_api: respx.MockRouter,
    extra: dict[str, str] | None,
    authorization: str,
) -> None:
    set_conn(extra=extra)
    make_hook().get_user()
    assert baseten_api.calls.last.request.headers.get_list("authorization") == [authorization]


def test_key_is_sent_stripped(set_conn: Callable[..., None], make_hook, baseten_api: respx.MockRouter) -> None:
    set_conn(password=f" {API_KEY}\n")
    make_hook().get_user()
    assert baseten_api.calls.last.request.headers["authorization"] == f"Api-Key {API_KEY}"


def test_extra_headers_are_sent_once(set_conn: Callable[..., None], make_hook, baseten_api: respx.MockRouter) -> None:
    set_conn(extra={"headers": {"X-Team": "ml", "content-type": "application/json; charset=utf-8"}})
    make_hook().predict(Target.of(model_id="abc123"), {"x": 1})
    headers = baseten_api.calls.last.request.headers
    assert headers["x-team"] == "ml"
    assert headers.get_list("content-type") == ["application/json; charset=utf-8"]


def test_json_body_is_compact_utf8(hook: BasetenHook, baseten_api: respx.MockRouter) -> None:
    hook.predict(Target.of(model_id="abc123"), {"text": "héllo"})
    sent = baseten_api.calls.last.request
    assert sent.content == '{"text":"héllo"}'.encode()
    assert sent.headers["content-type"] == "application/json"


def test_get_sends_no_body(hook: BasetenHook, baseten_api: respx.MockRouter) -> None:
    hook.get_user()
    sent = baseten_api.calls.last.request
    assert sent.content == b""
    assert "content-type" not in sent.headers


@pytest.mark.parametrize("body", [{"x": float("nan")}, {"x": object()}, {"x": float("inf")}])
def test_unencodable_body_fails_before_sending(hook: BasetenHook, mock_http: respx.MockRouter, body: Any) -> None:
    with pytest.raises(BasetenConfigError, match="JSON"):
        hook.predict(Target.of(model_id="abc123"), body)
    assert mock_http.calls.call_count == 0


def test_customer_request_id_from_task_context(
    conn: None, baseten_api: respx.MockRouter, mocker: Any, sleeps: Any
) -> None:
    ti = SimpleNamespace(dag_id="nightly", task_id="score", run_id="scheduled__2026", map_index=3, try_number=2)
    mocker.patch("airflow.providers.common.compat.sdk.get_current_context", return_value={"ti": ti})
    BasetenHook(sleep=sleeps).predict(Target.of(model_id="abc123"), {})
    sent = baseten_api.calls.last.request
    assert sent.headers["x-baseten-customer-request-id"] == "nightly/score/scheduled__2026/3/2"


def test_no_customer_request_id_outside_a_task(conn: None, baseten_api: respx.MockRouter, sleeps: Any) -> None:
    BasetenHook(sleep=sleeps).predict(Target.of(model_id="abc123"), {})
    assert "x-baseten-customer-request-id" not in baseten_api.calls.last.request.headers


def test_explicit_customer_request_id(conn: None, baseten_api: respx.MockRouter, sleeps: Any) -> None:
    BasetenHook(customer_request_id="batch-7", sleep=sleeps).predict(Target.of(model_id="abc123"), {})
    assert baseten_api.calls.last.request.headers["x-baseten-customer-request-id"] == "batch-7"


def test_result_carries_baseten_request_id(hook: BasetenHook, baseten_api: respx.MockRouter) -> None:
    result = hook.predict(Target.of(model_id="abc123"), {"x": 1})
    assert result == BasetenResult({"echo": {"x": 1}}, "bt-req-1", 200)


async def test_async_result_carries_baseten_request_id(hook: BasetenHook, baseten_api: respx.MockRouter) -> None:
    result = await hook.apredict(Target.of(model_id="abc123"), {"x": 1})
    assert result.request_id == "bt-req-1"


@pytest.mark.parametrize(("response_format", "data"), [("text", "plain \u00e9"), ("bytes", "plain \u00e9".encode())])
def test_text_and_bytes_are_opt_in(
    hook: BasetenHook, mock_http: respx.MockRouter, response_format: Any, data: Any
) -> None:
    mock_http.post("https://model-abc123.api.baseten.co/production/predict").respond(
        200, content="plain \u00e9".encode(), headers={"content-type": "text/plain; charset=utf-8"}
    )
    assert hook.predict(Target.of(model_id="abc123"), {}, response_format=response_format).data == data


def test_json_text_is_still_parsed_as_json(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    mock_http.post("https://model-abc123.api.baseten.co/production/predict").respond(200, text='{"label": "pos"}')
    assert hook.predict(Target.of(model_id="abc123"), {}).data == {"label": "pos"}  # whatever the content type


def test_empty_result_is_none(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    mock_http.post("https://model-abc123.api.baseten.co/production/predict").respond(200)
    assert hook.predict(Target.of(model_id="abc123"), {}).data is None

"""Every request the hook sends matches an operation of Baseten's specs: path template, method, server, body.

The hook is driven for real (respx answers with the spec's own 2xx status and a body generated from the spec's
response schema, so parsing those shapes is exercised too); each captured request is then checked against
``inference-openapi.json`` or ``management-openapi.json``. The few requests no spec describes (Model APIs and the
``/sync/`` passthrough) are pinned in ``OUTSIDE_THE_SPECS``, so a new uncovered URL form fails here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
from openapi_contract import OUTSIDE_THE_SPECS, Spec, spec_responder

from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.baseten import BasetenHook, close_shared_async_clients

pytestmark = pytest.mark.contract

FULL_ASYNC_REQUEST = {
    "model_input": {"text": "hello"},
    "webhook_endpoint": "https://hooks.example.com/baseten",
    "priority": 2,
    "max_time_in_queue_seconds": 259_200,
    "inference_retry_config": {"max_attempts": 10, "initial_delay_ms": 10_000, "max_delay_ms": 60_000},
}
CHAT = {"model": "deepseek-ai/DeepSeek-V3.1", "messages": [{"role": "user", "content": "hi"}]}

FORMS: dict[str, dict[str, Any]] = {
    "production": {},
    "development": {"environment": "development"},
    "named": {"environment": "staging"},
    "deployment": {"deployment_id": "dep42"},
    "regional": {"environment": "prod-us", "regional": True},
}

HookCall = Callable[[BasetenHook, Target], Any]
TARGET_CALLS: dict[str, tuple[tuple[str, ...], HookCall]] = {
    "predict": (("model", "chain"), lambda h, t: h.predict(t, {"x": 1})),
    "run_remote": (("chain",), lambda h, t: h.run_remote(t, {"x": 1})),
    "async_predict": (("model", "chain"), lambda h, t: h.async_predict(t, FULL_ASYNC_REQUEST)),
    "async_predict_minimal": (("model", "chain"), lambda h, t: h.async_predict(t, {"model_input": {}})),
    "get_async_request": (("model", "chain"), lambda h, t: h.get_async_request(t, "req1")),
    "cancel_async_request": (("model", "chain"), lambda h, t: h.cancel_async_request(t, "req1")),
    "get_async_queue_status": (("model", "chain"), lambda h, t: h.get_async_queue_status(t)),
    "wake": (("model",), lambda h, t: h.wake(t)),
    "get_deployment": (("model",), lambda h, t: h.get_deployment(t)),
    "activate": (("model",), lambda h, t: h.activate(t)),
    "chat_completion": (("model",), lambda h, t: h.chat_completion(CHAT, target=t)),
    "apredict": (("model", "chain"), lambda h, t: h.apredict(t, {"x": 1})),
    "aget_async_request": (("model", "chain"), lambda h, t: h.aget_async_request(t, "req1", rate_limited=False)),
    "acancel_async_request": (("model", "chain"), lambda h, t: h.acancel_async_request(t, "req1")),
    "aget_async_queue_status": (("model", "chain"), lambda h, t: h.aget_async_queue_status(t, rate_limited=False)),
    "aget_deployment": (("model",), lambda h, t: h.aget_deployment(t)),
}
SERVICE_CALLS: dict[str, Callable[[BasetenHook], Any]] = {
    "list_models": lambda h: h.list_models(),
    "get_model": lambda h: h.get_model("abc123"),
    "list_deployments": lambda h: h.list_deployments("abc123"),
    "get_environment": lambda h: h.get_environment("abc123", "staging"),
    "get_user": lambda h: h.get_user(),
    "test_connection": lambda h: h.test_connection(),
    "chat_completion": lambda h: h.chat_completion(CHAT),
    "list_model_api_models": lambda h: h.list_model_api_models(),
}
TARGET_CASES = [
    pytest.param(kind, form, name, id=f"{kind}-{form}-{name}")
    for name, (kinds, _) in TARGET_CALLS.items()
    for kind in kinds
    for form in FORMS
]


def run(result: Any) -> Any:
    if asyncio.iscoroutine(result):

        async def main() -> Any:
            try:
                return await result
            finally:
                await close_shared_async_clients()

        return asyncio.run(main())
    return result


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[BasetenHook]:
    monkeypatch.setenv("AIRFLOW_CONN_BASETEN_DEFAULT", json.dumps({"conn_type": "baseten", "password": "k.contract"}))
    hook = BasetenHook(customer_request_id="", sleep=lambda _: None)
    yield hook
    hook.close()


@pytest.fixture
def baseten(inference_spec: Spec, management_spec: Spec) -> Iterator[respx.MockRouter]:
    with respx.mock(using="httpx", assert_all_called=False) as router:
        router.route().mock(side_effect=spec_responder(inference_spec, management_spec))
        yield router


def outside_the_specs(request: httpx.Request, target: Target | None) -> bool:
    host, path = request.headers["host"], request.url.path
    for method, where, pattern in OUTSIDE_THE_SPECS:
        if method != request.method:
            continue
        if where == "target" and target is not None and host == target.host:
            if path == pattern.format(prefix=target.prefix):
                return True
        elif where == host and path == pattern:
            return True
    return False


def check_against_spec(request: httpx.Request, inference: Spec, management: Spec, target: Target | None) -> str:
    """Assert one sent request is an operation of the right spec; return ``"METHOD template"`` (or "outside")."""
    if outside_the_specs(request, target):
        return "outside"
    host, method, path = request.headers["host"], request.method, request.url.path
    spec = management if host == "api.baseten.co" else inference
    if spec is inference:
        assert target is not None
        assert host == target.host
    found = spec.match(method, path)
    assert found is not None, f"{method} {host}{path} matches no operation of {spec.path.name}"
    tags = found.operation.get("tags") or []
    if target is not None and spec is inference and tags:
        assert ("Regional" in tags) is target.regional, f"{method} {path} has tags {tags} on {host}"
    schema = spec.request_schema(found.operation)
    if schema is None:
        assert request.content == b"", f"{method} {found.template} takes no body"
    else:
        assert request.headers["content-type"].startswith("application/json")
        errors = spec.errors(schema, json.loads(request.content))
        assert errors == [], f"{method} {found.template} body: {errors}"
    return f"{method} {found.template}"


@pytest.mark.parametrize(("kind", "form", "name"), TARGET_CASES)
def test_target_call_is_a_spec_operation(
    hook: BasetenHook,
    baseten: respx.MockRouter,
    inference_spec: Spec,
    management_spec: Spec,
    kind: str,
    form: str,
    name: str,
) -> None:
    target = Target.of(**{f"{kind}_id": "abc123"}, **FORMS[form])
    run(TARGET_CALLS[name][1](hook, target))
    assert baseten.calls.call_count == 1
    check_against_spec(baseten.calls.last.request, inference_spec, management_spec, target)


@pytest.mark.parametrize("name", SERVICE_CALLS)
def test_service_call_is_a_spec_operation(
    hook: BasetenHook, baseten: respx.MockRouter, inference_spec: Spec, management_spec: Spec, name: str
) -> None:
    run(SERVICE_CALLS[name](hook))
    assert baseten.calls.call_count >= 1
    for call in baseten.calls:
        check_against_spec(call.request, inference_spec, management_spec, None)


def test_hook_reaches_every_inference_operation(
    hook: BasetenHook, baseten: respx.MockRouter, inference_spec: Spec, management_spec: Spec
) -> None:
    """The reverse direction: a spec refresh that adds an inference endpoint fails here until the hook has it."""
    reached = set()
    for param in TARGET_CASES:
        kind, form, name = param.values
        target = Target.of(**{f"{kind}_id": "abc123"}, **FORMS[form])
        run(TARGET_CALLS[name][1](hook, target))
        reached.add(check_against_spec(baseten.calls.last.request, inference_spec, management_spec, target))
    expected = {f"{method} {template}" for method, template in inference_spec.operations()}
    assert expected - reached == set()


@pytest.mark.parametrize(
    ("kwargs", "description"),
    [
        ({"model_id": "abc123"}, "Deployed model endpoints"),
        ({"chain_id": "abc123"}, "Deployed chain endpoints"),
        ({"model_id": "abc123", "environment": "staging"}, "Deployed model endpoints"),
        ({"model_id": "abc123", "deployment_id": "dep42"}, "Deployed model endpoints"),
        ({"model_id": "abc123", "environment": "prod-us", "regional": True}, "Regional model endpoints"),
        ({"chain_id": "abc123", "environment": "prod-us", "regional": True}, "Regional chain endpoints"),
    ],
)
def test_target_host_is_a_spec_server(inference_spec: Spec, kwargs: dict[str, Any], description: str) -> None:
    from openapi_contract import server_hosts

    target = Target.of(**kwargs)
    hosts = server_hosts(inference_spec, model_id=target.id, chain_id=target.id, env_name=target.environment)
    assert hosts[description] == target.host


def test_management_host_is_the_spec_server(management_spec: Spec) -> None:
    from airflow_provider_baseten.hooks.addressing import MANAGEMENT_HOST

    assert [server["url"] for server in management_spec.doc["servers"]] == [f"https://{MANAGEMENT_HOST}"]


def test_literal_templates_win_over_parameters(management_spec: Spec) -> None:
    """The matcher itself: ``/deployments/production`` is its own operation, not ``{deployment_id}``."""
    found = management_spec.match("GET", "/v1/models/abc123/deployments/production")
    assert found is not None
    assert found.template == "/v1/models/{model_id}/deployments/production"
    assert management_spec.match("GET", "/v1/models/abc123/nothing") is None
    assert management_spec.match("PUT", "/v1/users/me") is None

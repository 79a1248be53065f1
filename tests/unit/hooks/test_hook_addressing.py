"""Addressing: every target form builds the host and path DESIGN.md gives, and hostile input never reaches a URL."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_baseten.emulator.routing import ParsedHost, parse_host
from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.hooks.addressing import (
    Endpoint,
    Target,
    join_path,
    management_endpoint,
    model_apis_endpoint,
    validate_environment,
    validate_id,
    validate_request_id,
    validate_route,
)

# Strings a template, a param or an attacker might put where an id or a name goes. None may reach a URL.
INJECTIONS = [
    "abc.evil.com#",
    "../x",
    "a/b",
    "%2e%2e",
    "https://evil.com/x",
    "//evil.com",
    "",
    " ",
    "\u0430bc",  # Cyrillic small letter a, which looks like a Latin a
    "abc\n",
    "abc\r\nHost: evil.com",
    "abc?x=1",
    "abc#frag",
    "abc@evil.com",
    "abc\x00",
    "abc\u200b",  # zero-width space
    "abc\uff11",  # full-width digit one
    "..",
    ".",
]

# (addressing kwargs, host, path prefix); the prefix is empty on regional hosts.
MODEL_FORMS: dict[str, tuple[dict[str, Any], str, str]] = {
    "production": ({}, "model-abc123.api.baseten.co", "/production"),
    "development": ({"environment": "development"}, "model-abc123.api.baseten.co", "/development"),
    "named": ({"environment": "staging"}, "model-abc123.api.baseten.co", "/environments/staging"),
    "deployment": ({"deployment_id": "dep42"}, "model-abc123.api.baseten.co", "/deployment/dep42"),
    "regional": ({"environment": "prod-us", "regional": True}, "model-abc123-prod-us.api.baseten.co", ""),
}

ACTIONS = ["predict", "run_remote", "async_predict", "async_run_remote", "async_queue_status", "wake"]


def _target(kind: str, **kwargs: Any) -> Target:
    return Target.of(**{f"{kind}_id": "abc123"}, **kwargs)


@pytest.mark.parametrize("kind", ["model", "chain"])
@pytest.mark.parametrize("form", MODEL_FORMS)
@pytest.mark.parametrize("action", ACTIONS)
def test_action_endpoint(kind: str, form: str, action: str) -> None:
    kwargs, host, prefix = MODEL_FORMS[form]
    endpoint = _target(kind, **kwargs).endpoint(action)  # type: ignore[arg-type]
    assert endpoint == Endpoint(host.replace("model-", f"{kind}-", 1), f"{prefix}/{action}")


@pytest.mark.parametrize("kind", ["model", "chain"])
@pytest.mark.parametrize("form", MODEL_FORMS)
def test_async_request_endpoint_has_no_prefix(kind: str, form: str) -> None:
    kwargs, host, _ = MODEL_FORMS[form]
    endpoint = _target(kind, **kwargs).async_request_endpoint("req-1_a")
    assert endpoint == Endpoint(host.replace("model-", f"{kind}-", 1), "/async_request/req-1_a")


@pytest.mark.parametrize("form", MODEL_FORMS)
@pytest.mark.parametrize("route", ["v1/chat/completions", "/v1/chat/completions/", "v1/models", "health"])
def test_sync_endpoint(form: str, route: str) -> None:
    kwargs, host, prefix = MODEL_FORMS[form]
    endpoint = _target("model", **kwargs).sync_endpoint(route)
    assert endpoint == Endpoint(host, f"{prefix}/sync/{route.strip('/')}")


@pytest.mark.parametrize(
    ("kwargs", "status_path"),
    [
        ({}, "/v1/models/abc123/deployments/production"),
        ({"environment": "development"}, "/v1/models/abc123/deployments/development"),
        ({"environment": "staging"}, "/v1/models/abc123/environments/staging"),
        ({"deployment_id": "dep42"}, "/v1/models/abc123/deployments/dep42"),
        ({"environment": "prod-us", "regional": True}, "/v1/models/abc123/environments/prod-us"),
    ],
)
def test_management_status_and_activate_endpoints(kwargs: dict[str, Any], status_path: str) -> None:
    target = _target("model", **kwargs)
    assert target.deployment_status_endpoint() == Endpoint("api.baseten.co", status_path)
    assert target.activate_endpoint() == Endpoint("api.baseten.co", f"{status_path}/activate")


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.sync_endpoint("v1/chat/completions"),
        lambda t: t.deployment_status_endpoint(),
        lambda t: t.activate_endpoint(),
    ],
    ids=["sync", "status", "activate"],
)
def test_model_only_endpoints_refuse_chains(call: Any) -> None:
    with pytest.raises(BasetenConfigError, match="model"):
        call(_target("chain"))


def test_service_endpoints() -> None:
    assert management_endpoint("users", "me") == Endpoint("api.baseten.co", "/v1/users/me")
    assert model_apis_endpoint("chat", "completions") == Endpoint("inference.baseten.co", "/v1/chat/completions")
    assert model_apis_endpoint() == Endpoint("inference.baseten.co", "/v1")


@pytest.mark.parametrize(
    ("segments", "path"),
    [(("a", "b"), "/a/b"), (("", "a/", "/b"), "/a/b"), (("a//b",), "/a/b"), ((), "/"), (("", ""), "/")],
)
def test_join_path_never_doubles_slashes(segments: tuple[str, ...], path: str) -> None:
    assert join_path(*segments) == path


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("field", ["model_id", "chain_id"])
def test_target_id_injection_rejected(field: str, value: str) -> None:
    with pytest.raises(BasetenConfigError, match=field):
        Target.of(**{field: value})


@pytest.mark.parametrize("value", INJECTIONS)
def test_deployment_id_injection_rejected(value: str) -> None:
    with pytest.raises(BasetenConfigError, match="deployment_id"):
        Target.of(model_id="abc123", deployment_id=value)


@pytest.mark.parametrize("value", [*INJECTIONS, "Staging", "-staging", "stag_ing"])
def test_environment_injection_rejected(value: str) -> None:
    with pytest.raises(BasetenConfigError, match="environment"):
        Target.of(model_id="abc123", environment=value)


def test_empty_environment_is_not_production() -> None:
    """A template that rendered to "" must fail, not silently call production."""
    with pytest.raises(BasetenConfigError, match="environment"):
        Target.of(model_id="abc123", environment="")


def test_none_environment_means_production() -> None:
    assert Target.of(model_id="abc123", environment=None).environment == "production"


@pytest.mark.parametrize("value", INJECTIONS)
def test_request_id_injection_rejected(value: str) -> None:
    with pytest.raises(BasetenConfigError, match="request id"):
        _target("model").async_request_endpoint(value)


@pytest.mark.parametrize(
    "route",
    [
        "abc.evil.com#",
        "../x",
        "v1/../../x",
        "%2e%2e",
        "https://evil.com/x",
        "",
        "/",
        "v1//chat",
        "\u0430bc",
        "abc\n",
        "v1/./chat",
        "v1/chat?x=1",
        ".hidden",
    ],
)
def test_route_injection_rejected(route: str) -> None:
    with pytest.raises(BasetenConfigError, match="route"):
        validate_route(route)


@pytest.mark.parametrize("value", [123, None, b"abc", ["abc"]])
def test_non_string_ids_rejected(value: Any) -> None:
    with pytest.raises(BasetenConfigError):
        validate_id(value)


def test_validators_accept_plain_values() -> None:
    assert validate_id("AbC123") == "AbC123"
    assert validate_environment("prod-us-2") == "prod-us-2"
    assert validate_request_id("a" * 128) == "a" * 128
    with pytest.raises(BasetenConfigError):
        validate_request_id("a" * 129)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"model_id": "a1", "chain_id": "b2"}, "exactly one"),
        ({"model_id": "a1", "deployment_id": "d1", "environment": "staging"}, "only one"),
        ({"model_id": "a1", "deployment_id": "d1", "environment": "development"}, "only one"),
        ({"model_id": "a1", "deployment_id": "d1", "regional": True}, "regional"),
    ],
)
def test_conflicting_addressing_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(BasetenConfigError, match=message):
        Target.of(**kwargs)


@pytest.mark.parametrize(
    ("target", "label"),
    [
        (Target.of(model_id="a1"), "model a1 (production)"),
        (Target.of(chain_id="c1", deployment_id="d1"), "chain c1 (deployment d1)"),
        (Target.of(model_id="a1", environment="prod-us", regional=True), "model a1 (prod-us, regional)"),
    ],
)
def test_describe(target: Target, label: str) -> None:
    assert target.describe() == label


@pytest.mark.parametrize("kind", ["model", "chain"])
@pytest.mark.parametrize("form", MODEL_FORMS)
def test_parse_host_inverts_target_host(kind: str, form: str) -> None:
    target = _target(kind, **MODEL_FORMS[form][0])
    env = target.environment if target.regional else None
    assert parse_host(target.host) == ParsedHost("target", kind, "abc123", env)  # type: ignore[arg-type]
    assert parse_host(f"{target.host}:443") == ParsedHost("target", kind, "abc123", env)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "parsed"),
    [
        ("api.baseten.co", ParsedHost("management")),
        ("API.Baseten.co:443", ParsedHost("management")),
        ("inference.baseten.co", ParsedHost("model_apis")),
        ("evil.com", None),
        ("model-abc.api.baseten.co.evil.com", None),
        ("model-a.b.api.baseten.co", None),
        ("widget-abc.api.baseten.co", None),
        ("[::1]:8080", None),
    ],
)
def test_parse_host_services_and_strangers(host: str, parsed: ParsedHost | None) -> None:
    assert parse_host(host) == parsed

"""PydanticAIBasetenHook: the ``pydanticai_baseten`` connection form, model names, the URL of each target kind and
the provider's error rules, with HTTP mocked by respx (no network)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx
from hook_testing import API_KEY, COMPLETION

pytest.importorskip(
    "airflow.providers.common.ai.hooks.pydantic_ai",
    reason="apache-airflow-providers-common-ai is not installed (pip install 'airflow-provider-baseten[common-ai]')",
)

from airflow.providers.common.compat.sdk import AirflowFailException
from pydantic_ai.exceptions import ModelHTTPError, ModelNotFoundError, ModelServerError

from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.get_provider_info import (
    PYDANTIC_AI_CONN_FIELDS,
    PYDANTIC_AI_UI_FIELD_BEHAVIOUR,
    get_provider_info,
)
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.pydantic_ai import (
    KNOWN_EXTRAS,
    BasetenModelAuthError,
    PydanticAIBasetenHook,
)

SLUG = "deepseek-ai/DeepSeek-V3.1"


@pytest.fixture
def set_llm_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    def _set(conn_id: str = "pydanticai_baseten_default", **extra: Any) -> None:
        conn = {"conn_type": "pydanticai_baseten", "extra": extra}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))

    return _set


def run(hook: PydanticAIBasetenHook, prompt: str = "hello") -> Any:
    return hook.create_agent(instructions="Be brief.").run_sync(prompt)


# --- the connection form ------------------------------------------------------------------------------------------


def test_connection_type_is_registered_with_the_hook_class() -> None:
    (entry,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == "pydanticai_baseten"]
    assert entry["hook-class-name"] == f"{PydanticAIBasetenHook.__module__}.{PydanticAIBasetenHook.__name__}"
    assert entry["hook-name"] == PydanticAIBasetenHook.hook_name
    assert PydanticAIBasetenHook.conn_type == "pydanticai_baseten"
    assert entry["conn-fields"] is PYDANTIC_AI_CONN_FIELDS
    assert set(PYDANTIC_AI_CONN_FIELDS) == set(KNOWN_EXTRAS)


def test_form_hides_key_and_host_and_matches_airflow_schema() -> None:
    from airflow.providers_manager import _create_customized_form_field_behaviours_schema_validator

    behaviour = PydanticAIBasetenHook.get_ui_field_behaviour()
    assert {"password", "host", "login", "schema", "port"} <= set(behaviour["hidden_fields"])
    assert behaviour["hidden_fields"] == PYDANTIC_AI_UI_FIELD_BEHAVIOUR["hidden-fields"]
    validator = _create_customized_form_field_behaviours_schema_validator()
    assert [error.message for error in validator.iter_errors(behaviour)] == []


@pytest.mark.parametrize("name", sorted(PYDANTIC_AI_CONN_FIELDS))
def test_conn_field_is_described(name: str) -> None:
    field = PYDANTIC_AI_CONN_FIELDS[name]
    assert field["label"].strip()
    assert len(field["description"]) > 10
    assert field["schema"]["type"]


def test_common_ai_dispatches_the_connection_type_to_this_hook(conn: None, set_llm_conn: Callable[..., None]) -> None:
    from airflow.providers.common.ai.hooks.pydantic_ai import PydanticAIHook

    set_llm_conn(model=f"baseten:{SLUG}")
    hook = PydanticAIHook.get_hook("pydanticai_baseten_default", hook_params={"model_id": None})
    assert type(hook) is PydanticAIBasetenHook


# --- model names and the URL of each target kind -----------------------------------------------------------------

TARGETS = [
    pytest.param({}, "https://inference.baseten.co/v1", id="model-apis"),
    pytest.param({"model_id": "abc123"}, "https://model-abc123.api.baseten.co/production/sync/v1", id="production"),
    pytest.param(
        {"model_id": "abc123", "environment": "development"},
        "https://model-abc123.api.baseten.co/development/sync/v1",
        id="development",
    ),
    pytest.param(
        {"model_id": "abc123", "environment": "staging"},
        "https://model-abc123.api.baseten.co/environments/staging/sync/v1",
        id="named-environment",
    ),
    pytest.param(
        {"model_id": "abc123", "deployment_id": "dep42"},
        "https://model-abc123.api.baseten.co/deployment/dep42/sync/v1",
        id="deployment",
    ),
    pytest.param(
        {"model_id": "abc123", "environment": "staging", "regional": True},
        "https://model-abc123-staging.api.baseten.co/sync/v1",
        id="regional",
    ),
]


@pytest.mark.parametrize(("extra", "base"), TARGETS)
def test_each_target_kind_posts_to_its_route(
    conn: None, set_llm_conn: Callable[..., None], api: respx.MockRouter, extra: dict[str, Any], base: str
) -> None:
    set_llm_conn(model="served-name" if extra else f"baseten:{SLUG}", **extra)
    route = api.post(f"{base}/chat/completions").respond(200, json=COMPLETION)
    assert run(PydanticAIBasetenHook()).output == "hi"
    (call,) = route.calls
    assert call.request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert json.loads(call.request.content)["model"] == ("served-name" if extra else SLUG)


def test_gateway_gets_every_request_with_the_baseten_host_header(
    set_conn: Callable[..., None], set_llm_conn: Callable[..., None], api: respx.MockRouter
) -> None:
    set_conn(host="http://127.0.0.1:8765", extra={"headers": {"X-Team": "ml"}})
    set_llm_conn(model_id="abc123", environment="staging")
    route = api.post("http://127.0.0.1:8765/environments/staging/sync/v1/chat/completions").respond(
        200, json=COMPLETION
    )
    run(PydanticAIBasetenHook())
    (call,) = route.calls
    assert call.request.headers["Host"] == "model-abc123.api.baseten.co"
    assert call.request.headers["X-Team"] == "ml"
    assert json.loads(call.request.content)["model"] == "abc123"  # no model configured: the deployed model id


def test_hook_arguments_override_the_extra(
    conn: None, set_conn: Callable[..., None], set_llm_conn: Callable[..., None], api: respx.MockRouter
) -> None:
    set_conn("baseten_eu", host="http://127.0.0.1:9000")
    set_llm_conn(model="baseten:zai-org/GLM-5.2")
    route = api.post("http://127.0.0.1:9000/deployment/dep9/sync/v1/chat/completions").respond(200, json=COMPLETION)
    hook = PydanticAIBasetenHook(
        model_id="my-served", baseten_conn_id="baseten_eu", target=Target.of(model_id="xyz9", deployment_id="dep9")
    )
    run(hook)
    assert json.loads(route.calls[0].request.content)["model"] == "my-served"


@pytest.mark.parametrize("name", [SLUG, f"baseten:{SLUG}"])
def test_slug_with_or_without_prefix(conn: None, set_llm_conn: Callable[..., None], name: str) -> None:
    set_llm_conn(model=name)
    assert PydanticAIBasetenHook().get_conn().model_name == SLUG


def test_model_settings_reach_the_request(conn: None, set_llm_conn: Callable[..., None], api: respx.MockRouter) -> None:
    set_llm_conn(model=f"baseten:{SLUG}")
    route = api.post("https://inference.baseten.co/v1/chat/completions").respond(200, json=COMPLETION)
    agent = PydanticAIBasetenHook().create_agent(instructions="Be brief.")
    agent.run_sync("hello", model_settings={"temperature": 0.2, "max_tokens": 7, "seed": 3})
    body = json.loads(route.calls[0].request.content)
    assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.2, 7, 3)  # Baseten's field, not OpenAI's
    assert "max_completion_tokens" not in body


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param({"model": "openai:gpt-5"}, "names another provider", id="other-provider"),
        pytest.param({}, "No model for connection", id="no-model"),
        pytest.param({"model": SLUG, "environment": "staging"}, "needs 'model_id'", id="environment-without-id"),
        pytest.param({"model_id": "abc123", "regional": "yes"}, "'regional' must be true or false", id="bad-flag"),
        pytest.param({"model_id": "abc/../x"}, "Invalid model_id", id="bad-id"),
    ],
)
def test_invalid_configuration_fails_before_any_request(
    conn: None, set_llm_conn: Callable[..., None], api: respx.MockRouter, extra: dict[str, Any], message: str
) -> None:
    set_llm_conn(**extra)
    with pytest.raises(BasetenConfigError, match=message):
        PydanticAIBasetenHook().get_conn()
    assert not api.calls


def test_unknown_extra_warns(conn: None, set_llm_conn: Callable[..., None], caplog: pytest.LogCaptureFixture) -> None:
    set_llm_conn(model=SLUG, temprature=0.1)
    PydanticAIBasetenHook().get_conn()
    assert "temprature" in caplog.text


def test_credentials_and_client_come_from_the_baseten_connection(
    set_conn: Callable[..., None], set_llm_conn: Callable[..., None], mocker: Any
) -> None:
    set_conn(extra={"timeout": 77, "connect_timeout": 3, "proxy": "http://proxy.internal:3128"})
    set_llm_conn(model=SLUG)
    factory = mocker.patch("airflow_provider_baseten.hooks.baseten.build_async_client", wraps=None)
    factory.return_value = httpx.AsyncClient()
    masked = mocker.patch("airflow.providers.common.compat.sdk.mask_secret")
    model = PydanticAIBasetenHook().get_conn()
    (settings,), _ = factory.call_args
    assert (settings.timeout, settings.connect_timeout, settings.proxy) == (77, 3, "http://proxy.internal:3128")
    client = model.client  # the AsyncOpenAI client pydantic-ai uses
    assert client._client is factory.return_value
    assert client.max_retries == 0
    assert client.timeout.read == 77
    masked.assert_any_call(API_KEY)


# --- errors -------------------------------------------------------------------------------------------------------


def test_rejected_key_fails_the_task_without_retries(
    conn: None, set_llm_conn: Callable[..., None], api: respx.MockRouter
) -> None:
    set_llm_conn(model=SLUG)
    route = api.post("https://inference.baseten.co/v1/chat/completions").respond(401, json={"error": "bad key"})
    with pytest.raises(BasetenModelAuthError, match="check the API key") as err:
        run(PydanticAIBasetenHook())
    assert isinstance(err.value, AirflowFailException)
    assert isinstance(err.value, ModelHTTPError)
    assert err.value.status_code == 401
    assert API_KEY not in str(err.value)
    assert route.call_count == 1


def test_unknown_slug_says_it_is_not_enabled_for_the_workspace(
    conn: None, set_llm_conn: Callable[..., None], api: respx.MockRouter
) -> None:
    set_llm_conn(model="baseten:nope/x")
    api.post("https://inference.baseten.co/v1/chat/completions").respond(404, json={"error": "Model not found"})
    with pytest.raises(ModelNotFoundError, match="not enabled for this workspace") as err:
        run(PydanticAIBasetenHook())
    assert not isinstance(err.value, AirflowFailException)  # a fallback chain still moves on


def test_deployed_model_404_names_the_deployment(
    conn: None, set_llm_conn: Callable[..., None], api: respx.MockRouter
) -> None:
    set_llm_conn(model_id="abc123")
    api.post("https://model-abc123.api.baseten.co/production/sync/v1/chat/completions").respond(404, json={})
    with pytest.raises(ModelNotFoundError, match=r"model abc123 \(production\) answered 404: check the model"):
        run(PydanticAIBasetenHook())


def test_server_error_keeps_its_category(conn: None, set_llm_conn: Callable[..., None], api: respx.MockRouter) -> None:
    set_llm_conn(model=SLUG)
    route = api.post("https://inference.baseten.co/v1/chat/completions").respond(500, json={"error": "boom"})
    with pytest.raises(ModelServerError, match="answered 500"):
        run(PydanticAIBasetenHook())
    assert route.call_count == 1  # the chat POST may have reached the model: never re-sent


def test_fallback_chain_mixes_baseten_with_another_connection_type(
    conn: None, set_llm_conn: Callable[..., None], monkeypatch: pytest.MonkeyPatch, api: respx.MockRouter
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_PYDANTICAI_TEST", json.dumps({"conn_type": "pydanticai", "extra": {"model": "test"}})
    )
    set_llm_conn(model="baseten:nope/x", fallback_conn_ids=["pydanticai_test"])
    route = api.post("https://inference.baseten.co/v1/chat/completions").respond(404, json={"error": "not found"})
    assert run(PydanticAIBasetenHook()).output  # pydantic-ai's TestModel answered
    assert route.call_count == 1


def test_a_baseten_fallback_gets_the_forwarded_bare_slug(
    conn: None, set_llm_conn: Callable[..., None], api: respx.MockRouter
) -> None:
    set_llm_conn("pydanticai_backup", baseten_conn_id="baseten_default")
    set_llm_conn(model=SLUG, fallback_conn_ids=["pydanticai_backup"])
    route = api.post("https://inference.baseten.co/v1/chat/completions")
    route.side_effect = [httpx.Response(503, json={"error": "overloaded"}), httpx.Response(200, json=COMPLETION)]
    assert run(PydanticAIBasetenHook()).output == "hi"
    assert [json.loads(call.request.content)["model"] for call in route.calls] == [SLUG, SLUG]


def test_test_connection_makes_one_call_that_costs_no_inference(
    conn: None, set_llm_conn: Callable[..., None], api: respx.MockRouter
) -> None:
    set_llm_conn(model=SLUG)
    api.get("https://api.baseten.co/v1/users/me").respond(200, json={"user_id": "u1", "email": "me@example.com"})
    chat = api.post("https://inference.baseten.co/v1/chat/completions")
    assert PydanticAIBasetenHook().test_connection() == (True, "Connected to Baseten as me@example.com.")
    assert not chat.called

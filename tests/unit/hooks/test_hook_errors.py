"""Error mapping and masking: typed errors carry Baseten's details, and the key never shows up anywhere."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from typing import Any

import pytest
import respx
from hook_testing import API_KEY

from airflow_provider_baseten.exceptions import (
    BasetenAmbiguousSubmitError,
    BasetenAPIError,
    BasetenAsyncRequestError,
    BasetenAuthError,
    BasetenConfigError,
    BasetenError,
    BasetenModelAPINotEnabledError,
    BasetenModelError,
    BasetenNotFoundError,
    BasetenPayloadTooLargeError,
    BasetenRateLimitError,
    BasetenTimeoutError,
)
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.baseten import BasetenHook

PREDICT_URL = "https://model-abc123.api.baseten.co/production/predict"
MODEL = Target.of(model_id="abc123")


@pytest.fixture
def no_retries(set_conn: Callable[..., None]) -> None:
    set_conn(extra={"max_retries": 0})


@pytest.mark.parametrize(
    ("status", "error_class", "hint"),
    [
        (400, BasetenModelError, None),
        (401, BasetenAuthError, "API key"),
        (403, BasetenAuthError, "invoke-only"),
        (404, BasetenNotFoundError, "deactivated deployment"),
        (413, BasetenPayloadTooLargeError, "pass a URL"),
        (422, BasetenModelError, None),
        (429, BasetenRateLimitError, "concurrency"),
        (500, BasetenModelError, None),
        (502, BasetenModelError, None),
        (503, BasetenModelError, None),
        (504, BasetenTimeoutError, "BasetenAsyncPredictOperator"),
        (529, BasetenRateLimitError, "concurrency"),
    ],
)
def test_status_maps_to_error(
    no_retries: None,
    make_hook: Callable[..., BasetenHook],
    mock_http: respx.MockRouter,
    status: int,
    error_class: type[BasetenAPIError],
    hint: str | None,
) -> None:
    mock_http.post(PREDICT_URL).respond(status, json={"error": "it failed"}, headers={"X-BASETEN-REQUEST-ID": "bt-9"})
    with pytest.raises((BasetenAPIError, BasetenAmbiguousSubmitError)) as info:
        make_hook().predict(MODEL, {})
    err = info.value
    if isinstance(
        err, BasetenAmbiguousSubmitError
    ):  # a 502/503 Baseten does not say it refused: the model may have run
        assert status in (502, 503)
        err = err.__cause__
    assert type(err) is error_class
    assert (err.status_code, err.error, err.request_id) == (status, "it failed", "bt-9")
    assert f"answered {status}: it failed" in str(err)
    assert "model-abc123.api.baseten.co/production/predict" in str(err)
    if hint:
        assert "Hint:" in str(err)
        assert hint in str(err)
    else:
        assert "Hint:" not in str(err)


def test_model_apis_404_hints_at_enabled_slugs(no_retries: None, make_hook, mock_http: respx.MockRouter) -> None:
    mock_http.post("https://inference.baseten.co/v1/chat/completions").respond(404, json={"error": "no such model"})
    with pytest.raises(BasetenModelAPINotEnabledError, match="list_model_api_models") as info:
        make_hook().chat_completion({"model": "acme/unknown", "messages": [{"role": "user", "content": "hi"}]})
    assert isinstance(info.value, BasetenNotFoundError)
    assert "acme/unknown" in str(info.value)


def test_deployed_model_404_is_plain_not_found(no_retries: None, make_hook, mock_http: respx.MockRouter) -> None:
    mock_http.post(PREDICT_URL).respond(404, json={"error": "model not found"})
    with pytest.raises(BasetenNotFoundError) as info:
        make_hook().predict(MODEL, {})
    assert not isinstance(info.value, BasetenModelAPINotEnabledError)


def test_error_code_and_detail(no_retries: None, make_hook, mock_http: respx.MockRouter) -> None:
    body = {"error": "Model is not ready", "error_code": "model_not_ready", "detail": "still loading weights"}
    mock_http.post(PREDICT_URL).respond(400, json=body)
    with pytest.raises(BasetenModelError) as info:
        make_hook().predict(MODEL, {})
    err = info.value
    assert (err.error, err.error_code, err.detail) == ("Model is not ready", "model_not_ready", "still loading weights")
    assert str(err).endswith("answered 400: Model is not ready [model_not_ready] (still loading weights)")


def test_detail_only_body(no_retries: None, make_hook, mock_http: respx.MockRouter) -> None:
    mock_http.post(PREDICT_URL).respond(422, json={"detail": [{"loc": ["text"], "msg": "required"}]})
    with pytest.raises(BasetenModelError) as info:
        make_hook().predict(MODEL, {})
    assert "required" in str(info.value.detail)
    assert info.value.error is None


def test_non_json_model_body_is_truncated(no_retries: None, make_hook, mock_http: respx.MockRouter) -> None:
    body = "Traceback (most recent call last):\n" + "x" * 5000
    mock_http.post(PREDICT_URL).respond(500, text=body)
    with pytest.raises(BasetenModelError) as info:
        make_hook().predict(MODEL, {})
    err = info.value
    assert err.error is not None
    assert err.error.startswith("Traceback")
    assert err.error.endswith(f"... ({len(body)} characters)")
    assert len(err.error) < 600
    assert len(str(err)) < 800


def test_json_body_without_error_fields_is_shown_as_text(no_retries: None, make_hook, mock_http) -> None:
    mock_http.post(PREDICT_URL).respond(500, json={"message": "model crashed"})
    with pytest.raises(BasetenModelError, match="model crashed"):
        make_hook().predict(MODEL, {})


def test_empty_error_body_uses_the_reason(no_retries: None, make_hook, mock_http: respx.MockRouter) -> None:
    mock_http.post(PREDICT_URL).respond(500)
    with pytest.raises(BasetenModelError, match="Internal Server Error"):
        make_hook().predict(MODEL, {})


@pytest.mark.parametrize(
    ("call", "body"),
    [
        (lambda h: h.get_async_request(MODEL, "req1"), {"unexpected": True}),
        (lambda h: h.get_async_request(MODEL, "req1"), "<html>proxy</html>"),
        (lambda h: h.get_deployment(MODEL), "<html>proxy</html>"),
        (lambda h: h.get_deployment(MODEL), {"id": "d1"}),
        (lambda h: h.list_models(), ["not", "an", "object"]),
        (lambda h: h.get_model("abc123"), "<html>proxy</html>"),
        (lambda h: h.list_deployments("abc123"), {"deployments": [{"id": "d1"}]}),
        (lambda h: h.list_model_api_models(), "<html>proxy</html>"),
    ],
    ids=[
        "status-shape",
        "status-html",
        "deployment-html",
        "deployment-shape",
        "models-list",
        "model-html",
        "deployments-shape",
        "model-apis-html",
    ],
)
def test_unexpected_2xx_body_is_a_model_error(
    hook: BasetenHook, mock_http: respx.MockRouter, call: Any, body: Any
) -> None:
    answer = {"json": body} if not isinstance(body, str) else {"text": body}
    mock_http.route().respond(200, **answer)
    with pytest.raises(BasetenModelError):
        call(hook)


async def test_async_unexpected_deployment_body_is_a_model_error(hook: BasetenHook, mock_http) -> None:
    mock_http.route().respond(200, text="<html>proxy</html>")
    with pytest.raises(BasetenModelError):
        await hook.aget_deployment(MODEL)


def test_environment_without_current_deployment(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    mock_http.route().respond(200, json={"name": "staging", "current_deployment": None})
    with pytest.raises(BasetenNotFoundError, match="no current deployment"):
        hook.get_deployment(Target.of(model_id="abc123", environment="staging"))


def test_api_errors_survive_pickling() -> None:
    err = BasetenRateLimitError(
        "slow", status_code=429, error="e", error_code="rate_limited", request_id="r", retry_after=3
    )
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is BasetenRateLimitError
    assert str(clone) == str(err)
    assert str(clone).count("Hint:") == 1
    assert (clone.status_code, clone.error_code, clone.request_id, clone.retry_after) == (429, "rate_limited", "r", 3)


def test_async_request_error_keeps_its_manifest_when_pickled() -> None:
    clone = pickle.loads(pickle.dumps(BasetenAsyncRequestError("failed", manifest={"request_id": "r1"})))
    assert clone.manifest == {"request_id": "r1"}


def test_every_error_is_a_baseten_error() -> None:
    for cls in (BasetenConfigError, BasetenAPIError, BasetenAmbiguousSubmitError, BasetenAsyncRequestError):
        assert issubclass(cls, BasetenError)
    assert issubclass(BasetenConfigError, ValueError)


# --- masking ---------------------------------------------------------------------------------------------------


ECHOES = {
    "error": {"json": {"error": f"bad key {API_KEY}"}},
    "detail": {"json": {"error": "bad", "detail": f"got Api-Key {API_KEY}"}},
    "error_code": {"json": {"error_code": API_KEY}},
    "text": {"text": f"Unauthorized: Authorization: Api-Key {API_KEY}"},
}


@pytest.mark.parametrize("scheme", ["Api-Key", "Bearer"])
@pytest.mark.parametrize("status", [400, 401, 500])
@pytest.mark.parametrize("echo", ECHOES)
def test_key_never_in_errors_or_logs(
    set_conn: Callable[..., None],
    make_hook: Callable[..., BasetenHook],
    mock_http: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    scheme: str,
    status: int,
    echo: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    set_conn(extra={"auth_scheme": scheme, "max_retries": 0})
    mock_http.post(PREDICT_URL).respond(status, **ECHOES[echo])
    with pytest.raises(BasetenAPIError) as info:
        make_hook().predict(MODEL, {})
    err = info.value
    texts = [str(err), repr(err), str(err.error), str(err.detail), str(err.error_code), caplog.text]
    assert all(API_KEY not in text for text in texts)
    assert API_KEY not in pickle.dumps(err).decode("latin-1")


def test_key_never_in_parse_errors(hook: BasetenHook, mock_http: respx.MockRouter, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    mock_http.route().respond(200, text=f"<html>your key {API_KEY}</html>")
    with pytest.raises(BasetenModelError) as info:
        hook.get_async_request(MODEL, "req1")
    assert API_KEY not in str(info.value)
    assert API_KEY not in caplog.text


def test_key_never_in_logs_of_a_successful_call(hook: BasetenHook, baseten_api, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    hook.predict(MODEL, {"x": 1})
    assert "bt-req-1" in caplog.text  # X-BASETEN-REQUEST-ID is logged at debug
    assert API_KEY not in caplog.text


def test_key_never_in_ambiguous_submit_error(hook: BasetenHook, mock_http: respx.MockRouter) -> None:
    import httpx

    mock_http.post(PREDICT_URL).mock(side_effect=httpx.ReadTimeout(f"timed out {API_KEY}"))
    with pytest.raises(BasetenAmbiguousSubmitError) as info:
        hook.predict(MODEL, {})
    assert API_KEY not in str(info.value)


@pytest.mark.parametrize(
    ("password", "masked"),
    [(API_KEY, [API_KEY]), (f"{API_KEY}\n", [API_KEY, f"{API_KEY}\n"]), (f"  {API_KEY}", [API_KEY, f"  {API_KEY}"])],
)
def test_mask_secret_is_called_for_the_key(
    set_conn: Callable[..., None], make_hook, mocker: Any, password: str, masked: list[str]
) -> None:
    mask = mocker.patch("airflow.providers.common.compat.sdk.mask_secret")
    set_conn(password=password)
    assert make_hook().settings.api_key == API_KEY
    assert [call.args[0] for call in mask.call_args_list] == masked


async def test_mask_secret_is_called_on_async_lookup(conn: None, make_hook, mocker: Any) -> None:
    mask = mocker.patch("airflow.providers.common.compat.sdk.mask_secret")
    await make_hook().aget_settings()
    mask.assert_called_once_with(API_KEY)


@pytest.mark.parametrize("password", [None, ""])
def test_missing_key_names_the_connection(set_conn: Callable[..., None], make_hook, password: Any) -> None:
    set_conn(conn_id="team_baseten", password=password)
    with pytest.raises(BasetenConfigError, match="'team_baseten' has no API key"):
        make_hook("team_baseten").settings


def test_bad_extras_fail_through_the_hook_naming_the_key(set_conn: Callable[..., None], make_hook) -> None:
    set_conn(extra={"timeout": "soon"})
    with pytest.raises(BasetenConfigError, match="'timeout'"):
        make_hook().settings

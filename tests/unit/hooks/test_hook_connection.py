"""The ``baseten`` connection: extras parsing, gateway URLs and the key, with errors that name a field, not a secret."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hook_testing import API_KEY

from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.get_provider_info import CONN_FIELDS
from airflow_provider_baseten.hooks.connection import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_PREDICT_TIMEOUT,
    DEFAULT_STATUS_RATE_LIMIT,
    KNOWN_EXTRAS,
    ClientSettings,
    gateway_url,
    settings_from_connection,
)

SECRET_VALUE = "hunter2-do-not-echo"


def settings(extra: Any = None, *, password: str | None = API_KEY, host: str | None = None, port: int | None = None):
    return settings_from_connection(conn_id="my_conn", password=password, host=host, port=port, extra=extra)


def test_defaults() -> None:
    s = settings()
    assert s == ClientSettings(api_key=API_KEY, conn_id="my_conn")
    assert (s.timeout, s.connect_timeout, s.max_retries) == (
        DEFAULT_PREDICT_TIMEOUT,
        DEFAULT_CONNECT_TIMEOUT,
        DEFAULT_MAX_RETRIES,
    )
    assert s.timeout == 1230.0
    assert s.status_rate_limit == DEFAULT_STATUS_RATE_LIMIT
    assert (s.gateway, s.auth_scheme, s.verify, s.proxy, s.headers) == (None, "Api-Key", True, None, ())


def test_every_known_extra_is_a_declared_conn_field() -> None:
    assert set(CONN_FIELDS) == set(KNOWN_EXTRAS)


@pytest.mark.parametrize("extra", [None, "", {}, "{}"])
def test_empty_extras(extra: Any) -> None:
    assert settings(extra) == ClientSettings(api_key=API_KEY, conn_id="my_conn")


@pytest.mark.parametrize(
    ("extra", "field", "value"),
    [
        ({"auth_scheme": "Bearer"}, "auth_scheme", "Bearer"),
        ({"auth_scheme": "bearer"}, "auth_scheme", "Bearer"),
        ({"auth_scheme": "API-KEY"}, "auth_scheme", "Api-Key"),
        ({"auth_scheme": None}, "auth_scheme", "Api-Key"),
        ({"timeout": 60}, "timeout", 60.0),
        ({"timeout": "90.5"}, "timeout", 90.5),
        ({"timeout": ""}, "timeout", DEFAULT_PREDICT_TIMEOUT),
        ({"connect_timeout": 3}, "connect_timeout", 3.0),
        ({"max_retries": 0}, "max_retries", 0),
        ({"max_retries": "3"}, "max_retries", 3),
        ({"max_retries": 20}, "max_retries", 20),
        ({"verify": False}, "verify", False),
        ({"verify": "false"}, "verify", False),
        ({"verify": "TRUE"}, "verify", True),
        ({"verify": "/etc/ssl/ca.pem"}, "verify", "/etc/ssl/ca.pem"),
        ({"proxy": "http://proxy:3128"}, "proxy", "http://proxy:3128"),
        ({"proxy": ""}, "proxy", None),
        ({"headers": {"X-Team": "ml"}}, "headers", (("X-Team", "ml"),)),
        ({"headers": '{"X-Team": "ml"}'}, "headers", (("X-Team", "ml"),)),
        ({"status_rate_limit": 5}, "status_rate_limit", 5.0),
    ],
)
def test_extra_values(extra: dict[str, Any], field: str, value: Any) -> None:
    assert getattr(settings(extra), field) == value


def test_extras_as_json_string() -> None:
    assert settings(json.dumps({"timeout": 42, "auth_scheme": "Bearer"})).auth_header == f"Bearer {API_KEY}"


def test_auth_header_default_scheme() -> None:
    assert settings().auth_header == f"Api-Key {API_KEY}"


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"auth_scheme": "Basic"}, "auth_scheme"),
        ({"auth_scheme": 1}, "auth_scheme"),
        ({"timeout": "soon"}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"timeout": [1]}, "timeout"),
        ({"connect_timeout": -1}, "connect_timeout"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"max_retries": 21}, "max_retries"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": False}, "max_retries"),
        ({"verify": 3}, "verify"),
        ({"verify": ["x"]}, "verify"),
        ({"status_rate_limit": 0}, "status_rate_limit"),
        ({"proxy": 3128}, "proxy"),
        ({"headers": ["X-Team", "ml"]}, "headers"),
        ({"headers": {"X-Team": 1}}, "headers"),
        ({"headers": "not json"}, "headers"),
    ],
)
def test_bad_extra_names_the_key(extra: dict[str, Any], key: str) -> None:
    with pytest.raises(BasetenConfigError, match=key):
        settings(extra)


@pytest.mark.parametrize(
    "extra",
    [
        {"proxy": f"proxy.internal:3128?token={SECRET_VALUE}"},
        {"headers": f'{{"X-Token": "{SECRET_VALUE}"'},
        {"headers": {"X-Token": SECRET_VALUE, "X-Count": 3}},
        {"headers": {"Authorization": f"Bearer {SECRET_VALUE}"}},
    ],
    ids=["proxy-without-scheme", "headers-bad-json", "headers-non-string", "headers-authorization"],
)
def test_bad_secret_extra_never_echoes_the_value(extra: dict[str, Any]) -> None:
    with pytest.raises(BasetenConfigError) as info:
        settings(extra)
    assert SECRET_VALUE not in str(info.value)
    assert next(iter(extra)) in str(info.value)


@pytest.mark.parametrize("name", ["Authorization", "authorization", "Host", "Content-Length"])
def test_headers_may_not_override_protocol_headers(name: str) -> None:
    with pytest.raises(BasetenConfigError, match=f"headers.*{name}"):
        settings({"headers": {name: "x"}})


def test_invalid_json_extra_does_not_echo_it() -> None:
    with pytest.raises(BasetenConfigError, match="not valid JSON") as info:
        settings(f'{{"proxy": "http://user:{SECRET_VALUE}@p:1",')
    assert SECRET_VALUE not in str(info.value)


@pytest.mark.parametrize("extra", ["[1, 2]", '"text"', "3"])
def test_extra_must_be_an_object(extra: str) -> None:
    with pytest.raises(BasetenConfigError, match="JSON object"):
        settings(extra)


def test_unknown_extras_warn_with_the_key_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_baseten.hooks.connection")
    s = settings({"colour": SECRET_VALUE, "timeout": 5})
    assert s.timeout == 5
    assert "colour" in caplog.text
    assert "my_conn" in caplog.text
    assert SECRET_VALUE not in caplog.text


@pytest.mark.parametrize(
    ("typo", "known"), [("timout", "timeout"), ("max_retry", "max_retries"), ("Proxy", "proxy"), ("header", "headers")]
)
def test_unknown_extras_suggest_the_nearest_known_key(typo: str, known: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_baseten.hooks.connection")
    settings({typo: "5", "colour": "red"})
    assert f"Ignoring unknown extras {sorted(['colour', typo])} in Baseten connection my_conn" in caplog.text
    assert f"'{typo}': did you mean '{known}'?" in caplog.text
    assert "'colour': did you mean" not in caplog.text  # nothing close: no guess


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_environment_proxies_are_read_once_into_the_settings(proxy_env: pytest.MonkeyPatch) -> None:
    proxy_env.setenv("HTTPS_PROXY", "http://egress:3128")
    proxy_env.setenv("NO_PROXY", "127.0.0.1,.internal")
    s = settings()
    assert s.proxy_map == (
        ("all://*.internal", None),
        ("all://127.0.0.1", None),
        ("https://", "http://egress:3128"),
    )
    proxy_env.setenv("HTTPS_PROXY", "http://other:3128")
    assert s.proxy_map[-1] == ("https://", "http://egress:3128")  # a parsed connection keeps what it read
    assert settings() != s  # a new parse reads the new value (and gets its own shared async client)


def test_the_connection_proxy_replaces_the_environment(proxy_env: pytest.MonkeyPatch) -> None:
    proxy_env.setenv("HTTP_PROXY", "http://egress:3128")
    proxy_env.setenv("NO_PROXY", "*")
    assert settings({"proxy": "http://team-proxy:8080"}).proxy_map == (("all://", "http://team-proxy:8080"),)


def test_no_proxy_star_turns_the_environment_proxy_off(proxy_env: pytest.MonkeyPatch) -> None:
    proxy_env.setenv("HTTP_PROXY", "http://egress:3128")
    proxy_env.setenv("NO_PROXY", "*")
    assert settings().proxy_map == ()


@pytest.mark.parametrize("password", [None, "", "   ", "\n"])
def test_missing_key_names_the_connection(password: str | None) -> None:
    with pytest.raises(BasetenConfigError, match="'my_conn' has no API key"):
        settings(password=password)


def test_key_is_stripped() -> None:
    assert settings(password=f"  {API_KEY}\n").api_key == API_KEY


def test_repr_hides_secrets() -> None:
    s = settings({"proxy": f"http://u:{SECRET_VALUE}@p:1", "headers": {"X-Token": SECRET_VALUE}})
    assert API_KEY not in repr(s)
    assert SECRET_VALUE not in repr(s)


def test_settings_are_hashable_and_key_sensitive() -> None:
    """Shared async clients are keyed by settings: another key must get another client."""
    assert settings() == settings()
    assert hash(settings()) == hash(settings())
    assert settings() != settings(password="other.key")


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        (None, None, None),
        ("", 8765, None),
        ("http://127.0.0.1:8765", None, "http://127.0.0.1:8765"),
        ("http://127.0.0.1:8765/", None, "http://127.0.0.1:8765"),
        ("127.0.0.1:8765", None, "http://127.0.0.1:8765"),
        ("127.0.0.1", 8765, "http://127.0.0.1:8765"),
        ("127.9.9.9", None, "http://127.9.9.9"),
        ("localhost", 9000, "http://localhost:9000"),
        ("LOCALHOST:80", None, "http://LOCALHOST:80"),
        ("[::1]:8765", None, "http://[::1]:8765"),
        ("::1", 8765, "http://[::1]:8765"),
        ("gateway.internal", None, "https://gateway.internal"),
        ("gateway.internal", 8443, "https://gateway.internal:8443"),
        ("10.0.0.5:8080", None, "https://10.0.0.5:8080"),
        ("http://gateway.internal", None, "http://gateway.internal"),
        ("https://gw.example.com:9443", 1234, "https://gw.example.com:9443"),
        ("https://gw.example.com/baseten/", None, "https://gw.example.com/baseten"),
        ("  http://127.0.0.1:8765  ", None, "http://127.0.0.1:8765"),
    ],
)
def test_gateway_url(host: str | None, port: int | None, url: str | None) -> None:
    assert gateway_url(host, port) == url


@pytest.mark.parametrize(
    "host",
    ["ftp://gw", "http://", "http://gw?x=1", "http://gw#f", f"http://user:{SECRET_VALUE}@gw", "gw:99999", "gw:port"],
)
def test_bad_gateway_rejected_without_credentials(host: str) -> None:
    with pytest.raises(BasetenConfigError) as info:
        gateway_url(host, None)
    assert SECRET_VALUE not in str(info.value)


def test_base_url() -> None:
    assert settings().base_url("model-a1.api.baseten.co") == "https://model-a1.api.baseten.co"
    assert settings(host="127.0.0.1:8765").base_url("model-a1.api.baseten.co") == "http://127.0.0.1:8765"

"""The emulator's own helpers: ``parse_target_path`` (inverse of ``Target.prefix``), ``RouteBucket.try_acquire``."""

from __future__ import annotations

import pytest

from airflow_provider_baseten.emulator.limits import RouteBucket
from airflow_provider_baseten.emulator.routing import parse_host, parse_target_path
from airflow_provider_baseten.hooks.addressing import Target


@pytest.mark.parametrize(
    ("target", "selector", "name"),
    [
        (Target.of(model_id="m1"), "production", "production"),
        (Target.of(model_id="m1", environment="development"), "development", None),
        (Target.of(model_id="m1", environment="staging"), "environment", "staging"),
        (Target.of(chain_id="c1", deployment_id="d1"), "deployment", "d1"),
        (Target.of(model_id="m1", environment="prod-us", regional=True), "none", None),
    ],
)
def test_parse_target_path_inverts_the_builder(target: Target, selector, name):
    endpoint = target.endpoint("async_predict")
    parsed = parse_target_path(endpoint.path)
    host = parse_host(endpoint.host)

    assert (parsed.selector, parsed.name, parsed.action) == (selector, name, ("async_predict",))
    assert (host.kind, host.id, host.regional_environment) == (
        target.kind,
        target.id,
        target.environment if target.regional else None,
    )


def test_parse_target_path_keeps_sync_routes_and_rejects_bad_prefixes():
    sync = parse_target_path(Target.of(model_id="m1").sync_endpoint("v1/chat/completions").path)

    assert sync.action == ("sync", "v1", "chat", "completions")
    assert parse_target_path("/async_request/abc").action == ("async_request", "abc")
    assert parse_target_path("/environments/Not_Valid/predict") is None
    assert parse_target_path("/deployment/") is None


def test_try_acquire_never_waits():
    now = [0.0]
    bucket = RouteBucket(2, 2, clock=lambda: now[0])

    assert [bucket.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.5]
    now[0] = 0.5
    assert bucket.try_acquire() == 0.0
    assert bucket.try_acquire() == 0.5

"""Management lifecycle calls: exact URLs and bodies, validation before sending, retry rules, response parsing."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from airflow_provider_baseten.exceptions import (
    BasetenAmbiguousSubmitError,
    BasetenConfigError,
    BasetenModelError,
)
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.baseten import BasetenHook
from airflow_provider_baseten.hooks.models import PromotionStatus

API = "https://api.baseten.co/v1/models/abc123"
SETTINGS = {
    "min_replica": 0,
    "max_replica": 3,
    "autoscaling_window": 60,
    "scale_down_delay": 900,
    "concurrency_target": 2,
    "target_utilization_percentage": 70,
}
ACCEPTED = httpx.Response(200, json={"status": "ACCEPTED", "message": "ok"})


@pytest.fixture
def hook(set_conn: Any) -> BasetenHook:
    set_conn(extra={"max_retries": 2})
    return BasetenHook(customer_request_id="", sleep=lambda _: None)


@pytest.fixture
def api():
    with respx.mock(using="httpx", assert_all_called=True) as router:
        yield router


def body(route: respx.Route) -> Any:
    return json.loads(route.calls.last.request.content)


@pytest.mark.parametrize(
    ("target", "url"),
    [
        (Target.of(model_id="abc123"), f"{API}/deployments/production/autoscaling_settings"),
        (
            Target.of(model_id="abc123", environment="development"),
            f"{API}/deployments/development/autoscaling_settings",
        ),
        (Target.of(model_id="abc123", deployment_id="dep42"), f"{API}/deployments/dep42/autoscaling_settings"),
    ],
)
def test_update_autoscaling_of_a_deployment_sends_only_the_given_fields(hook, api, target, url):
    route = api.patch(url).mock(return_value=ACCEPTED)
    assert hook.update_autoscaling(target, {"min_replica": 4}).status == "ACCEPTED"
    assert body(route) == {"min_replica": 4}


def test_update_autoscaling_of_an_environment_wraps_the_fields(hook, api):
    route = api.patch(f"{API}/environments/staging").mock(return_value=ACCEPTED)
    hook.update_autoscaling(Target.of(model_id="abc123", environment="staging"), {"max_replica": 9})
    assert body(route) == {"autoscaling_settings": {"max_replica": 9}}


def test_update_autoscaling_is_retried_on_a_transient_error(hook, api):
    route = api.patch(f"{API}/deployments/production/autoscaling_settings").mock(
        side_effect=[httpx.Response(503), ACCEPTED]
    )
    hook.update_autoscaling(Target.of(model_id="abc123"), {"min_replica": 1})
    assert route.call_count == 2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"replicas": 2}, "Invalid autoscaling settings"),
        ({"min_replica": -1}, "Invalid autoscaling settings"),
        ({"target_utilization_percentage": 101}, "Invalid autoscaling settings"),
        ({}, "sets no field"),
    ],
)
def test_invalid_autoscaling_fails_before_sending(hook, settings, message):
    with respx.mock(using="httpx", assert_all_called=False) as router:
        with pytest.raises(BasetenConfigError, match=message):
            hook.update_autoscaling(Target.of(model_id="abc123"), settings)
        assert router.calls.call_count == 0


def test_get_autoscaling_reads_the_deployment_record(hook, api):
    api.get(f"{API}/deployments/production").mock(
        return_value=httpx.Response(200, json={"id": "d1", "status": "ACTIVE", "autoscaling_settings": SETTINGS})
    )
    assert hook.get_autoscaling(Target.of(model_id="abc123")).max_replica == 3


def test_get_autoscaling_without_settings_says_so(hook, api):
    api.get(f"{API}/deployments/production").mock(
        return_value=httpx.Response(200, json={"id": "d1", "status": "BUILDING", "autoscaling_settings": None})
    )
    with pytest.raises(BasetenModelError, match="not finished deploying"):
        hook.get_autoscaling(Target.of(model_id="abc123"))


@pytest.mark.parametrize(("method", "action"), [("activate", "activate"), ("deactivate", "deactivate")])
def test_activate_and_deactivate_environments(hook, api, method, action):
    route = api.post(f"{API}/environments/staging/{action}").mock(
        return_value=httpx.Response(200, json={"success": True})
    )
    assert getattr(hook, method)(Target.of(model_id="abc123", environment="staging")) is True
    assert route.call_count == 1


def test_promote_to_production_and_to_an_environment(hook, api):
    deployment = httpx.Response(200, json={"id": "dep42", "status": "ACTIVE"})
    to_production = api.post(f"{API}/deployments/dep42/promote").mock(return_value=deployment)
    to_staging = api.post(f"{API}/environments/staging/promote").mock(return_value=deployment)
    hook.promote("abc123", "dep42", scale_down_previous=False)
    hook.promote("abc123", "dep42", environment="staging", preserve_env_instance_type=False)
    assert body(to_production) == {"scale_down_previous_production": False, "preserve_env_instance_type": True}
    assert body(to_staging) == {
        "deployment_id": "dep42",
        "scale_down_previous_deployment": True,
        "preserve_env_instance_type": False,
    }


def test_promote_development_to_an_environment_resolves_its_id(hook, api):
    api.get(f"{API}/deployments/development").mock(
        return_value=httpx.Response(200, json={"id": "dev7", "status": "ACTIVE"})
    )
    route = api.post(f"{API}/environments/staging/promote").mock(
        return_value=httpx.Response(200, json={"id": "dev7", "status": "ACTIVE"})
    )
    hook.promote("abc123", "development", environment="staging")
    assert body(route)["deployment_id"] == "dev7"


def test_promote_is_not_retried_once_it_may_have_reached_baseten(hook, api):
    route = api.post(f"{API}/deployments/dep42/promote").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(BasetenAmbiguousSubmitError):
        hook.promote("abc123", "dep42")
    assert route.call_count == 1


def test_promote_validates_ids_before_sending(hook):
    with pytest.raises(BasetenConfigError, match="deployment_id"):
        hook.promote("abc123", "../x")


@pytest.mark.parametrize("action", ["pause_promotion", "resume_promotion"])
def test_promotion_signals(hook, api, action):
    api.post(f"{API}/environments/staging/{action}").mock(return_value=httpx.Response(200, json={"success": True}))
    assert getattr(hook, action)("abc123", "staging") is True


def test_cancel_promotion_and_promotion_status(hook, api):
    api.post(f"{API}/environments/production/cancel_promotion").mock(
        return_value=httpx.Response(200, json={"status": "RAMPING_DOWN", "message": "winding down"})
    )
    assert hook.cancel_promotion("abc123", "production").status == "RAMPING_DOWN"
    api.get(f"{API}/environments/production").mock(
        return_value=httpx.Response(
            200,
            json={
                "name": "production",
                "current_deployment": {"id": "old", "status": "ACTIVE"},
                "candidate_deployment": {"id": "new", "status": "ACTIVE"},
                "in_progress_promotion": {"status": "RAMPING_UP", "percent_traffic_to_new_version": 40},
            },
        )
    )
    env = hook.get_environment("abc123", "production")
    assert env.in_progress_promotion is not None
    assert env.in_progress_promotion.known_status is PromotionStatus.RAMPING_UP
    assert env.candidate_deployment is not None
    assert env.candidate_deployment.id == "new"


@pytest.mark.parametrize(
    ("status", "pending"),
    [
        ("RELEASING", True),
        ("RAMPING_UP", True),
        ("RAMPING_DOWN", True),
        ("PAUSED", True),
        ("SUCCEEDED", False),
        ("FAILED", False),
        ("CANCELED", False),
    ],
)
def test_promotion_status_meaning(status, pending):
    assert PromotionStatus(status).is_pending is pending


def test_chain_deployment_status(hook, api):
    api.get("https://api.baseten.co/v1/chains/chn1/deployments/cd1").mock(
        return_value=httpx.Response(
            200,
            json={
                "id": "cd1",
                "chain_id": "chn1",
                "status": "ACTIVE",
                "chainlets": [{"id": "c1", "name": "Entry", "status": "ACTIVE", "active_replica_count": 2}],
            },
        )
    )
    deployment = hook.get_chain_deployment("chn1", "cd1")
    assert (deployment.status, deployment.chainlets[0].active_replica_count) == ("ACTIVE", 2)

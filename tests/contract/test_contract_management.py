"""The lifecycle calls of the hook (autoscaling, activation, promotion, chains) are operations of the management spec.

Each call is driven against respx answering with spec-generated bodies (so the response models parse the documented
shapes), then every request it sent is checked against ``management-openapi.json``: path template, method, body.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

import pytest
import respx
from openapi_contract import Spec
from test_contract_requests import baseten, check_against_spec, hook, run  # noqa: F401  (fixtures)

from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.baseten import BasetenHook
from airflow_provider_baseten.hooks.models import (
    AUTOSCALING_FIELDS,
    CancelPromotionStatus,
    PromotionStatus,
    UpdateAutoscalingSettings,
    UpdateAutoscalingStatus,
)

pytestmark = pytest.mark.contract

FULL_UPDATE = {
    "min_replica": 2,
    "max_replica": 5,
    "autoscaling_window": 60,
    "scale_down_delay": 900,
    "concurrency_target": 4,
    "target_utilization_percentage": 70,
    "target_in_flight_tokens": 40000,
    "max_scale_down_rate": 20,
}
MODEL_FORMS = {
    "production": Target.of(model_id="abc123"),
    "development": Target.of(model_id="abc123", environment="development"),
    "named": Target.of(model_id="abc123", environment="staging"),
    "deployment": Target.of(model_id="abc123", deployment_id="dep42"),
}
CALLS: dict[str, Callable[[BasetenHook, Target], Any]] = {
    "get_autoscaling": lambda h, t: h.get_autoscaling(t),
    "update_autoscaling": lambda h, t: h.update_autoscaling(t, FULL_UPDATE),
    "update_autoscaling_one_field": lambda h, t: h.update_autoscaling(t, {"min_replica": 0}),
    "activate": lambda h, t: h.activate(t),
    "deactivate": lambda h, t: h.deactivate(t),
}
SERVICE_CALLS: dict[str, Callable[[BasetenHook], Any]] = {
    "promote_to_production": lambda h: h.promote("abc123", "dep42"),
    "promote_development_to_production": lambda h: h.promote("abc123", "development", scale_down_previous=False),
    "promote_to_environment": lambda h: h.promote("abc123", "dep42", environment="staging"),
    "promote_development_to_environment": lambda h: h.promote("abc123", "development", environment="staging"),
    "get_environment": lambda h: h.get_environment("abc123", "staging"),
    "aget_environment": lambda h: h.aget_environment("abc123", "staging"),
    "list_environments": lambda h: h.list_environments("abc123"),
    "cancel_promotion": lambda h: h.cancel_promotion("abc123", "staging"),
    "pause_promotion": lambda h: h.pause_promotion("abc123", "staging"),
    "resume_promotion": lambda h: h.resume_promotion("abc123", "production"),
    "get_chain_deployment": lambda h: h.get_chain_deployment("chain1", "dep42"),
    "list_chain_deployments": lambda h: h.list_chain_deployments("chain1"),
    "list_chain_environments": lambda h: h.list_chain_environments("chain1"),
    "get_chain_environment": lambda h: h.get_chain_environment("chain1", "staging"),
    "promote_chain": lambda h: h.promote_chain("chain1", "dep42", environment="staging"),
    "update_chainlet_autoscaling": lambda h: h.update_chainlet_autoscaling("chain1", "production", {"Hi": FULL_UPDATE}),
}
#: The management operations the lifecycle calls must reach (the reverse direction: none is left unused).
EXPECTED = {
    "PATCH /v1/models/{model_id}/deployments/production/autoscaling_settings",
    "PATCH /v1/models/{model_id}/deployments/development/autoscaling_settings",
    "PATCH /v1/models/{model_id}/deployments/{deployment_id}/autoscaling_settings",
    "PATCH /v1/models/{model_id}/environments/{env_name}",
    "POST /v1/models/{model_id}/deployments/{deployment_id}/promote",
    "POST /v1/models/{model_id}/deployments/development/promote",
    "POST /v1/models/{model_id}/environments/{env_name}/promote",
    "POST /v1/models/{model_id}/environments/{env_name}/cancel_promotion",
    "POST /v1/models/{model_id}/environments/{env_name}/pause_promotion",
    "POST /v1/models/{model_id}/environments/{env_name}/resume_promotion",
    "POST /v1/models/{model_id}/deployments/production/deactivate",
    "POST /v1/models/{model_id}/deployments/development/deactivate",
    "POST /v1/models/{model_id}/deployments/{deployment_id}/deactivate",
    "POST /v1/models/{model_id}/environments/{env_name}/deactivate",
    "POST /v1/models/{model_id}/environments/{env_name}/activate",
    "GET /v1/chains/{chain_id}/deployments/{chain_deployment_id}",
    "GET /v1/chains/{chain_id}/deployments",
    "GET /v1/chains/{chain_id}/environments",
    "GET /v1/chains/{chain_id}/environments/{env_name}",
    "POST /v1/chains/{chain_id}/environments/{env_name}/promote",
    "PATCH /v1/chains/{chain_id}/environments/{env_name}/chainlet_settings/autoscaling_settings",
}


def sent(router: respx.MockRouter, inference: Spec, management: Spec) -> set[str]:
    return {check_against_spec(call.request, inference, management, None) for call in router.calls}


@pytest.mark.parametrize("form", MODEL_FORMS)
@pytest.mark.parametrize("name", CALLS)
def test_target_lifecycle_call_is_a_spec_operation(
    hook: BasetenHook,  # noqa: F811
    baseten: respx.MockRouter,  # noqa: F811
    inference_spec: Spec,
    management_spec: Spec,
    name: str,
    form: str,
) -> None:
    run(CALLS[name](hook, MODEL_FORMS[form]))
    assert baseten.calls.call_count == 1
    sent(baseten, inference_spec, management_spec)


@pytest.mark.parametrize("name", SERVICE_CALLS)
def test_lifecycle_call_is_a_spec_operation(
    hook: BasetenHook,  # noqa: F811
    baseten: respx.MockRouter,  # noqa: F811
    inference_spec: Spec,
    management_spec: Spec,
    name: str,
) -> None:
    run(SERVICE_CALLS[name](hook))
    assert baseten.calls.call_count >= 1
    sent(baseten, inference_spec, management_spec)


def test_lifecycle_calls_reach_every_lifecycle_operation(
    hook: BasetenHook,  # noqa: F811
    baseten: respx.MockRouter,  # noqa: F811
    inference_spec: Spec,
    management_spec: Spec,
) -> None:
    for call in CALLS.values():
        for target in MODEL_FORMS.values():
            run(call(hook, target))
    for service_call in SERVICE_CALLS.values():
        run(service_call(hook))
    assert EXPECTED - sent(baseten, inference_spec, management_spec) == set()


@pytest.mark.parametrize(
    ("enum", "schema"),
    [
        (UpdateAutoscalingStatus, "UpdateAutoscalingSettingsStatusV1"),
        (PromotionStatus, "InProgressPromotionStatusV1"),
        (CancelPromotionStatus, "CancelPromotionStatusV1"),
    ],
)
def test_lifecycle_enum_equals_the_spec(management_spec: Spec, enum: type[StrEnum], schema: str) -> None:
    assert sorted(member.value for member in enum) == sorted(management_spec.schema(schema)["enum"])


def test_autoscaling_fields_equal_the_spec(management_spec: Spec) -> None:
    properties = management_spec.schema("UpdateAutoscalingSettingsV1")["properties"]
    assert set(AUTOSCALING_FIELDS) == set(properties) == set(UpdateAutoscalingSettings.model_fields)

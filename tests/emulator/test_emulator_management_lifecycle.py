"""Autoscaling, promotion and deactivation in the emulator, driven through BasetenHook over loopback, manual clock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_baseten.emulator import DeploymentSpec, Emulator, ModelSpec, World
from airflow_provider_baseten.exceptions import BasetenAPIError, BasetenNotFoundError
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.baseten import BasetenHook

pytestmark = [pytest.mark.integration, pytest.mark.baseten_emulator(manual_clock=True)]

COLD = Target.of(model_id="coldstart01")
DAY = 86400.0


def promotion_world(*, failure: str | None = None) -> World:
    return World().add(
        ModelSpec(
            "promo01",
            "echo",
            deployments=[
                DeploymentSpec("promoprod01", "production", min_replicas=1),
                DeploymentSpec("promostage01", "staging", min_replicas=1),
                DeploymentSpec(
                    "promonew01",
                    None,
                    status="SCALED_TO_ZERO",
                    cold_start_seconds=60,
                    promotion_seconds=120,
                    promotion_failure=failure,
                ),
            ],
        )
    )


@pytest.fixture
def hook(baseten_emulator: Emulator) -> Iterator[BasetenHook]:
    hook = BasetenHook(customer_request_id="", sleep=lambda _: None)
    yield hook
    hook.close()


def replicas(hook: BasetenHook, target: Target = COLD) -> tuple[str, int | None]:
    record = hook.get_deployment(target)
    return record.status, record.active_replica_count


def test_raising_min_replica_wakes_and_brings_replicas_up_over_the_cold_start(baseten_emulator, hook):
    emu = baseten_emulator
    assert hook.update_autoscaling(COLD, {"min_replica": 4, "max_replica": 4}).status == "ACCEPTED"
    assert replicas(hook) == ("WAKING_UP", 0)
    emu.advance(180)
    assert replicas(hook) == ("ACTIVE", 4)
    assert hook.get_autoscaling(COLD).min_replica == 4


def test_replica_count_rises_on_an_active_deployment(baseten_emulator, hook):
    emu = baseten_emulator
    target = Target.of(model_id="sentiment01")
    assert replicas(hook, target) == ("ACTIVE", 1)
    hook.update_autoscaling(target, {"min_replica": 5, "max_replica": 5})
    counts = []
    for _ in range(4):
        emu.advance(15)
        counts.append(replicas(hook, target)[1])
    assert counts == sorted(counts)
    assert counts[0] < 5
    assert counts[-1] == 5


def test_same_values_again_are_unchanged_and_only_sent_fields_change(baseten_emulator, hook):
    before = hook.get_autoscaling(COLD)
    assert hook.update_autoscaling(COLD, {"scale_down_delay": 60}).status == "ACCEPTED"
    assert hook.update_autoscaling(COLD, {"scale_down_delay": 60}).status == "UNCHANGED"
    after = hook.get_autoscaling(COLD)
    assert after.scale_down_delay == 60
    assert after.model_dump(exclude={"scale_down_delay"}) == before.model_dump(exclude={"scale_down_delay"})


def test_lowering_min_replica_scales_down_after_the_delay(baseten_emulator, hook):
    emu = baseten_emulator
    hook.update_autoscaling(COLD, {"min_replica": 3, "max_replica": 3, "scale_down_delay": 300})
    emu.advance(180)
    assert replicas(hook) == ("ACTIVE", 3)
    hook.update_autoscaling(COLD, {"min_replica": 0})
    emu.advance(299)
    assert replicas(hook) == ("ACTIVE", 3)
    emu.advance(2)
    assert replicas(hook) == ("SCALED_TO_ZERO", 0)


def test_environment_patch_changes_the_environment_deployment(baseten_emulator, hook):
    staging = Target.of(model_id="sentiment01", environment="staging")
    assert hook.update_autoscaling(staging, {"max_replica": 7}).status == "ACCEPTED"
    assert hook.get_autoscaling(staging).max_replica == 7
    assert hook.get_environment("sentiment01", "staging").autoscaling_settings.max_replica == 7  # type: ignore[union-attr]
    assert hook.get_autoscaling(Target.of(model_id="sentiment01")).max_replica == 1


def test_fourteen_days_without_traffic_deactivate_and_activate_brings_it_back(baseten_emulator, hook):
    emu = baseten_emulator
    emu.advance(14 * DAY - 60)
    assert replicas(hook)[0] == "SCALED_TO_ZERO"
    emu.advance(120)
    assert replicas(hook)[0] == "INACTIVE"
    assert replicas(hook, Target.of(model_id="sentiment01"))[0] == "ACTIVE"  # min_replica 1: never deactivated
    with pytest.raises(BasetenNotFoundError):
        hook.predict(COLD, {"text": "hello"})
    assert hook.activate(COLD) is True
    emu.advance(180)
    assert replicas(hook)[0] == "ACTIVE"
    assert hook.predict(COLD, {"text": "great"}).data["label"] == "positive"


def test_traffic_postpones_deactivation(baseten_emulator, hook):
    emu = baseten_emulator
    emu.advance(10 * DAY)
    hook.wake(COLD)
    emu.advance(180)
    emu.advance(10 * DAY)
    assert replicas(hook)[0] == "SCALED_TO_ZERO"


def test_deactivate_then_activate(baseten_emulator, hook):
    emu = baseten_emulator
    target = Target.of(model_id="sentiment01", environment="staging")
    assert hook.deactivate(target) is True
    assert replicas(hook, target)[0] == "INACTIVE"
    hook.activate(target)
    emu.advance(60)
    assert replicas(hook, target)[0] == "ACTIVE"


@pytest.mark.baseten_emulator(manual_clock=True, world=promotion_world)
def test_promotion_moves_through_its_statuses_and_swaps_the_environment(baseten_emulator, hook):
    emu = baseten_emulator
    assert hook.promote("promo01", "promonew01", environment="staging").id == "promonew01"
    seen = []
    for _ in range(8):
        env = hook.get_environment("promo01", "staging")
        assert env.in_progress_promotion is not None
        seen.append(env.in_progress_promotion.status)
        emu.advance(30)
    assert seen[0] == "RELEASING"
    assert "RAMPING_UP" in seen
    env = hook.get_environment("promo01", "staging")
    assert env.in_progress_promotion is not None
    assert env.in_progress_promotion.status == "SUCCEEDED"
    assert env.current_deployment is not None
    assert env.current_deployment.id == "promonew01"
    assert hook.predict(Target.of(model_id="promo01", environment="staging"), {"a": 1}).data == {"a": 1}


@pytest.mark.baseten_emulator(manual_clock=True, world=lambda: promotion_world(failure="health checks failed"))
def test_a_failing_promotion_keeps_the_previous_deployment(baseten_emulator, hook):
    hook.promote("promo01", "promonew01")
    baseten_emulator.advance(400)
    env = hook.get_environment("promo01", "production")
    assert env.in_progress_promotion is not None
    assert (env.in_progress_promotion.status, env.in_progress_promotion.error_message) == (
        "FAILED",
        "health checks failed",
    )
    assert env.current_deployment is not None
    assert env.current_deployment.id == "promoprod01"


@pytest.mark.baseten_emulator(manual_clock=True, world=promotion_world)
def test_cancel_pause_resume_and_a_second_promotion_is_refused(baseten_emulator, hook):
    emu = baseten_emulator
    hook.promote("promo01", "promonew01")
    with pytest.raises(BasetenAPIError, match="already has a promotion in progress"):
        hook.promote("promo01", "promostage01")
    emu.advance(90)
    assert hook.pause_promotion("promo01", "production") is True
    emu.advance(600)
    assert hook.get_environment("promo01", "production").in_progress_promotion.status == "PAUSED"  # type: ignore[union-attr]
    assert hook.resume_promotion("promo01", "production") is True
    assert hook.cancel_promotion("promo01", "production").status == "CANCELED"
    env = hook.get_environment("promo01", "production")
    assert env.in_progress_promotion.status == "CANCELED"  # type: ignore[union-attr]
    assert env.current_deployment.id == "promoprod01"  # type: ignore[union-attr]


def test_chain_deployment_and_environments(baseten_emulator, hook):
    deployment = hook.get_chain_deployment("summarize01", "sumprod01")
    assert (deployment.status, deployment.chainlets[0].active_replica_count) == ("ACTIVE", 1)
    assert [d.id for d in hook.list_chain_deployments("summarize01")] == ["sumprod01"]
    assert [e.name for e in hook.list_chain_environments("summarize01")] == ["production"]
    current = hook.get_chain_environment("summarize01", "production").current_deployment
    assert current is not None
    assert current.id == "sumprod01"


def chain_world() -> World:
    from airflow_provider_baseten.emulator import ChainSpec

    return World().add(
        ChainSpec(
            "chain01",
            "echo",
            name="Entry",
            deployments=[
                DeploymentSpec("chainprod01", "production", min_replicas=1, cold_start_seconds=60),
                DeploymentSpec(
                    "chainnew01", None, status="SCALED_TO_ZERO", cold_start_seconds=60, promotion_seconds=120
                ),
            ],
        )
    )


@pytest.mark.baseten_emulator(manual_clock=True, world=chain_world)
def test_chain_promotion_runs_on_the_clock_and_swaps_the_environment(baseten_emulator, hook):
    emu = baseten_emulator
    assert hook.promote_chain("chain01", "chainnew01").id == "chainnew01"
    env = hook.get_chain_environment("chain01", "production")
    assert env.candidate_deployment is not None
    assert env.candidate_deployment.id == "chainnew01"
    assert env.current_deployment.id == "chainprod01"  # type: ignore[union-attr]
    with pytest.raises(BasetenAPIError, match="already has a promotion in progress"):
        hook.promote_chain("chain01", "chainnew01")
    emu.advance(60 + 120 + 1)  # the candidate's cold start, then its ramp
    env = hook.get_chain_environment("chain01", "production")
    assert env.current_deployment.id == "chainnew01"  # type: ignore[union-attr]
    assert env.candidate_deployment is None
    assert hook.get_chain_deployment("chain01", "chainprod01").chainlets[0].autoscaling_settings.min_replica == 0  # type: ignore[union-attr]
    with pytest.raises(BasetenNotFoundError, match="no deployment 'nope01'"):
        hook.promote_chain("chain01", "nope01")


@pytest.mark.baseten_emulator(manual_clock=True, world=chain_world)
def test_chainlet_autoscaling_brings_replicas_up_over_the_cold_start(baseten_emulator, hook):
    emu = baseten_emulator

    def chainlet() -> tuple[int | None, Any]:  # (active replicas, AutoscalingSettings)
        found = hook.get_chain_deployment("chain01", "chainprod01").chainlets[0]
        return found.active_replica_count, found.autoscaling_settings

    assert hook.update_chainlet_autoscaling("chain01", "production", {"Entry": {"min_replica": 3}}).status == "ACCEPTED"
    assert chainlet()[0] == 1
    emu.advance(61)
    count, settings = chainlet()
    assert (count, settings.min_replica, settings.max_replica) == (3, 3, 3)
    assert (
        hook.update_chainlet_autoscaling("chain01", "production", {"Entry": {"min_replica": 3}}).status == "UNCHANGED"
    )
    with pytest.raises(BasetenNotFoundError, match="no chainlet 'Other'"):
        hook.update_chainlet_autoscaling("chain01", "production", {"Other": {"min_replica": 1}})

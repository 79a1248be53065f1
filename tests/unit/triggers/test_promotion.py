"""BasetenPromotionTrigger on the hot path: it polls the environment over aiohttp (a real loopback server,
:mod:`status_server`, since respx cannot see aiohttp), inside the shared status budget, with the hook's retry table;
``on_kill`` cancels through the hook. Injected clock and sleep: no wall-clock waits.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from airflow_testing import KEY, T0, FakeClock, set_conn
from status_server import StatusServer

from airflow_provider_baseten.hooks import hotpath
from airflow_provider_baseten.triggers.promotion import CLASSPATH, BasetenPromotionTrigger

ENV_URL = "https://api.baseten.co/v1/models/abc123/environments/production"
CANCEL_URL = f"{ENV_URL}/cancel_promotion"


def environment(status: str | None, current: str = "old1", error: str | None = None) -> httpx.Response:
    def deployment(dep_id: str) -> dict[str, Any]:
        return {"id": dep_id, "status": "ACTIVE", "model_id": "abc123"}

    promotion = None if status is None else {"status": status, "percent_traffic_to_new_version": 50,
                                             "error_message": error}  # fmt: skip
    body = {"name": "production", "current_deployment": deployment(current),
            "candidate_deployment": deployment("new1"), "in_progress_promotion": promotion}  # fmt: skip
    return httpx.Response(200, json=body)


@pytest.fixture(autouse=True)
def baseten_conn(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch)


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StatusServer]:
    async with StatusServer(monkeypatch) as loopback:
        yield loopback
    loopback.check()


def make_trigger(clock: FakeClock, **kwargs: Any) -> BasetenPromotionTrigger:
    defaults: dict[str, Any] = {"model_id": "abc123", "environment": "production", "deployment_id": "new1",
                                "started_at": T0, "deadline": T0 + 600, "poll_interval": 15}  # fmt: skip
    return BasetenPromotionTrigger(**{**defaults, **kwargs}, clock=clock.time, sleep=clock.asleep)


async def run_to_end(trigger: BasetenPromotionTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


def test_serialize_round_trips() -> None:
    trigger = BasetenPromotionTrigger(model_id="abc123", environment="staging", deployment_id="new1",
                                      started_at=T0, deadline=T0 + 60, cancel_on_kill=False)  # fmt: skip
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    assert BasetenPromotionTrigger(**json.loads(json.dumps(kwargs))).serialize() == (classpath, kwargs)


async def test_polls_over_the_hot_path_until_one_success_event(server: StatusServer, clock: FakeClock) -> None:
    route = server.get(ENV_URL).mock(
        side_effect=[environment("RELEASING"), environment("RAMPING_UP"), environment("SUCCEEDED", current="new1")]
    )
    events = await run_to_end(make_trigger(clock))
    assert [event["status"] for event in events] == ["success"]
    assert events[0]["environment"]["current_deployment"]["id"] == "new1"
    assert route.call_count == 3  # the loopback server saw them: the polls went out on aiohttp
    assert server.methods() == ["GET"] * 3  # the trigger only reads
    assert all(request.headers["authorization"] == f"Api-Key {KEY}" for request in route.calls)
    openings = hotpath._POLLERS[asyncio.get_running_loop()].values()
    assert [len(opening.result()._prepared) for opening, _ in openings] == [1]  # the hot path's sender sent them


async def test_a_failed_promotion_ends_with_basetens_message(server: StatusServer, clock: FakeClock) -> None:
    server.get(ENV_URL).mock(side_effect=[environment("RELEASING"), environment("FAILED", error="health check")])
    events = await run_to_end(make_trigger(clock))
    assert events[0]["status"] == "failed"
    assert "health check" in events[0]["message"]


async def test_the_hook_retries_a_blip_within_one_poll(server: StatusServer, clock: FakeClock) -> None:
    server.connect(max_retries=2)
    route = server.get(ENV_URL).mock(side_effect=[httpx.Response(503), environment("SUCCEEDED", current="new1")])
    events = await run_to_end(make_trigger(clock))
    assert events[0]["status"] == "success"
    assert route.call_count == 2
    assert clock.sleeps
    assert clock.sleeps[0] < 15  # the hook's backoff, on the injected sleep


async def test_every_poll_takes_a_token_of_the_shared_status_budget(server: StatusServer, clock: FakeClock) -> None:
    from airflow_provider_baseten.hooks.hotpath import status_budget

    server.connect(status_rate_limit=1.0)  # one token a second: the second poll must wait for the budget
    server.get(ENV_URL).mock(side_effect=[environment("RELEASING"), environment("SUCCEEDED", current="new1")])
    trigger = make_trigger(clock, poll_interval=0.1)
    events = await run_to_end(trigger)
    assert events[0]["status"] == "success"
    hook = trigger._hook()
    await hook.aget_settings()
    assert len(status_budget(hook)._grants) == 2  # the event loop's shared budget handed out both tokens
    assert clock.sleeps[-1] > 0.5  # the 1 req/s budget, not the 0.1 s poll interval, spaced the reads


async def test_on_kill_cancels_through_the_hook(server: StatusServer, clock: FakeClock) -> None:
    cancel = server.post(CANCEL_URL).respond(200, json={"status": "CANCELED", "message": ""})
    await make_trigger(clock).on_kill()
    assert cancel.call_count == 1
    await make_trigger(clock, cancel_on_kill=False).on_kill()
    assert cancel.call_count == 1

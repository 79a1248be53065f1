"""BasetenAsyncRequestTrigger: serialization, the status allow-list, one terminal event, deadlines, transient errors,
progress lines, on_kill/cleanup, and a restart mid-wait, on an injected clock (no wall-clock sleeps).

The trigger polls on the hot path (aiohttp), so Baseten is a real loopback server (:mod:`status_server`).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from airflow_testing import KEY, T0, FakeClock, set_conn, state, statuses
from status_server import StatusServer
from virtual_time import VirtualTimeLoop, max_in_window, run_virtual

from airflow_provider_baseten.hooks import async_requests
from airflow_provider_baseten.triggers.async_request import BasetenAsyncRequestTrigger

HOST = "https://model-abc123.api.baseten.co"
STATUS_URL = f"{HOST}/async_request/req1"
QUEUE_URL = f"{HOST}/production/async_queue_status"
CLASSPATH = "airflow_provider_baseten.triggers.baseten.BasetenAsyncRequestTrigger"


@pytest.fixture(autouse=True)
def baseten_conn(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch)
    monkeypatch.setattr(async_requests.random, "random", lambda: 0.5)  # jitter factor exactly 1.0


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StatusServer]:
    async with StatusServer(monkeypatch) as loopback:
        yield loopback
    loopback.check()


def make_trigger(clock: FakeClock, **kwargs: Any) -> BasetenAsyncRequestTrigger:
    defaults: dict[str, Any] = {
        "request_id": "req1",
        "model_id": "abc123",
        "poll_interval": 10,
        "deadline": T0 + 3600,
        "started_at": T0,
        "last_status": "QUEUED",
    }
    trigger = BasetenAsyncRequestTrigger(**{**defaults, **kwargs}, clock=clock.time, sleep=clock.asleep)
    trigger._log = logging.getLogger("test.async_trigger")  # stdlib logger, so caplog sees the lines
    return trigger


async def run_to_end(trigger: BasetenAsyncRequestTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


# --- serialization ---------------------------------------------------------------------------------------------


def test_serialize_round_trips_json_primitives_only(clock: FakeClock) -> None:
    trigger = make_trigger(
        clock,
        chain_id="chn1",
        model_id=None,
        environment="staging",
        regional=True,
        fail_on_webhook_failure=False,
        cancel_on_kill=False,
        output_uri="s3://bucket/out.json",
        baseten_conn_id="bt",
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    assert json.loads(json.dumps(kwargs)) == kwargs  # no key, no client, no callable
    assert "clock" not in kwargs
    assert "sleep" not in kwargs
    assert BasetenAsyncRequestTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert kwargs == {
        "request_id": "req1",
        "baseten_conn_id": "bt",
        "model_id": None,
        "chain_id": "chn1",
        "environment": "staging",
        "deployment_id": None,
        "regional": True,
        "poll_interval": 10.0,
        "deadline": T0 + 3600,
        "fail_on_webhook_failure": False,
        "started_at": T0,
        "cancel_on_kill": False,
        "output_uri": "s3://bucket/out.json",
        "last_status": "QUEUED",
    }


def test_classpath_resolves_to_this_class() -> None:
    module = importlib.import_module(CLASSPATH.rsplit(".", 1)[0])
    assert getattr(module, CLASSPATH.rsplit(".", 1)[1]) is BasetenAsyncRequestTrigger


def test_minimal_kwargs_still_build_a_trigger() -> None:
    """New kwargs are optional: an older serialized trigger (request id and target only) still loads."""
    trigger = BasetenAsyncRequestTrigger(request_id="req1", model_id="abc123")
    assert trigger.baseten_conn_id == "baseten_default"
    assert trigger.deadline is None
    assert trigger.cancel_on_kill is True


# --- the status allow-list ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "fail_on_webhook_failure", "event_status"),
    [
        ("SUCCEEDED", True, "success"),
        ("FAILED", True, "failed"),
        ("EXPIRED", True, "failed"),
        ("CANCELED", True, "failed"),
        ("WEBHOOK_FAILED", True, "failed"),
        ("WEBHOOK_FAILED", False, "success"),
        ("SUCCEEDED_LATER_MAYBE", True, "error"),
    ],
)
async def test_terminal_status_maps_to_one_event(
    server: StatusServer, clock: FakeClock, status: str, fail_on_webhook_failure: bool, event_status: str
) -> None:
    server.get(STATUS_URL).mock(side_effect=statuses("QUEUED", "IN_PROGRESS", status))
    events = await run_to_end(make_trigger(clock, fail_on_webhook_failure=fail_on_webhook_failure))
    assert [event["status"] for event in events] == [event_status]
    event = events[0]
    assert event["request_id"] == "req1"
    assert event["request_status"] == status
    assert event["manifest"] == {
        "request_id": "req1",
        "model_id": "abc123",
        "deployment_id": "dep1",
        "status": status,
        "webhook_status": "NO_WEBHOOK_PROVIDED",
        "created_at": "2023-11-14T22:13:20Z",
        "status_at": "2023-11-14T22:14:00Z",
        "errors": [],
    }


async def test_404_after_retention_is_lost_never_success(server: StatusServer, clock: FakeClock) -> None:
    server.get(STATUS_URL).mock(
        side_effect=[*statuses("IN_PROGRESS"), httpx.Response(404, json={"error": "async request not found"})]
    )
    [event] = await run_to_end(make_trigger(clock))
    assert event["status"] == "lost"
    assert "no longer known to Baseten (404)" in event["message"]
    assert event["manifest"]["status"] == "IN_PROGRESS"  # the last status seen


async def test_failed_event_names_the_errors(server: StatusServer, clock: FakeClock) -> None:
    errors = [{"code": "MODEL_PREDICT_ERROR", "message": "boom"}]
    server.get(STATUS_URL).respond(200, json=state("FAILED", errors=errors))
    [event] = await run_to_end(make_trigger(clock))
    assert "MODEL_PREDICT_ERROR: boom" in event["message"]
    assert event["manifest"]["errors"] == errors


async def test_chain_manifest_carries_chain_id(server: StatusServer, clock: FakeClock) -> None:
    record = state("SUCCEEDED")
    del record["model_id"]
    server.get("https://chain-chn1.api.baseten.co/async_request/req1").respond(200, json={**record, "chain_id": "chn1"})
    [event] = await run_to_end(make_trigger(clock, model_id=None, chain_id="chn1", output_uri="s3://b/o.json"))
    assert event["manifest"]["chain_id"] == "chn1"
    assert "model_id" not in event["manifest"]
    assert event["manifest"]["output_uri"] == "s3://b/o.json"


# --- polling ---------------------------------------------------------------------------------------------------


async def test_trigger_only_reads_and_polls_at_the_interval(server: StatusServer, clock: FakeClock) -> None:
    route = server.get(STATUS_URL).mock(side_effect=statuses("QUEUED", "IN_PROGRESS", "IN_PROGRESS", "SUCCEEDED"))
    events = await run_to_end(make_trigger(clock))
    assert [event["status"] for event in events] == ["success"]
    assert route.call_count == 4
    assert set(server.methods()) == {"GET"}
    assert clock.sleeps == [10, 10, 10, 10]  # the first poll waits too: the task has just read the status


async def test_polls_are_jittered(server: StatusServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([0.0, 1.0, 0.25])
    monkeypatch.setattr(async_requests.random, "random", lambda: next(draws))
    server.get(STATUS_URL).mock(side_effect=statuses("QUEUED", "QUEUED", "SUCCEEDED"))
    await run_to_end(make_trigger(clock))
    assert clock.sleeps == [7.5, 12.5, 8.75]


async def test_state_changes_are_logged_as_they_happen(
    server: StatusServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="test.async_trigger")
    server.get(STATUS_URL).mock(side_effect=statuses("QUEUED", "IN_PROGRESS", "IN_PROGRESS", "SUCCEEDED"))
    await run_to_end(make_trigger(clock))
    changes = [r.getMessage() for r in caplog.records if "->" in r.getMessage()]
    # The wait itself was logged by the task as it deferred: the trigger's own start line is debug only.
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and "Waiting for" in r.getMessage()]
    # Not the first QUEUED (a submitted request is queued) nor the terminal status (the event's message says it).
    assert changes == ["Async request req1: QUEUED -> IN_PROGRESS after 20s."]


@pytest.mark.parametrize(
    ("seen", "lines"),
    [
        (("QUEUED", "FAILED"), []),  # a submitted request is queued; the event's message says how it ended
        (("IN_PROGRESS", "FAILED"), ["Async request req1: submitted -> IN_PROGRESS after 10s."]),
    ],
)
async def test_a_first_queued_is_not_news_but_a_first_in_progress_is(
    server: StatusServer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    seen: tuple[str, ...],
    lines: list[str],
) -> None:
    caplog.set_level(logging.INFO, logger="test.async_trigger")
    server.get(STATUS_URL).mock(side_effect=statuses(*seen))
    events = await run_to_end(make_trigger(clock, last_status=None))
    assert [r.getMessage() for r in caplog.records if "->" in r.getMessage()] == lines
    assert "FAILED" in events[0]["message"]


async def test_progress_line_at_most_once_a_minute_with_queue_depth(
    server: StatusServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="test.async_trigger")
    server.get(STATUS_URL).mock(side_effect=[*statuses(*["QUEUED"] * 18), *statuses("SUCCEEDED")])
    queue = server.get(QUEUE_URL).respond(
        200,
        json={"model_id": "abc123", "deployment_id": "dep1", "num_queued_requests": 400, "num_in_progress_requests": 2},
    )
    await run_to_end(make_trigger(clock, poll_interval=10))
    progress = [r.getMessage() for r in caplog.records if "deployment queue" in r.getMessage()]
    # 190 s of waiting at one poll per 10 s: lines at ~70 s and ~130 s (and ~190 s), each with one queue read.
    assert 2 <= len(progress) <= 3
    assert queue.call_count == len(progress)
    assert progress[0] == "Async request req1 is QUEUED after 1m10s; deployment queue: 400 queued, 2 in progress."


async def test_queue_depth_failure_is_not_asked_again(server: StatusServer, clock: FakeClock) -> None:
    server.get(STATUS_URL).mock(side_effect=[*statuses(*["QUEUED"] * 18), *statuses("SUCCEEDED")])
    queue = server.get(QUEUE_URL).respond(404, json={"error": "not found"})
    [event] = await run_to_end(make_trigger(clock))
    assert event["status"] == "success"
    assert queue.call_count == 1


# --- deadlines -------------------------------------------------------------------------------------------------


async def test_deadline_is_checked_before_the_first_poll(server: StatusServer, clock: FakeClock) -> None:
    route = server.get(STATUS_URL).respond(200, json=state("SUCCEEDED"))
    clock.now = T0 + 3600
    [event] = await run_to_end(make_trigger(clock))
    assert event["status"] == "timeout"
    assert not route.called
    assert event["manifest"]["request_id"] == "req1"


async def test_deadline_cuts_the_last_sleep_short(server: StatusServer, clock: FakeClock) -> None:
    server.get(STATUS_URL).respond(200, json=state("QUEUED"))
    [event] = await run_to_end(make_trigger(clock, deadline=T0 + 25))
    assert event["status"] == "timeout"
    assert clock.sleeps == [10, 10, 5]
    assert "did not finish before the task's deadline" in event["message"]
    assert "last status QUEUED" in event["message"]


def test_a_poll_that_hangs_past_the_deadline_ends_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GET that would take 30 s with 0.3 s left ends at the deadline, as a timeout (virtual time)."""

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200, json=state("QUEUED"))

    async def main(loop: VirtualTimeLoop) -> tuple[list[dict[str, Any]], float, int]:
        async with StatusServer(monkeypatch) as server:
            route = server.get(STATUS_URL).mock(side_effect=hang)
            trigger = BasetenAsyncRequestTrigger(
                request_id="req1", model_id="abc123", poll_interval=9.7, deadline=T0 + 10, started_at=T0,
                clock=loop.time,
            )  # fmt: skip
            events = await run_to_end(trigger)
            return events, loop.time(), route.call_count

    events, ended, polls = run_virtual(main, start=T0)
    assert [event["status"] for event in events] == ["timeout"]
    assert ended == pytest.approx(T0 + 10)
    assert polls == 1  # the poll was sent, and cut off by the deadline


# --- transient errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "blip",
    [
        httpx.Response(502, text="bad gateway"),
        httpx.Response(429, headers={"Retry-After": "17"}, json={"error": "rate limited"}),
        httpx.RemoteProtocolError("the server hung up"),
    ],
    ids=["502", "429", "hang-up"],
)
async def test_one_blip_never_fails_the_wait(
    server: StatusServer, clock: FakeClock, blip: httpx.Response | Exception
) -> None:
    server.get(STATUS_URL).mock(side_effect=[*statuses("QUEUED"), blip, *statuses("IN_PROGRESS", "SUCCEEDED")])
    [event] = await run_to_end(make_trigger(clock))
    assert event["status"] == "success"
    if isinstance(blip, httpx.Response) and blip.status_code == 429:
        assert 17 in clock.sleeps  # Retry-After honoured (longer than the poll interval)


async def test_blips_are_retried_inside_the_hook_too(
    server: StatusServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.connect(max_retries=3)
    route = server.get(STATUS_URL).mock(
        side_effect=[httpx.Response(503), httpx.Response(429, headers={"Retry-After": "2"}), *statuses("SUCCEEDED")]
    )
    [event] = await run_to_end(make_trigger(clock))
    assert event["status"] == "success"
    assert route.call_count == 3
    assert 2 in clock.sleeps  # the hook's retry wait went through the injected sleep


async def test_errors_past_the_budget_end_with_an_error_event(server: StatusServer, clock: FakeClock) -> None:
    server.get(STATUS_URL).respond(503, text="unavailable")
    [event] = await run_to_end(make_trigger(clock, deadline=None))
    assert event["status"] == "error"
    assert "Gave up reading the status" in event["message"]
    assert async_requests.retry_note() in event["message"]  # what a retry does, true for this Airflow
    assert clock.now - T0 >= async_requests.DEFAULT_ERROR_BUDGET_S


@pytest.mark.parametrize(("store", "says"), [(True, "re-attaches to it"), (False, "submits a new request")])
async def test_the_give_up_message_is_true_for_this_airflow(
    server: StatusServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, store: bool, says: str
) -> None:
    monkeypatch.setattr(async_requests, "reattach_supported", lambda: store)
    server.get(STATUS_URL).respond(503, text="unavailable")
    [event] = await run_to_end(make_trigger(clock, deadline=None))
    assert says in event["message"]
    if not store:
        assert "re-attaches" not in event["message"]


async def test_auth_error_ends_at_once(server: StatusServer, clock: FakeClock) -> None:
    # The server echoes the key it was sent, so the redaction is what keeps it out of the event.
    route = server.get(STATUS_URL).respond(401, json={"error": f"invalid key {KEY}", "detail": f"Api-Key {KEY}"})
    [event] = await run_to_end(make_trigger(clock))
    assert event["status"] == "error"
    assert "BasetenAuthError" in event["message"]
    assert "invalid key ***" in event["message"]
    assert KEY not in json.dumps(event)
    assert route.call_count == 1


async def test_missing_connection_is_an_error_event(
    server: StatusServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_BASETEN_DEFAULT")
    [event] = await run_to_end(make_trigger(clock, baseten_conn_id="nope"))
    assert event["status"] == "error"
    assert not server.calls


async def test_invalid_kwargs_are_an_error_event(clock: FakeClock) -> None:
    [event] = await run_to_end(make_trigger(clock, model_id="not/valid"))
    assert event["status"] == "error"
    assert "Invalid trigger arguments" in event["message"]


# --- cancellation, restart, kill -------------------------------------------------------------------------------


async def test_cancelled_error_is_never_swallowed(server: StatusServer, clock: FakeClock) -> None:
    server.get(STATUS_URL).respond(200, json=state("QUEUED"))
    blocked = asyncio.Event()

    async def block(seconds: float) -> None:
        blocked.set()
        await asyncio.Event().wait()

    trigger = make_trigger(clock)
    trigger._sleep = block
    task = asyncio.ensure_future(run_to_end(trigger))
    await asyncio.wait_for(blocked.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not [m for m in server.methods() if m != "GET"]


async def test_recreated_from_serialize_mid_wait_finishes_without_a_post(
    server: StatusServer, clock: FakeClock
) -> None:
    """A triggerer restart: the running trigger is cancelled, a new one is built from its kwargs and finishes."""
    submit = server.post(f"{HOST}/production/async_predict").respond(201, json={"request_id": "other"})
    server.get(STATUS_URL).mock(side_effect=statuses("QUEUED", "IN_PROGRESS", "IN_PROGRESS", "SUCCEEDED"))
    first = make_trigger(clock)
    polled_twice = asyncio.Event()
    original_sleep = clock.asleep

    async def sleep(seconds: float) -> None:
        if len(server.calls) >= 2:
            polled_twice.set()
            await asyncio.Event().wait()
        await original_sleep(seconds)

    first._sleep = sleep
    task = asyncio.ensure_future(run_to_end(first))
    await asyncio.wait_for(polled_twice.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await first.cleanup()

    _, kwargs = first.serialize()
    second = make_trigger(clock, **kwargs)
    [event] = await run_to_end(second)
    assert event["status"] == "success"
    assert not submit.called
    assert server.methods() == ["GET"] * 4


async def test_on_kill_cancels_a_queued_request(
    server: StatusServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="test.async_trigger")
    delete = server.delete(STATUS_URL).respond(200, json={"request_id": "req1", "canceled": True, "message": "ok"})
    await make_trigger(clock).on_kill()
    assert delete.call_count == 1
    assert "Canceled async request req1." in caplog.messages


async def test_on_kill_tolerates_canceled_false_with_a_warning(
    server: StatusServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    server.delete(STATUS_URL).respond(
        200, json={"request_id": "req1", "canceled": False, "message": "request is IN_PROGRESS"}
    )
    await make_trigger(clock).on_kill()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "Baseten did not cancel async request req1 (request is IN_PROGRESS): only QUEUED requests can be canceled; "
        "it runs to the end."
    ]


@pytest.mark.parametrize(
    "answer",
    [httpx.Response(404, json={"error": "not found"}), httpx.Response(401), httpx.RemoteProtocolError("hung up")],
    ids=["404", "401", "hang-up"],
)
async def test_on_kill_never_raises(
    server: StatusServer, clock: FakeClock, caplog: pytest.LogCaptureFixture, answer: Any
) -> None:
    server.delete(STATUS_URL).mock(side_effect=lambda request: answer)
    await make_trigger(clock).on_kill()
    assert any(r.levelno == logging.WARNING for r in caplog.records)


async def test_on_kill_respects_cancel_on_kill_false(server: StatusServer, clock: FakeClock) -> None:
    delete = server.delete(STATUS_URL).respond(200, json={"request_id": "req1", "canceled": True})
    await make_trigger(clock, cancel_on_kill=False).on_kill()
    assert not delete.called


async def test_cleanup_releases_local_resources_only(server: StatusServer, clock: FakeClock) -> None:
    server.get(STATUS_URL).respond(200, json=state("SUCCEEDED"))
    trigger = make_trigger(clock)
    await run_to_end(trigger)
    await trigger.cleanup()
    assert trigger._hook is None
    assert set(server.methods()) == {"GET"}  # no DELETE on cleanup


async def test_triggers_share_one_session_and_one_poll_budget(
    server: StatusServer, clock: FakeClock, mocker: Any
) -> None:
    """Proven by what the triggers use: every poll goes through one aiohttp session and takes a token of one
    budget (separately built triggers, as a triggerer builds them from their kwargs)."""
    from airflow_provider_baseten.hooks.hotpath import HotSender
    from airflow_provider_baseten.hooks.ratelimit import AsyncTokenBucket

    server.get(STATUS_URL).respond(200, json=state("SUCCEEDED"))
    server.get(f"{HOST}/async_request/req2").respond(200, json=state("SUCCEEDED", request_id="req2"))
    sessions: list[int] = []
    buckets: list[int] = []
    exchange = HotSender._exchange
    acquire = AsyncTokenBucket.acquire

    async def seen_exchange(self: HotSender, *args: Any) -> Any:
        sessions.append(id(self.session))
        return await exchange(self, *args)

    async def counted(self: AsyncTokenBucket) -> float:
        buckets.append(id(self))
        return await acquire(self)

    mocker.patch.object(HotSender, "_exchange", seen_exchange)
    mocker.patch.object(AsyncTokenBucket, "acquire", counted)
    one, two = make_trigger(clock), make_trigger(clock, request_id="req2")
    events = await asyncio.gather(run_to_end(one), run_to_end(two))
    assert [event["status"] for [event] in events] == ["success", "success"]
    assert len(server.calls) == 2
    assert len(sessions) == 2
    assert len(set(sessions)) == 1
    assert len(buckets) == 2
    assert len(set(buckets)) == 1


def test_a_hundred_triggers_meeting_one_429_each_stay_under_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The case that sent 33 status requests in one second: each trigger's first poll meets a 429 (Retry-After: 1)
    and the hook retries it. Production retry settings and rate; counted per second of virtual time."""
    import httpx_aiohttp  # noqa: F401  (imported here, not on a thread of the virtual loop)

    monkeypatch.setattr(async_requests.random, "random", __import__("random").Random(3).random)
    sent: list[float] = []
    answered: set[str] = set()
    clock: list[Any] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(clock[0]())
        request_id = request.url.path.rsplit("/", 1)[1]
        if request_id not in answered:
            answered.add(request_id)
            return httpx.Response(429, headers={"Retry-After": "1"}, json={"error": "slow down"})
        return httpx.Response(200, json=state("SUCCEEDED", request_id=request_id))

    async def main(loop: VirtualTimeLoop) -> list[dict[str, Any]]:
        clock.append(loop.time)
        async with StatusServer(monkeypatch) as server:
            server.connect(max_retries=5, status_rate_limit=15)
            server.get(url__regex=rf"{HOST}/async_request/").mock(side_effect=answer)
            triggers = [
                BasetenAsyncRequestTrigger(
                    request_id=f"req{i}", model_id="abc123", poll_interval=10, started_at=T0, clock=loop.time
                )
                for i in range(100)
            ]
            results = await asyncio.gather(*(run_to_end(trigger) for trigger in triggers))
        return [event for events in results for event in events]

    events = run_virtual(main, start=T0)
    assert [event["status"] for event in events] == ["success"] * 100
    assert len(sent) == 200
    assert max_in_window(sent, 1.0) <= 15 + 3  # the rate plus its burst: under Baseten's 20 in every second

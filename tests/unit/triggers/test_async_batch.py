"""BasetenAsyncBatchTrigger: serialize round trip, which requests a round polls (the FIFO rule and the queue-depth
lift), status changes written back to the manifest, and its one event (done, capacity, timeout, error); on_kill.

The trigger polls on the hot path (``aiohttp``, which respx cannot see), so every test that reads a status talks to
:class:`Baseten`, a tiny ``aiohttp.web`` app on 127.0.0.1 that the connection's gateway points at.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from airflow_testing import KEY, FakeClock, set_conn, state

from airflow_provider_baseten.operators._async_manifest import Manifest
from airflow_provider_baseten.triggers.async_batch import BasetenAsyncBatchTrigger


@pytest.fixture(autouse=True)
def _conn(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch)


def seeded(tmp_path: Path, statuses: list[str]) -> Manifest:
    """A manifest with input i accepted as ``req{i:04d}`` (in index order) and last seen with ``statuses[i]``."""
    manifest = Manifest(str(tmp_path / "manifest"))
    records: list[dict[str, Any]] = []
    for index, value in enumerate(statuses):
        request_id = f"req{index:04d}"
        records += [
            {"event": "intent", "index": index, "attempt": 0, "at": 100.0 + index},
            {"event": "accepted", "index": index, "attempt": 0, "request_id": request_id},
            {"event": "status", "index": index, "attempt": 0, "request_id": request_id, "status": value},
        ]
    manifest.write(records)
    return manifest


class Baseten:
    """A loopback Baseten: ``GET /async_request/{id}`` from ``current`` (index -> status; missing: 404), after any
    scripted ``answers`` (status code, body, headers) in order; the queue depth; ``DELETE`` from ``cancels``.
    It counts status reads per index and queue-depth reads; ``hang`` holds every status read open; ``on_read`` and
    ``on_queue_read`` run as a read arrives (what happened on Baseten just before it answered)."""

    def __init__(self) -> None:
        self.current: dict[int, str] = {}
        self.reads: list[int] = []
        self.answers: list[tuple[int, Any, dict[str, str]]] = []
        self.queued = 5
        self.in_progress = 2
        self.queue_reads = 0
        self.cancels: list[dict[str, Any]] = []
        self.canceled: list[str] = []
        self.hang = False
        self.released = asyncio.Event()
        self.on_read: Callable[[int], None] = lambda index: None
        self.on_queue_read: Callable[[], None] = lambda: None

    async def status(self, request: web.Request) -> web.Response:
        request_id = request.match_info["request_id"]
        index = int(request_id[3:])
        self.reads.append(index)
        self.on_read(index)
        if self.hang:
            await self.released.wait()
        if self.answers:
            code, body, headers = self.answers.pop(0)
            return web.json_response(body, status=code, headers=headers)
        value = self.current.get(index)
        if value is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(state(value, request_id))

    async def queue(self, request: web.Request) -> web.Response:
        self.queue_reads += 1
        self.on_queue_read()
        return web.json_response(
            {"model_id": "abc123", "num_queued_requests": self.queued, "num_in_progress_requests": self.in_progress}
        )

    async def cancel(self, request: web.Request) -> web.Response:
        self.canceled.append(request.path)
        return web.json_response(self.cancels.pop(0))


@pytest.fixture
async def baseten(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Baseten]:
    from airflow_provider_baseten.hooks.baseten import close_shared_async_clients

    server = Baseten()
    app = web.Application()
    app.router.add_get("/async_request/{request_id}", server.status)
    app.router.add_delete("/async_request/{request_id}", server.cancel)
    app.router.add_get("/production/async_queue_status", server.queue)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    conn = {"conn_type": "baseten", "host": f"127.0.0.1:{port}", "password": KEY,
            "extra": {"max_retries": 0, "status_rate_limit": 1_000_000}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_BASETEN_DEFAULT", json.dumps(conn))
    try:
        yield server
    finally:
        server.released.set()
        await close_shared_async_clients()
        await runner.cleanup()


def trigger(manifest: Manifest, clock: FakeClock, total: int, **kwargs: Any) -> BasetenAsyncBatchTrigger:
    return BasetenAsyncBatchTrigger(
        manifest_uri=manifest.uri,
        total=total,
        model_id="abc123",
        poll_interval=10,
        clock=clock.time,
        sleep=clock.asleep,
        **kwargs,
    )


async def events(t: BasetenAsyncBatchTrigger) -> list[dict[str, Any]]:
    try:
        return [event.payload async for event in t.run()]
    finally:
        await t.cleanup()


def test_serialize_round_trips_and_carries_no_ids(tmp_path: Path, clock: FakeClock) -> None:
    t = trigger(seeded(tmp_path, ["QUEUED"]), clock, 1, deadline=123.0, refill_below=7)
    classpath, kwargs = t.serialize()
    assert classpath == "airflow_provider_baseten.triggers.baseten.BasetenAsyncBatchTrigger"
    assert BasetenAsyncBatchTrigger(**json.loads(json.dumps(kwargs))).serialize() == (classpath, kwargs)
    assert "req0000" not in json.dumps(kwargs)


def test_serialize_carries_the_address_so_the_revived_trigger_polls_the_same_deployment(
    tmp_path: Path, clock: FakeClock
) -> None:
    t = BasetenAsyncBatchTrigger(
        manifest_uri=seeded(tmp_path, ["QUEUED"]).uri,
        total=1,
        baseten_conn_id="other_conn",
        model_id="abc123",
        environment="staging",
        regional=True,
        clock=clock.time,
    )
    revived = BasetenAsyncBatchTrigger(**json.loads(json.dumps(t.serialize()[1])))
    assert (revived.baseten_conn_id, revived.model_id, revived.environment, revived.regional) == (
        "other_conn",
        "abc123",
        "staging",
        True,
    )
    assert revived._target() == t._target()


def watcher_for(t: BasetenAsyncBatchTrigger, manifest: Manifest, clock: FakeClock, total: int) -> Any:
    from airflow_provider_baseten.triggers.async_batch import BatchWatcher

    return BatchWatcher(
        t._get_hook(), t._target(), manifest, total=total, poll_interval=10, deadline=None, refill_below=None,
        log=t.log, clock=clock.time, sleep=clock.asleep, webhook_outputs=t.webhook_outputs,
    )  # fmt: skip


async def test_a_round_reads_running_requests_and_queued_ones_up_to_the_first_still_queued(
    baseten: Baseten, tmp_path: Path, clock: FakeClock
) -> None:
    statuses = ["IN_PROGRESS", "IN_PROGRESS"] + ["QUEUED"] * 20
    manifest = seeded(tmp_path, statuses)
    baseten.current = dict(enumerate(statuses)) | {0: "SUCCEEDED"}
    watcher = watcher_for(trigger(manifest, clock, 22), manifest, clock, 22)
    assert await watcher.round() is None
    assert sorted(baseten.reads) == [0, 1, 2, 3, 4, 5]  # both running + the first chunk of four queued
    assert manifest.entries[0].status == "SUCCEEDED"
    assert Manifest(manifest.uri).load().entries[0].status == "SUCCEEDED"  # written back as a part

    baseten.reads.clear()
    assert await watcher.round() is None
    assert baseten.reads == []  # nothing is due before a poll interval: the running one and the paused frontier

    clock.now += 13  # past the longest jittered interval
    baseten.current |= {2: "IN_PROGRESS", 3: "SUCCEEDED", 4: "SUCCEEDED", 5: "SUCCEEDED"}
    assert await watcher.round() is None
    # 1 running; queued from 2: chunk [2..5] all left the queue, so the next (twice as big) is read, and it waits.
    assert sorted(baseten.reads) == [1, 2, 3, 4, 5, *range(6, 14)]
    assert baseten.queue_reads == 1  # read once, when the frontier had paused


async def test_a_backlog_of_finished_requests_is_read_at_once_each_once(
    baseten: Baseten, tmp_path: Path, clock: FakeClock
) -> None:
    manifest = seeded(tmp_path, ["QUEUED"] * 300)
    baseten.current = dict.fromkeys(range(300), "SUCCEEDED")
    [event] = await events(trigger(manifest, clock, 300))
    assert event["counts"] == {"SUCCEEDED": 300}
    assert sorted(baseten.reads) == list(range(300))  # one read each
    assert clock.sleeps == []  # never a poll interval's sleep while the reads found finished requests
    assert len(Manifest(manifest.uri).load().parts) == 3  # the seed, then one part per round of at most 256 reads


async def test_the_sweep_reads_every_queued_request_once_per_full_sweep(
    baseten: Baseten, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_baseten.triggers import async_batch

    monkeypatch.setattr(async_batch, "FULL_SWEEP_S", 100.0)
    manifest = seeded(tmp_path, ["QUEUED"] * 10)
    baseten.current = dict.fromkeys(range(10), "QUEUED") | {7: "CANCELED"}
    start = clock.now
    [event] = await events(trigger(manifest, clock, 10, deadline=start + 150))
    assert event["status"] == "timeout"
    assert event["counts"] == {"CANCELED": 1, "QUEUED": 9}  # seen by the sweep, out of FIFO order
    assert baseten.reads.count(9) == 1  # past the frontier's chunk: read only by the one sweep
    baseten.reads.clear()
    [event] = await events(trigger(Manifest(manifest.uri).load(), clock, 10, deadline=clock.now + 250))
    assert baseten.reads.count(9) == 2  # 100 s after each sweep ended, not back to back


async def test_an_empty_deployment_queue_lifts_the_fifo_stop(
    baseten: Baseten, tmp_path: Path, clock: FakeClock
) -> None:
    statuses = ["QUEUED"] * 10
    manifest = seeded(tmp_path, statuses)
    baseten.current, baseten.queued = dict.fromkeys(range(10), "SUCCEEDED"), 0
    assert await events(trigger(manifest, clock, 10)) == [
        {
            "status": "done",
            "manifest_uri": manifest.uri,
            "counts": {"SUCCEEDED": 10},
            "message": "Every submitted request of the batch has finished.",
            "deadline": None,
        }
    ]
    assert sorted(baseten.reads) == list(range(10))  # one round: every one read once


async def test_done_after_every_request_is_terminal_with_404_as_lost(
    baseten: Baseten, tmp_path: Path, clock: FakeClock
) -> None:
    manifest = seeded(tmp_path, ["IN_PROGRESS", "IN_PROGRESS", "QUEUED"])
    baseten.current, baseten.queued = {0: "SUCCEEDED", 2: "EXPIRED"}, 0
    [event] = await events(trigger(manifest, clock, 3))
    assert event["status"] == "done"
    assert event["counts"] == {"EXPIRED": 1, "LOST": 1, "SUCCEEDED": 1}
    assert Manifest(manifest.uri).load().counts(3) == event["counts"]


async def test_capacity_once_few_enough_are_in_flight(baseten: Baseten, tmp_path: Path, clock: FakeClock) -> None:
    manifest = seeded(tmp_path, ["IN_PROGRESS"] * 4)
    baseten.current = {0: "SUCCEEDED", 1: "SUCCEEDED", 2: "IN_PROGRESS", 3: "IN_PROGRESS"}
    [event] = await events(trigger(manifest, clock, 10, refill_below=2))
    assert event["status"] == "capacity"
    assert event["counts"] == {"IN_PROGRESS": 2, "NOT_SUBMITTED": 6, "SUCCEEDED": 2}


async def test_deadline_is_checked_first_and_reported_on_time(
    baseten: Baseten, tmp_path: Path, clock: FakeClock
) -> None:
    manifest = seeded(tmp_path, ["QUEUED"])
    baseten.current = {0: "QUEUED"}
    [event] = await events(trigger(manifest, clock, 1, deadline=clock.now + 25))
    assert event["status"] == "timeout"
    assert event["deadline"] == clock.now  # it woke exactly at the deadline, not a poll interval later


async def test_a_non_retryable_status_error_ends_the_wait(baseten: Baseten, tmp_path: Path, clock: FakeClock) -> None:
    manifest = seeded(tmp_path, ["IN_PROGRESS"])
    baseten.answers = [(401, {"error": "bad key"}, {})]
    [event] = await events(trigger(manifest, clock, 1))
    assert event["status"] == "error"
    assert "401" in event["message"]


async def test_transient_errors_are_retried_within_the_budget(
    baseten: Baseten, tmp_path: Path, clock: FakeClock
) -> None:
    manifest = seeded(tmp_path, ["IN_PROGRESS"])
    baseten.current, baseten.answers = {0: "SUCCEEDED"}, [(502, {"error": "x"}, {})] * 3
    [event] = await events(trigger(manifest, clock, 1))
    assert event["status"] == "done"
    assert event["counts"] == {"SUCCEEDED": 1}
    assert baseten.reads == [0, 0, 0, 0]  # three failed rounds, each a poll interval apart, then the answer
    assert len(clock.sleeps) == 3


async def test_an_unreadable_manifest_is_an_error_event(tmp_path: Path, clock: FakeClock) -> None:
    folder = tmp_path / "manifest"
    folder.mkdir()
    (folder / "part-000000-aa.jsonl").write_text("garbage\n")
    t = BasetenAsyncBatchTrigger(manifest_uri=str(folder), total=1, model_id="abc123", clock=clock.time)
    [event] = await events(t)
    assert event["status"] == "error"
    assert "corrupt" in event["message"]


async def test_on_kill_cancels_queued_requests_and_records_it(
    baseten: Baseten, tmp_path: Path, clock: FakeClock
) -> None:
    manifest = seeded(tmp_path, ["QUEUED", "IN_PROGRESS", "QUEUED"])
    baseten.cancels = [
        {"request_id": "req0000", "canceled": True},
        {"request_id": "req0002", "canceled": False, "message": "running"},
    ]
    await trigger(manifest, clock, 3).on_kill()
    assert baseten.canceled == ["/async_request/req0000", "/async_request/req0002"]
    assert Manifest(manifest.uri).load().counts(3) == {"CANCELED": 1, "IN_PROGRESS": 1, "QUEUED": 1}


async def test_polls_go_through_the_hot_path_not_the_hooks_httpx_client(
    baseten: Baseten, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_baseten.hooks.baseten import BasetenHook

    async def slow_path(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("status read through httpx + tenacity (about 10x the CPU of the hot path)")

    monkeypatch.setattr(BasetenHook, "aget_async_request", slow_path)
    manifest = seeded(tmp_path, ["IN_PROGRESS"] * 3)
    baseten.current = dict.fromkeys(range(3), "SUCCEEDED")
    [event] = await events(trigger(manifest, clock, 3))
    assert event["counts"] == {"SUCCEEDED": 3}


async def test_a_read_never_runs_past_the_deadline(baseten: Baseten, tmp_path: Path, clock: FakeClock) -> None:
    manifest = seeded(tmp_path, ["IN_PROGRESS"])
    baseten.hang = True  # the read would wait for the hot path's read timeout (seconds)
    # 0.05 s of deadline on the fake clock is 0.05 s of loop time for the read: it is cut then, and reported.
    [event] = await asyncio.wait_for(events(trigger(manifest, clock, 1, deadline=clock.now + 0.05)), timeout=2)
    assert event["status"] == "timeout"  # not "error": the cut read is not a failure
    assert baseten.reads == [0]


async def test_a_429_shrinks_the_shared_status_budget_and_the_read_is_made_again(
    baseten: Baseten, tmp_path: Path, clock: FakeClock
) -> None:
    from airflow_provider_baseten.hooks.hotpath import status_budget

    manifest = seeded(tmp_path, ["IN_PROGRESS"])
    baseten.current = {0: "SUCCEEDED"}
    baseten.answers = [(429, {"error": "rate limited"}, {"Retry-After": "2"})]
    t = trigger(manifest, clock, 1)
    [event] = await events(t)
    assert event["counts"] == {"SUCCEEDED": 1}
    assert baseten.reads == [0, 0]
    hook = t._get_hook()
    await hook.aget_settings()
    budget = status_budget(hook)  # the one every trigger of this loop and connection shares
    assert budget.rate < budget.max_rate


def real_budget(monkeypatch: pytest.MonkeyPatch, rate: float) -> None:
    """The loopback connection with a status budget of ``rate`` req/s (burst ``rate / 5``) on the test's clock."""
    import os

    conn = json.loads(os.environ["AIRFLOW_CONN_BASETEN_DEFAULT"])
    conn["extra"]["status_rate_limit"] = rate
    monkeypatch.setenv("AIRFLOW_CONN_BASETEN_DEFAULT", json.dumps(conn))


async def test_reads_go_in_groups_of_the_budgets_burst_one_wait_per_group(
    baseten: Baseten, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_budget(monkeypatch, 15)  # burst 3
    manifest = seeded(tmp_path, ["IN_PROGRESS"] * 9)
    baseten.current = dict.fromkeys(range(9), "SUCCEEDED")
    watcher = watcher_for(trigger(manifest, clock, 9), manifest, clock, 9)
    assert await watcher.round() is None
    assert sorted(baseten.reads) == list(range(9))
    # The burst's three at once, then two groups of three, each after one wait for its third token (a paced read
    # after another would wait six times).
    assert clock.sleeps == pytest.approx([0.2, 0.2])
    assert manifest.counts(9) == {"SUCCEEDED": 9}


async def read_once(watcher: Any, baseten: Baseten, clock: FakeClock) -> None:
    """The watcher's first round (it reads every request it found running once), then one poll interval on."""
    assert await watcher.round() is None
    baseten.reads.clear()
    clock.now += 13  # past the longest jittered interval: every running request is due


async def test_queue_counts_showing_three_finished_read_the_three_oldest_running_not_fifty(
    baseten: Baseten, tmp_path: Path, clock: FakeClock
) -> None:
    manifest = seeded(tmp_path, ["IN_PROGRESS"] * 50)
    baseten.current = dict.fromkeys(range(50), "IN_PROGRESS")
    baseten.queued, baseten.in_progress = 0, 50
    watcher = watcher_for(trigger(manifest, clock, 50), manifest, clock, 50)
    await read_once(watcher, baseten, clock)
    baseten.current |= dict.fromkeys(range(3), "SUCCEEDED")
    baseten.in_progress = 47  # the deployment holds 47 of the batch's 50: three finished
    assert await watcher.round() is None
    assert sorted(baseten.reads) == [0, 1, 2]
    assert manifest.counts(50) == {"IN_PROGRESS": 47, "SUCCEEDED": 3}

    baseten.reads.clear()
    clock.now += 13
    assert await watcher.round() is None
    assert baseten.reads == []  # the counts say none finished since: no read
    clock.now += 4 * 13  # past RECHECK_INTERVALS: each running request is read again, whatever the counts say
    assert await watcher.round() is None
    assert sorted(baseten.reads) == list(range(3, 50))


async def test_reads_disagreeing_with_the_counts_read_every_running_request(
    baseten: Baseten, tmp_path: Path, clock: FakeClock
) -> None:
    manifest = seeded(tmp_path, ["IN_PROGRESS"] * 20)
    baseten.current = dict.fromkeys(range(20), "IN_PROGRESS")
    baseten.queued, baseten.in_progress = 0, 20
    watcher = watcher_for(trigger(manifest, clock, 20), manifest, clock, 20)
    await read_once(watcher, baseten, clock)
    baseten.current |= {0: "SUCCEEDED", 15: "SUCCEEDED"}  # not in start order
    baseten.in_progress = 18
    assert await watcher.round() is None
    assert sorted(baseten.reads) == [0, 1]  # the two oldest: 1 still runs, so the counts and the reads disagree
    baseten.reads.clear()
    assert await watcher.round() is None  # at once, not a poll interval later
    assert sorted(baseten.reads) == list(range(1, 20))
    assert manifest.counts(20) == {"IN_PROGRESS": 18, "SUCCEEDED": 2}
    baseten.reads.clear()
    baseten.in_progress = 15  # three more by the counts; but they misled once: one poll interval, every due one
    clock.now += 13
    assert await watcher.round() is None
    assert sorted(baseten.reads) == [*range(1, 15), *range(16, 20)]


async def test_counts_holding_other_callers_requests_cannot_tell_so_every_due_request_is_read(
    baseten: Baseten, tmp_path: Path, clock: FakeClock
) -> None:
    manifest = seeded(tmp_path, ["IN_PROGRESS"] * 10)
    baseten.current = dict.fromkeys(range(10), "IN_PROGRESS") | {7: "SUCCEEDED"}
    baseten.queued, baseten.in_progress = 30, 10  # more than the batch has pending
    watcher = watcher_for(trigger(manifest, clock, 10), manifest, clock, 10)
    await read_once(watcher, baseten, clock)
    assert await watcher.round() is None
    assert sorted(baseten.reads) == [*range(7), 8, 9]


async def test_no_wait_for_budget_tokens_runs_past_the_deadline(
    baseten: Baseten, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_baseten.hooks.hotpath import status_budget

    real_budget(monkeypatch, 1)
    manifest = seeded(tmp_path, ["IN_PROGRESS"] * 3)
    baseten.current = dict.fromkeys(range(3), "IN_PROGRESS")
    t = trigger(manifest, clock, 3, deadline=clock.now + 0.05)
    hook = t._get_hook()
    await hook.aget_settings()
    budget = status_budget(hook)
    budget._sleep = asyncio.sleep  # the tokens' wait takes loop time: 6 s for the next token
    budget._tokens = -5.0
    [event] = await asyncio.wait_for(events(t), timeout=2)
    assert event["status"] == "timeout"
    assert baseten.reads == []

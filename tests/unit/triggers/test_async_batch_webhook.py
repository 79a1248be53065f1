"""BasetenAsyncBatchTrigger with ``webhook_outputs``: deliveries in the receiver's store end requests without a status
read (success, errors, malformed files), and requests never delivered are read once the queue holds none of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import object_store_fs  # tests/ is on sys.path (as test_batch_storage imports it: one module, one store)
import pytest
from airflow_testing import FakeClock

from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.triggers._deliveries import DeliveryListing
from tests.unit.triggers.test_async_batch import Baseten, baseten, events, seeded, trigger, watcher_for

__all__ = ["baseten"]  # the loopback Baseten fixture, shared with the trigger's own tests


def deliver(folder: Path, request_id: str, errors: Any = None, **extra: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    body = {"request_id": request_id, "model_id": "abc123", "type": "async_request_completed", "time": "t",
            "data": None if errors else {"ok": 1}, "errors": errors, **extra}  # fmt: skip
    (folder / f"{request_id}.json").write_text(json.dumps(body))


def test_the_listing_returns_the_deliveries_still_waited_on_and_skips_partials(tmp_path: Path) -> None:
    listing = DeliveryListing(str(tmp_path / "out"))
    waiting = {"req0001", "req0002", "req0003"}
    assert listing.delivered(waiting.__contains__) == []  # no folder yet: nothing delivered
    deliver(tmp_path / "out", "req0001")
    deliver(tmp_path / "out", "req0009")  # another batch's, in the same folder
    (tmp_path / "out" / ".req0002.json.abc.tmp").write_text("{")
    (tmp_path / "out" / "notes.txt").write_text("x")
    assert listing.delivered(waiting.__contains__) == ["req0001"]
    waiting.discard("req0001")  # the caller recorded it
    deliver(tmp_path / "out", "req0003")
    assert listing.delivered(waiting.__contains__) == ["req0003"]
    waiting.discard("req0003")
    assert listing.delivered(waiting.__contains__) == []


object_store = object_store_fs.object_store  # the fixture: an in-memory object store registered with Airflow


def test_the_listing_reads_an_object_store_through_object_storage(object_store: str) -> None:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    folder = ObjectStoragePath(f"{object_store}/deliveries/run-1")
    (folder / "req0007.json").write_text(json.dumps({"request_id": "req0007", "errors": [{"code": "X"}]}))
    listing = DeliveryListing(f"{object_store}/deliveries/run-1")
    assert listing.delivered(lambda request_id: True) == ["req0007"]
    delivery = listing.read("req0007")
    assert (delivery.status, delivery.errors) == ("FAILED", [{"code": "X"}])
    assert delivery.uri == f"{object_store}/deliveries/run-1/req0007.json"


@pytest.mark.parametrize("bad", ["", "   ", "s3://", 7])
def test_a_bad_outputs_location_is_a_clear_config_error(bad: Any) -> None:
    from airflow_provider_baseten.triggers._deliveries import check_outputs_location

    with pytest.raises(BasetenConfigError, match="webhook_outputs"):
        check_outputs_location(bad)


async def test_deliveries_end_requests_without_a_status_read_and_the_manifest_records_each_output(
    baseten: Baseten, tmp_path: Path, clock: FakeClock
) -> None:
    manifest = seeded(tmp_path, ["QUEUED"] * 4 + ["IN_PROGRESS"] * 2)
    out = tmp_path / "out" / "run-1"
    for index in range(6):
        deliver(out, f"req{index:04d}", errors=[{"code": "ERR", "message": "boom"}] if index == 2 else None)
    t = trigger(manifest, clock, 6, webhook_outputs=f"file://{tmp_path}/out/run-1")
    assert t.serialize()[1]["webhook_outputs"] == f"file://{tmp_path}/out/run-1"
    [event] = await events(t)
    assert event["status"] == "done"
    assert event["counts"] == {"SUCCEEDED": 5, "FAILED": 1}
    assert baseten.reads == []
    reloaded = type(manifest)(manifest.uri).load()
    entries = {entry.request_id: entry for entry in reloaded.entries.values()}
    assert entries["req0002"].errors == ({"code": "ERR", "message": "boom"},)
    assert entries["req0004"].output_uri == f"file://{out}/req0004.json"  # in the parts, for the worker to read
    # The trigger's own copy of the manifest writes the URIs but keeps none in memory.
    assert t._manifest is not None
    assert not [entry.output_uri for entry in t._manifest.entries.values() if entry.output_uri]


async def test_a_malformed_delivery_is_logged_and_its_status_read_instead(
    baseten: Baseten, tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = seeded(tmp_path, ["IN_PROGRESS"] * 3)
    out = tmp_path / "out"
    deliver(out, "req0000")
    (out / "req0001.json").write_text("{not json")
    deliver(out, "req0002", errors="oops")  # errors that are not a list
    baseten.current = {1: "SUCCEEDED", 2: "FAILED"}
    [event] = await events(trigger(manifest, clock, 3, webhook_outputs=str(out)))
    logged = "".join(capsys.readouterr())  # the trigger logs through Airflow's structlog, to the captured stream
    assert event["counts"] == {"SUCCEEDED": 2, "FAILED": 1}
    assert sorted(baseten.reads) == [1, 2]
    assert "req0001.json is not JSON" in logged
    assert "errors that are not a list" in logged


async def test_a_malformed_delivery_is_warned_about_and_read_once_not_every_interval(
    baseten: Baseten, tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = seeded(tmp_path, ["IN_PROGRESS"] * 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "req0000.json").write_text("{not json")
    t = trigger(manifest, clock, 2, webhook_outputs=str(out))
    watcher = watcher_for(t, manifest, clock, 2)
    baseten.queued, baseten.in_progress = 0, 2  # still running: only the listing runs each interval
    baseten.current = {0: "IN_PROGRESS"}
    for _ in range(4):
        assert await watcher.round() is None
        clock.now += 13
    logged = "".join(capsys.readouterr())
    assert logged.count("req0000.json is not JSON") == 1
    assert baseten.reads == [0]  # read once instead of the delivery; later rounds leave it to the status rules


async def test_while_the_queue_holds_work_only_the_listing_runs_then_lost_webhooks_are_read(
    baseten: Baseten, tmp_path: Path, clock: FakeClock
) -> None:
    manifest = seeded(tmp_path, ["QUEUED"] * 5 + ["IN_PROGRESS"] * 5)
    out = tmp_path / "out"
    t = trigger(manifest, clock, 10, webhook_outputs=str(out))
    watcher = watcher_for(t, manifest, clock, 10)
    baseten.queued, baseten.in_progress = 3, 4
    for _ in range(5):  # intervals pass, deliveries trickle in: no status read while the queue holds work
        assert await watcher.round() is None
        clock.now += 13
    assert baseten.reads == []
    for index in range(8):
        deliver(out, f"req{index:04d}")
    assert await watcher.round() is None
    assert baseten.reads == []
    assert manifest.counts(10) == {"SUCCEEDED": 8, "IN_PROGRESS": 2}
    # The deployment is empty, but two requests never delivered: their webhooks were lost. They are read, never
    # counted as delivered successes.
    baseten.queued, baseten.in_progress = 0, 0
    baseten.current = {8: "WEBHOOK_FAILED", 9: "WEBHOOK_FAILED"}
    clock.now += 13
    assert await watcher.round() is None  # the next interval's round reads them: no wait for a full sweep
    assert sorted(baseten.reads) == [8, 9]
    event = await watcher.run()
    assert event["status"] == "done"
    assert event["counts"] == {"SUCCEEDED": 8, "WEBHOOK_FAILED": 2}


async def test_the_status_reads_run_once_a_full_sweep_even_while_the_queue_stays_busy(
    baseten: Baseten, tmp_path: Path, clock: FakeClock
) -> None:
    from airflow_provider_baseten.triggers.async_batch import FULL_SWEEP_S

    manifest = seeded(tmp_path, ["IN_PROGRESS"] * 2)
    watcher = watcher_for(trigger(manifest, clock, 2), manifest, clock, 2)
    watcher._outputs = DeliveryListing(str(tmp_path / "out"))
    baseten.queued, baseten.in_progress = 50, 50  # other callers' work keeps the deployment busy
    baseten.current = {0: "SUCCEEDED", 1: "IN_PROGRESS"}
    assert await watcher.round() is None
    assert baseten.reads == []
    clock.now += FULL_SWEEP_S + 1
    assert await watcher.round() is None
    assert sorted(baseten.reads) == [0, 1]


async def test_requests_that_leave_the_deployment_just_before_the_counts_read_are_found_in_the_listing(
    baseten: Baseten, tmp_path: Path, clock: FakeClock
) -> None:
    manifest = seeded(tmp_path, ["IN_PROGRESS"] * 3)
    out = tmp_path / "out"
    watcher = watcher_for(trigger(manifest, clock, 3, webhook_outputs=str(out)), manifest, clock, 3)
    baseten.queued, baseten.in_progress = 0, 3

    def the_last_ones_finish() -> None:  # delivered, then gone from the counts, just before the counts answer
        for index in range(3):
            deliver(out, f"req{index:04d}")
        baseten.current = dict.fromkeys(range(3), "SUCCEEDED")
        baseten.in_progress = 0

    baseten.on_queue_read = the_last_ones_finish
    assert await watcher.round() is None
    assert baseten.reads == []  # the listing after the counts holds every delivery: no status read
    entries = type(manifest)(manifest.uri).load().entries.values()
    assert [entry.output_uri for entry in entries] == [f"file://{out}/req{index:04d}.json" for index in range(3)]


async def test_a_request_a_status_read_finds_ended_records_its_stored_delivery(
    baseten: Baseten, tmp_path: Path, clock: FakeClock
) -> None:
    manifest = seeded(tmp_path, ["IN_PROGRESS"] * 3)
    out = tmp_path / "out"
    t = trigger(manifest, clock, 3, webhook_outputs=str(out))
    baseten.queued, baseten.in_progress = 0, 0  # the counts say idle: the status reads run
    baseten.current = {0: "SUCCEEDED", 1: "FAILED", 2: "WEBHOOK_FAILED"}

    def delivered_before_the_status_is_recorded(index: int) -> None:  # as Baseten: the webhook, then the status
        if index < 2:
            deliver(out, f"req{index:04d}", errors=[{"code": "ERR", "message": "boom"}] if index == 1 else None)

    baseten.on_read = delivered_before_the_status_is_recorded
    [event] = await events(t)
    assert event["counts"] == {"SUCCEEDED": 1, "FAILED": 1, "WEBHOOK_FAILED": 1}
    assert sorted(baseten.reads) == [0, 1, 2]
    entries = {entry.request_id: entry for entry in type(manifest)(manifest.uri).load().entries.values()}
    assert entries["req0000"].output_uri == f"file://{out}/req0000.json"  # the output's only copy, found
    assert entries["req0001"].output_uri == f"file://{out}/req0001.json"  # its errors, as delivered
    assert entries["req0002"].output_uri is None  # the webhook failed: nothing stored

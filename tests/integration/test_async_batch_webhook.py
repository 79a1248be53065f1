"""The async batch with ``webhook_outputs`` against the emulator: the emulator delivers every output to a real
``WebhookServer`` on loopback, the trigger learns the completions from the stored deliveries, and the emulator's
journal shows far fewer status reads than requests."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from airflow_provider_baseten.emulator import DEMO_WEBHOOK_SECRET, DeploymentSpec, Emulator, ModelSpec, World
from airflow_provider_baseten.emulator.limits import Limits
from airflow_provider_baseten.operators._async_manifest import Manifest
from airflow_provider_baseten.operators.async_batch import BasetenAsyncBatchOperator
from airflow_provider_baseten.webhooks import WebhookReceiver, WebhookServer
from tests.integration.test_async_batch import run_task

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

COUNT = 240


def hooked_world() -> World:
    deployment = DeploymentSpec("hookprod01", min_replicas=1, predict_concurrency=50)
    behaviour = {
        "kind": "flaky",
        "probability": 0.1,
        "status": 500,
        "then": {"kind": "sleep", "seconds": 1, "then": "echo"},
    }
    world = World(webhook_secrets=[DEMO_WEBHOOK_SECRET])
    return world.add(ModelSpec("hook01", behaviour=behaviour, deployments=[deployment]))


@pytest.mark.baseten_emulator(world=hooked_world, limits=Limits(status_per_second=None, queue_status_per_second=None))
def test_deliveries_end_the_batch_with_far_fewer_status_reads_than_requests(
    baseten_emulator: Emulator, tmp_path: Path
) -> None:
    emu = baseten_emulator
    store = tmp_path / "outputs"
    with WebhookServer(WebhookReceiver(DEMO_WEBHOOK_SECRET, store.as_uri(), prefix="run-1")) as server:
        op = BasetenAsyncBatchOperator(
            task_id="score_hooked",
            model_id="hook01",
            inputs=[{"n": n} for n in range(COUNT)],
            manifest_location=str(tmp_path / "manifest"),
            webhook_endpoint=server.url,
            webhook_outputs=f"{store.as_uri()}/run-1",
            submit_rate=200,
            poll_interval=0.2,
            max_failed_fraction=1.0,
        )
        result, _defers = run_task(op)
        answers = dict(server.answers)
    final = Manifest(str(tmp_path / "manifest")).load()
    assert all(entry.terminal for entry in final.entries.values())
    counts = Counter(entry.status for entry in final.entries.values())

    # Baseten (and the emulator) sends the webhook before it records the final status, so the batch can end on a
    # delivery a moment before the emulator's own record says so: compare once the emulator has recorded them all.
    emu.settle_async()
    truth = Counter(emu.call(lambda s: [r.status.value for r in s.queue.records.values()]))
    assert counts == truth
    assert counts["FAILED"] > 0, answers
    assert counts["SUCCEEDED"] > 0, answers
    assert sum(counts.values()) == COUNT
    assert result["counts"] == dict(counts)
    # Every request was delivered (the emulator stores each before it records the end), so every entry points at
    # its output, whether the listing or a status read saw it end first.
    undelivered = [entry.request_id for entry in final.entries.values() if not entry.output_uri]
    assert undelivered == [], f"{len(undelivered)} entries without an output URI"
    reads = emu.journal.count(method="GET", route="async_status")
    assert reads < COUNT / 4, f"{reads} status reads for {COUNT} requests"

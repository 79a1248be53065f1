"""The emulator's signed webhook deliveries reach a WebhookReceiver over loopback HTTP and land in storage.

Requests are submitted with the hook (as the async operators do), the emulator runs them on its scaled clock and
delivers to a stdlib WebhookServer; the stored files and the emulator's delivery records are the evidence.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_baseten.emulator import DEMO_WEBHOOK_SECRET, Emulator
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.baseten import BasetenHook
from airflow_provider_baseten.webhooks import WebhookReceiver, WebhookServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ECHO = Target.of(model_id="echo01")


def submit(webhook: str, n: int) -> list[str]:
    hook = BasetenHook(customer_request_id="")
    return [
        hook.async_predict(ECHO, {"model_input": {"i": i}, "webhook_endpoint": webhook}).request_id for i in range(n)
    ]


def finished(emulator: Emulator, ids: list[str], timeout: float = 20.0) -> dict[str, str]:
    """Final statuses, read from the emulator's state (bounded wait on the server thread, no emulated sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = emulator.call(lambda s: {r: s.queue.records[r].status.value for r in ids})
        if not {"QUEUED", "IN_PROGRESS"} & set(statuses.values()):
            return statuses
        if time.monotonic() > deadline:
            raise AssertionError(f"requests still running: {statuses}")
        time.sleep(0.01)


def test_every_output_is_stored_once_under_its_request_id(baseten_emulator: Emulator, tmp_path: Path) -> None:
    baseten_emulator.advance(7200)  # emulated time runs ahead of the wall; the payload's `time` must not
    with WebhookServer(WebhookReceiver(DEMO_WEBHOOK_SECRET, tmp_path.as_uri(), prefix="nightly")) as server:
        ids = submit(server.url, 20)
        statuses = finished(baseten_emulator, ids)

    assert set(statuses.values()) == {"SUCCEEDED"}
    stored = {p.stem: json.loads(p.read_bytes()) for p in (tmp_path / "nightly").glob("*.json")}
    assert set(stored) == set(ids)
    assert [stored[r]["data"] for r in ids] == [{"i": i} for i in range(20)]
    assert {r["errors"] == [] and r["model_id"] == "echo01" for r in stored.values()} == {True}
    assert server.answers == {200: 20}


def test_a_store_outage_is_answered_500_and_baseten_retry_delivers(baseten_emulator: Emulator) -> None:
    kept: dict[str, Any] = {}
    outages = [OSError("bucket unreachable")]

    def store(request_id: str, payload: dict[str, Any]) -> None:
        if outages:
            raise outages.pop()
        kept[request_id] = payload["data"]

    with WebhookServer(WebhookReceiver(DEMO_WEBHOOK_SECRET, store)) as server:
        [request_id] = submit(server.url, 1)
        statuses = finished(baseten_emulator, [request_id])

    assert statuses == {request_id: "SUCCEEDED"}
    assert baseten_emulator.webhooks[0].attempts == [500, 200]
    assert kept == {request_id: {"i": 0}}


@pytest.mark.parametrize(
    ("receiver", "attempts"),
    [
        (lambda path: WebhookReceiver("not-the-workspace-secret", path), [401]),
        (lambda path: WebhookReceiver(DEMO_WEBHOOK_SECRET, path, clock=lambda: time.time() + 3600), [401]),
    ],
    ids=["wrong-secret", "receiver-clock-off-by-an-hour"],
)
def test_a_rejected_delivery_is_not_retried_and_the_output_is_lost(
    baseten_emulator: Emulator, tmp_path: Path, receiver: Callable[[Path], WebhookReceiver], attempts: list[int]
) -> None:
    with WebhookServer(receiver(tmp_path)) as server:
        [request_id] = submit(server.url, 1)
        statuses = finished(baseten_emulator, [request_id])

    assert statuses == {request_id: "WEBHOOK_FAILED"}
    assert baseten_emulator.webhooks[0].attempts == attempts
    assert list(tmp_path.iterdir()) == []


def test_the_server_takes_a_burst_of_connections_and_keeps_them_alive(tmp_path: Path) -> None:
    """A batch's deliveries arrive together: the stdlib's listen backlog of 5 left connections unanswered (the
    benchmark lost 4-9 of 10,000 outputs that way); HTTP/1.1 lets a sender reuse one connection."""
    import http.client
    import socket

    server = WebhookServer(WebhookReceiver(DEMO_WEBHOOK_SECRET, tmp_path))  # bound and listening, not yet accepting
    host, port = server._server.server_address[:2]
    waiting: list[socket.socket] = []
    try:
        for _ in range(64):  # each completes its handshake only if the backlog has room for it
            waiting.append(socket.create_connection((host, port), timeout=2))
    finally:
        for sock in waiting:
            sock.close()
    assert len(waiting) == 64
    with server:
        connection = http.client.HTTPConnection(host, port, timeout=5)
        try:
            for _ in range(3):
                connection.request("GET", "/health")
                answer = connection.getresponse()
                assert (answer.status, json.loads(answer.read())) == (200, {"status": "ok"})
                assert answer.version == 11
            assert not answer.will_close  # the same connection served all three
        finally:
            connection.close()

"""WebhookReceiver and WebhookServer: verify, store once per request id, answer so Baseten retries only what it must."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import fsspec
import object_store_fs
import pytest
from test_webhooks import NOW, SECRET, body, sign

from airflow_provider_baseten.webhooks import WebhookReceiver, WebhookServer, output_uri

object_store = object_store_fs.object_store  # the fixture: an in-memory store that cannot append


def delivery(request_id: Any = "req1", secret: str = SECRET, **overrides: Any) -> tuple[bytes, dict[str, str]]:
    raw = body(request_id=request_id, **overrides)
    return raw, {"x-baseten-signature": sign(raw, secret), "X-Baseten-Request-Id": str(request_id)}


def receiver(store: Any, **kwargs: Any) -> WebhookReceiver:
    return WebhookReceiver(["whsec_previous", SECRET], store, clock=lambda: NOW, **kwargs)


def test_a_verified_delivery_is_stored_byte_for_byte_under_its_request_id(tmp_path: Path) -> None:
    raw, headers = delivery()

    status, body = receiver(str(tmp_path), prefix="/run-7/").handle(raw, headers)

    target = tmp_path / "run-7" / "req1.json"
    assert (status, body["stored"]) == (200, "new")
    assert body["uri"] == f"file://{target}" == output_uri(f"file://{tmp_path}", "req1", prefix="run-7")
    assert target.read_bytes() == raw
    assert [p.name for p in target.parent.iterdir()] == ["req1.json"]  # no partial file left behind


def test_a_redelivery_answers_200_and_keeps_the_first_copy(tmp_path: Path) -> None:
    first, headers = delivery()
    again, again_headers = delivery(time="2024-04-02T20:33:23Z")  # Baseten's retry after a timeout
    hook = receiver(tmp_path)
    hook.handle(first, headers)

    status, body = hook.handle(again, again_headers)

    assert (status, body["stored"]) == (200, "duplicate")
    assert (tmp_path / "req1.json").read_bytes() == first


def test_failed_requests_are_stored_with_their_errors(tmp_path: Path) -> None:
    errors = [{"code": "MODEL_PREDICT_ERROR", "message": "boom"}]
    raw, headers = delivery(data=None, errors=errors)

    assert receiver(tmp_path).handle(raw, headers)[0] == 200
    assert json.loads((tmp_path / "req1.json").read_text())["errors"] == errors


@pytest.mark.parametrize(
    ("raw_headers", "why"),
    [
        (delivery(secret="someone-else"), "does not match"),
        ((delivery()[0], {}), "No v1= signature"),
        (delivery(time="2024-04-02T20:20:00Z"), "tolerance"),
    ],
    ids=["wrong-secret", "unsigned", "stale"],
)
def test_unauthentic_or_stale_deliveries_get_401_and_store_nothing(
    tmp_path: Path, raw_headers: tuple[bytes, dict[str, str]], why: str
) -> None:
    status, body = receiver(tmp_path).handle(*raw_headers)

    assert status == 401
    assert why in body["error"]
    assert SECRET not in json.dumps(body)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("request_id", [None, 42, "", "../escape", "a/b", "x" * 129])
def test_an_unusable_request_id_gets_400_and_never_becomes_a_path(tmp_path: Path, request_id: Any) -> None:
    status, body = receiver(tmp_path / "out").handle(*delivery(request_id))

    assert status == 400
    assert "request_id" in body["error"]
    assert list(tmp_path.iterdir()) == []


def test_a_failing_store_answers_500_so_baseten_retries_and_the_retry_stores() -> None:
    kept: dict[str, dict[str, Any]] = {}
    outages = [OSError("bucket unreachable")]

    def store(request_id: str, payload: dict[str, Any]) -> str:
        if outages:
            raise outages.pop()
        kept[request_id] = payload
        return f"mem://{request_id}"

    hook = receiver(store)
    failed = hook.handle(*delivery())
    retried = hook.handle(*delivery())

    assert failed == (500, {"error": "Could not store the output of req1 (OSError); retry."})
    assert retried == (200, {"request_id": "req1", "stored": "new", "uri": "mem://req1"})
    assert kept["req1"]["data"] == {"label": "positive"}
    assert hook.uri_for("req1") is None


def test_outputs_go_to_an_object_store_as_whole_objects(object_store: str) -> None:
    raw, headers = delivery()
    hook = receiver(f"{object_store}/outputs")

    status, body = hook.handle(raw, headers)
    duplicate = hook.handle(raw, headers)

    assert (status, body["uri"]) == (200, f"{object_store}/outputs/req1.json")
    assert duplicate[1]["stored"] == "duplicate"
    with fsspec.open(body["uri"], "rb") as stored:
        assert stored.read() == raw


def test_configuration_errors_are_raised_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="WebhookReceiver needs at least one non-empty webhook secret"):
        WebhookReceiver(["", ""], tmp_path)
    with pytest.raises(TypeError, match="store must be a URI, a path or a callable, not int"):
        WebhookReceiver(SECRET, 3)  # type: ignore[arg-type]


def _post(url: str, raw: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=raw, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_stdlib_server_answers_what_the_receiver_decides(tmp_path: Path) -> None:
    with WebhookServer(receiver(tmp_path), max_body_bytes=4096) as server:
        stored = _post(server.url + "hook", *delivery())
        rejected = _post(server.url, *delivery(secret="nope"))
        too_big = _post(server.url, b"x" * 5000, {})
        with urllib.request.urlopen(server.url + "health", timeout=5) as health:
            healthy = json.loads(health.read())

    assert server.url.startswith("http://127.0.0.1:")
    assert stored[0] == 200
    assert (rejected[0], too_big[0], healthy) == (401, 413, {"status": "ok"})
    assert server.answers == {200: 2, 401: 1, 413: 1}
    assert (tmp_path / "req1.json").exists()


def test_the_serve_command_runs_a_receiver_and_needs_a_secret(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "airflow_provider_baseten.webhooks", "serve", "--port", "0", "--store"]
    env = {**os.environ, "BASETEN_WEBHOOK_SECRETS": f"{SECRET},whsec_previous"}
    no_secret = {**env, "BASETEN_WEBHOOK_SECRETS": ""}
    missing = subprocess.run([*command, str(tmp_path)], env=no_secret, capture_output=True, text=True, timeout=60)
    with subprocess.Popen(
        [*command, str(tmp_path), "--tolerance", "0"], env=env, stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            banner = process.stdout.readline()
            url = banner.split()[4]
            status, body = _post(url, *delivery())  # a 2024 time: accepted because --tolerance 0 turns the check off
        finally:
            process.terminate()

    assert missing.returncode == 2
    assert "set BASETEN_WEBHOOK_SECRETS" in missing.stderr
    assert banner.endswith(f"-> file://{tmp_path}/<request_id>.json\n")
    assert (status, body["uri"]) == (200, f"file://{tmp_path}/req1.json")

"""Helpers for the emulator's integration tests: a plain HTTP client that sends Baseten ``Host`` headers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_baseten.emulator import DEMO_API_KEY, Emulator


class BasetenClient:
    """``client.post("model-echo01", "/production/predict", json=...)``: the host's ``.api.baseten.co`` is added."""

    def __init__(self, emulator: Emulator, key: str | None = DEMO_API_KEY, scheme: str = "Api-Key") -> None:
        self.emulator = emulator
        self.http = httpx.Client(base_url=emulator.url, timeout=10.0)
        self.key = key
        self.scheme = scheme

    def request(self, method: str, host: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Host": host if "." in host else f"{host}.api.baseten.co", **kwargs.pop("headers", {})}
        if self.key is not None:
            headers.setdefault("Authorization", f"{self.scheme} {self.key}")
        return self.http.request(method, path, headers=headers, **kwargs)

    def get(self, host: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", host, path, **kwargs)

    def post(self, host: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", host, path, **kwargs)

    def delete(self, host: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", host, path, **kwargs)

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def make_client(baseten_emulator: Emulator) -> Iterator[Callable[..., BasetenClient]]:
    """``make_client(key=..., scheme=...)``: more clients on the test's emulator (closed at the end)."""
    made: list[BasetenClient] = []

    def make(key: str | None = DEMO_API_KEY, scheme: str = "Api-Key") -> BasetenClient:
        made.append(BasetenClient(baseten_emulator, key, scheme))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., BasetenClient]) -> BasetenClient:
    return make_client()


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., None]:
    return wait_until


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll a condition the server thread will make true (bounded; not a sleep that lets emulated time pass)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


class WebhookReceiver:
    """A loopback HTTP server recording the webhooks it gets; answers ``statuses`` in turn (then 200)."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.received: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.received.append({"headers": dict(self.headers.items()), "body": body, "path": self.path})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()

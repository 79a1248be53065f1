"""The worker's client (httpx), the triggerer's (aiohttp transport) and the hot path (bare aiohttp) behave alike.

Every scenario runs the same call through ``predict`` (sync), ``apredict`` (async, under ``asyncio.run`` as user
code and ``airflow dags test`` run it) and ``HotSender.predict`` (batch items, trigger polls) against loopback
servers: an origin that records what reaches it, and a real
recording forward proxy (plain-HTTP forwarding of absolute-URI requests). Nothing leaves 127.0.0.0/8: DNS failures
come from a patched resolver.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from airflow_provider_baseten.exceptions import BasetenAmbiguousSubmitError, BasetenConnectionError
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.baseten import BasetenHook
from airflow_provider_baseten.hooks.calls import encode_json
from airflow_provider_baseten.hooks.hotpath import HotSender

MODEL = Target.of(model_id="abc123")
API_KEY = "parity-secret-key"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
PATHS = ["sync", "async", "hot"]


@dataclass
class Seen:
    """One request as a server saw it."""

    method: str
    target: str  # the request-target: a path at the origin, an absolute URI at the proxy
    headers: dict[str, str] = field(default_factory=dict)


class Recording(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.seen: list[Seen] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recording

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _record(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.seen.append(Seen(self.command, self.path, headers))
        return body

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Origin(_Handler):
    """Answers every request with the JSON it received."""

    def do_POST(self) -> None:
        body = self._record()
        self._answer(200, json.dumps({"echo": json.loads(body or b"null")}).encode())

    do_GET = do_POST


class ForwardProxy(_Handler):
    """A plain-HTTP forward proxy: takes absolute-URI requests, forwards them, relays the answer."""

    def do_POST(self) -> None:
        body = self._record()
        parts = urlsplit(self.path)
        if parts.scheme != "http" or not parts.hostname:
            self._answer(400, b"absolute http:// URI expected", "text/plain")
            return
        upstream = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=10)
        hop_by_hop = {"proxy-connection", "connection", "keep-alive", "proxy-authorization"}
        headers = {name: value for name, value in self.headers.items() if name.lower() not in hop_by_hop}
        try:
            upstream.request(self.command, parts.path or "/", body=body or None, headers=headers)
            answer = upstream.getresponse()
            self._answer(answer.status, answer.read(), answer.getheader("Content-Type") or "application/json")
        finally:
            upstream.close()

    do_GET = do_POST


@pytest.fixture
def serve() -> Iterator[Callable[[type[BaseHTTPRequestHandler]], Recording]]:
    servers: list[Recording] = []

    def start(handler: type[BaseHTTPRequestHandler]) -> Recording:
        server = Recording(handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def origin(serve: Callable[[type[BaseHTTPRequestHandler]], Recording]) -> Recording:
    return serve(Origin)


@pytest.fixture
def proxy(serve: Callable[[type[BaseHTTPRequestHandler]], Recording]) -> Recording:
    return serve(ForwardProxy)


@pytest.fixture(autouse=True)
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy variable of the machine running the tests leaks in."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def set_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    def _set(host: str, **extra: Any) -> None:
        conn = {"conn_type": "baseten", "password": API_KEY, "host": host, "extra": {"max_retries": 1, **extra}}
        monkeypatch.setenv("AIRFLOW_CONN_BASETEN_DEFAULT", json.dumps(conn))

    return _set


def _hook() -> BasetenHook:
    async def no_wait(_seconds: float) -> None:
        return None

    return BasetenHook(customer_request_id="dag/task/run/-1/1", sleep=lambda _s: None, async_sleep=no_wait)


def predict(path: str, payload: Any = None, **kwargs: Any) -> Any:
    """One predict through the sync or the async path, each on a fresh hook, as a task or a trigger makes it."""
    hook = _hook()
    if path == "sync":
        try:
            return hook.predict(MODEL, payload or {"x": 1}, **kwargs).data
        finally:
            hook.close()

    async def run() -> Any:
        return (await hook.apredict(MODEL, payload or {"x": 1}, **kwargs)).data

    async def run_hot() -> Any:
        sender = await HotSender.shared(hook)
        call = hook._inference_call(MODEL, None, kwargs.get("timeout"), "json")
        return (await sender.predict(call, encode_json(payload or {"x": 1}))).data

    return asyncio.run(run_hot() if path == "hot" else run())


def failure(path: str, **kwargs: Any) -> BaseException:
    with pytest.raises((BasetenConnectionError, BasetenAmbiguousSubmitError)) as info:
        predict(path, **kwargs)
    return info.value


def closed_port() -> int:
    with socket.socket() as sock:  # free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- what reaches the server ----------------------------------------------------------------------------------------


def test_both_paths_send_the_same_request(set_conn: Callable[..., None], origin: Recording) -> None:
    set_conn(origin.url, headers={"X-Team": "ml", "User-Agent": "team-ml/1"})
    assert [predict(path, {"n": i}) for i, path in enumerate(PATHS)] == [{"echo": {"n": i}} for i in range(3)]

    sync, asynchronous, hot = origin.seen
    assert (sync.method, sync.target) == (asynchronous.method, asynchronous.target) == ("POST", "/production/predict")
    assert (hot.method, hot.target) == ("POST", "/production/predict")
    assert sync.headers["host"] == "model-abc123.api.baseten.co"
    assert sync.headers["authorization"] == f"Api-Key {API_KEY}"
    assert sync.headers["x-team"] == "ml"
    assert sync.headers["user-agent"] == "team-ml/1"
    assert sync.headers["x-baseten-customer-request-id"] == "dag/task/run/-1/1"
    # Every header, not a chosen few (only the body length differs: {"n":0} vs {"n":1} have the same length).
    assert sync.headers == asynchronous.headers == hot.headers


@pytest.mark.parametrize("path", PATHS)
def test_proxy_from_the_connection(
    path: str, set_conn: Callable[..., None], origin: Recording, proxy: Recording
) -> None:
    set_conn(origin.url, proxy=proxy.url)
    assert predict(path) == {"echo": {"x": 1}}
    [forwarded] = proxy.seen
    assert forwarded.target == f"{origin.url}/production/predict"  # an absolute URI: forward-proxied
    assert forwarded.headers["host"] == "model-abc123.api.baseten.co"
    assert len(origin.seen) == 1


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
@pytest.mark.parametrize("path", PATHS)
def test_proxy_from_the_environment(
    path: str,
    variable: str,
    set_conn: Callable[..., None],
    origin: Recording,
    proxy: Recording,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(variable, proxy.url)
    set_conn(origin.url)
    assert predict(path) == {"echo": {"x": 1}}
    assert [seen.target for seen in proxy.seen] == [f"{origin.url}/production/predict"]


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "*"])
@pytest.mark.parametrize("path", PATHS)
def test_no_proxy_bypasses_the_environment_proxy(
    path: str,
    no_proxy: str,
    set_conn: Callable[..., None],
    origin: Recording,
    proxy: Recording,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    set_conn(origin.url)
    assert predict(path) == {"echo": {"x": 1}}
    assert proxy.seen == []
    assert len(origin.seen) == 1


@pytest.mark.parametrize("path", PATHS)
def test_the_connection_proxy_wins_over_no_proxy(
    path: str, set_conn: Callable[..., None], origin: Recording, proxy: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    set_conn(origin.url, proxy=proxy.url)
    predict(path)
    assert len(proxy.seen) == 1


# --- failures are named for what they are, the same way on both paths ----------------------------------------------


def both(**kwargs: Any) -> tuple[BaseException, BaseException]:
    """The failure of every path (sync, async, hot): the same type, cause type and message; the first two."""
    sync, asynchronous, hot = (failure(path, **kwargs) for path in PATHS)
    for other in (asynchronous, hot):
        assert type(sync) is type(other)
        assert type(sync.__cause__) is type(other.__cause__)
        assert str(sync) == str(other)
    assert API_KEY not in str(sync)
    return sync, asynchronous


def test_refused_connection(set_conn: Callable[..., None]) -> None:
    port = closed_port()
    set_conn(f"127.0.0.1:{port}")
    sync, _ = both()
    assert isinstance(sync, BasetenConnectionError)
    assert isinstance(sync.__cause__, httpx.ConnectError)
    assert (sync.kind, sync.attempts, sync.host) == ("refused", 2, f"127.0.0.1:{port}")  # max_retries=1
    assert str(sync) == (
        f"predict on model abc123 (production): POST the gateway http://127.0.0.1:{port} (for "
        "model-abc123.api.baseten.co/production/predict) failed: the connection was refused (nothing listens on "
        "that port) (2 attempts). Hint: is the gateway running? Check the connection's host."
    )


def test_dns_failure(set_conn: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo
    asked: list[str] = []

    def resolver(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("127.0.0.1", "localhost"):
            return real(host, *args, **kwargs)
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", resolver)  # nothing leaves the machine, not even a DNS query
    set_conn("https://gateway.example.invalid:8443")
    sync, _ = both()
    assert isinstance(sync, BasetenConnectionError)
    assert sync.kind == "dns"
    assert "the host name could not be resolved (DNS)" in str(sync)
    assert set(asked) == {"gateway.example.invalid"}
    assert len(asked) >= 4  # both paths, two attempts each, asked the patched resolver


def test_dead_proxy_is_named_in_the_error(set_conn: Callable[..., None], origin: Recording) -> None:
    port = closed_port()
    set_conn(origin.url, proxy=f"http://127.0.0.1:{port}")
    sync, _ = both()
    assert isinstance(sync, BasetenConnectionError)
    assert sync.kind == "refused"
    assert f"via the proxy http://127.0.0.1:{port} failed" in str(sync)
    assert "Hint: is the proxy running and reachable?" in str(sync)
    assert origin.seen == []


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback socket that accepts connections (the kernel completes the handshake) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_read_timeout_of_a_predict_is_ambiguous(set_conn: Callable[..., None], silent_port: int) -> None:
    set_conn(f"127.0.0.1:{silent_port}")
    sync, _ = both(timeout=0.3)  # a real (short) socket timeout: the kernel's clock cannot be injected
    assert isinstance(sync, BasetenAmbiguousSubmitError)  # the model may be running: never re-sent
    assert isinstance(sync.__cause__, httpx.ReadTimeout)


# --- per-loop resources end with their loop ------------------------------------------------------------------------


def client_sockets_to(port: int) -> int:
    """Open sockets of this process connected to ``port`` on loopback (the client ends, not the server's)."""
    import os

    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    with open("/proc/self/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if remote_port == port and fields[9] in inodes and fields[3] == "01":  # ESTABLISHED
                count += 1
    return count


def test_fifty_event_loops_leave_no_socket_and_no_warning(
    set_conn: Callable[..., None], origin: Recording, caplog: pytest.LogCaptureFixture
) -> None:
    import gc
    import warnings

    port = origin.server_address[1]
    set_conn(origin.url)
    predict("async")  # imports and first-use costs out of the way
    before = client_sockets_to(port)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(50):  # the shared httpx client and the hot path's shared session alike
            assert predict("async" if i % 2 else "hot", {"i": i}) == {"echo": {"i": i}}
        gc.collect()
    assert len(origin.seen) == 51
    assert client_sockets_to(port) == before == 0  # each loop's shared client was closed when its loop ended
    # Only this test's own sockets (to the origin's port) count: the garbage collector may finalise an earlier test's
    # socket to another server while this one records warnings.
    assert not [str(w.message) for w in caught if "nclosed" in str(w.message) and f"{port})" in str(w.message)] + [
        str(w.message) for w in caught if "nclosed client session" in str(w.message)
    ]
    assert "nclosed" not in caplog.text

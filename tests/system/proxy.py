"""A recording HTTP forward proxy on loopback, for the scenario that runs every Airflow process behind a proxy.

It serves what ``HTTP_PROXY``/``HTTPS_PROXY`` clients send: absolute-form requests (``POST http://host:port/path``)
and ``CONNECT host:port`` tunnels. Each request is forwarded on its own upstream connection with
``Connection: close`` (so the answer, streamed or not, ends when the upstream closes) and recorded with its
``Host`` header. Upstreams outside 127.0.0.0/8 are refused (502): the tests never leave the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

_MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class ProxiedRequest:
    time: float
    method: str
    target: str
    """The absolute URL (or ``host:port`` of a ``CONNECT``)."""
    host: str
    """The ``Host`` header the client sent (the Baseten host name, in gateway mode)."""
    path: str


class RecordingProxy:
    """Run in a background thread: ``with RecordingProxy() as proxy: env["HTTP_PROXY"] = proxy.url``."""

    def __init__(self) -> None:
        self.requests: list[ProxiedRequest] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RecordingProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="recording-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the recording proxy did not start within 10 s")
        return self

    def __exit__(self, *exc: object) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def shutdown() -> None:
            server.close()
            await server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def snapshot(self) -> list[ProxiedRequest]:
        with self._lock:
            return list(self.requests)

    def _record(self, method: str, target: str, host: str, path: str) -> None:
        with self._lock:
            self.requests.append(ProxiedRequest(time.time(), method, target, host, path))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            await _answer(writer, 400, "bad request line")
            return
        headers = [line for line in lines[1:] if line]
        host_header = next((h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("host:")), "")
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            self._record(method, target, host_header, "")
            await self._tunnel(reader, writer, host, int(port or 443))
            return
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            await _answer(writer, 400, f"not an absolute http URL: {target}")
            return
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self._record(method, target, host_header, path)
        if not _loopback(parts.hostname):
            await _answer(writer, 502, f"upstream {parts.hostname} is not loopback")
            return
        length = next((int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")), 0)
        body = await reader.readexactly(length) if length else b""
        kept = [h for h in headers if not h.lower().startswith(("connection:", "proxy-", "keep-alive:"))]
        upstream_head = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""])
        try:
            up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        except OSError as err:
            await _answer(writer, 502, f"upstream refused: {err}")
            return
        up_writer.write(upstream_head.encode("latin-1") + body)
        await up_writer.drain()
        await _pipe(up_reader, writer)
        up_writer.close()
        writer.close()

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int) -> None:
        if not _loopback(host):
            await _answer(writer, 502, f"upstream {host} is not loopback")
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError as err:
            await _answer(writer, 502, f"upstream refused: {err}")
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            sink.close()


async def _answer(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    body = text.encode()
    writer.write(f"HTTP/1.1 {status} Proxy\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()

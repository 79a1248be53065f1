"""The emulator's connections send small writes at once (TCP_NODELAY), also on the plain asyncio loop."""

from __future__ import annotations

import socket

import httpx
import pytest

import airflow_provider_baseten.emulator.server as server
from airflow_provider_baseten.emulator import Emulator


@pytest.fixture
def plain_asyncio_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulator as it runs where uvloop is not installed (uvloop sets TCP_NODELAY on every socket itself)."""
    installed = server._installed
    monkeypatch.setattr(server, "_installed", lambda module: module != "uvloop" and installed(module))


@pytest.mark.usefixtures("plain_asyncio_loop")
def test_accepted_connections_have_nodelay_on_the_plain_asyncio_loop() -> None:
    # Without TCP_NODELAY a reply written in two parts (head, then body) waits out the client's delayed ACK:
    # about 40 ms on every request on a kept-alive connection.
    with Emulator() as emu, httpx.Client(base_url=emu.url) as client:
        client.get("/", headers={"Authorization": f"Api-Key {emu.api_key}"})
        assert emu._server is not None
        connections = list(emu._server.server_state.connections)
        assert connections
        for connection in connections:
            sock = connection.transport.get_extra_info("socket")  # type: ignore[union-attr]
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1

"""A private Redis on loopback, the Celery broker of the distributed scenarios (Debian's ``redis-server``).

No persistence (``--save ''``, no AOF): broker messages are scratch data. The server is a :class:`ManagedProcess`,
so it is killed at interpreter exit whatever happens to the fixtures.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from tests.system.harness import ManagedProcess, free_port, wait_for


class RedisUnavailable(RuntimeError):
    """``redis-server`` is not installed; the scenarios skip with this reason."""


def ping(port: int) -> bool:
    """One ``PING`` over a raw socket: ``True`` on ``+PONG``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, root: Path, *, timeout: float = 30) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailable("redis-server not found (apt-get install redis-server; .ci/run does this as root)")
        root.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(root), "--protected-mode", "yes",
        ]  # fmt: skip
        proc = ManagedProcess(name="redis", argv=argv, env={"PATH": "/usr/bin:/bin"}, log_path=root / "redis.out")
        proc.start()
        server = cls(port=port, process=proc)

        def probe() -> bool:
            if not proc.alive:
                raise RedisUnavailable(f"redis-server exited: {proc.tail(20)}")
            return ping(port)

        wait_for(probe, timeout=timeout, interval=0.2, what=f"redis-server on 127.0.0.1:{port}")
        return server

    def stop(self) -> None:
        self.process.stop(timeout=5)

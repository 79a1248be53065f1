"""``Emulator``: the server in a background thread, and the Python handle tests and users drive it with.

::

    from airflow_provider_baseten.emulator import Emulator, World

    with Emulator(world=World.default(), time_scale=60) as emu:
        os.environ["AIRFLOW_CONN_BASETEN_DEFAULT"] = emu.conn_uri()
        ...
        assert emu.journal.count(method="POST", path_suffix="/async_predict") == 1

The server listens on a loopback socket bound before the thread starts (``port=0``: a free port), so ``emu.url``
is connectable as soon as the constructor's ``start()`` returns. Emulator state lives on the server's event loop;
the methods here that change it (``advance``, ``reset``, ``set_status``, ...) run there and wait for the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from airflow_provider_baseten.emulator.app import EmulatorApp
from airflow_provider_baseten.emulator.clock import VISIBLE_FLOOR_SECONDS
from airflow_provider_baseten.emulator.state import EmulatorOptions, EmulatorState, Where
from airflow_provider_baseten.emulator.world import DEMO_API_KEY, KeyScope, World

if TYPE_CHECKING:
    import uvicorn

    from airflow_provider_baseten.emulator.async_queue import AsyncRecord
    from airflow_provider_baseten.emulator.clock import Clock
    from airflow_provider_baseten.emulator.faults import FaultInjector
    from airflow_provider_baseten.emulator.journal import Journal
    from airflow_provider_baseten.emulator.lifecycle import DeploymentRuntime
    from airflow_provider_baseten.emulator.limits import Limits
    from airflow_provider_baseten.emulator.webhooks import WebhookDelivery

log = logging.getLogger(__name__)

T = TypeVar("T")
_START_TIMEOUT = 30.0
_CALL_TIMEOUT = 60.0


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


class Emulator:
    """A local Baseten on ``127.0.0.1``.

    :param world: what it serves (default :meth:`World.default`).
    :param api_key: the key it accepts with full scope (``None``: only the world's and ``keys``).
    :param keys: more keys: ``{"key": "full" | "invoke"}`` (invoke-only keys get 403 on the management API).
    :param time_scale: emulated seconds per wall second (60: a 15-minute cold start takes 15 s).
    :param manual_clock: time stands still until :meth:`advance` (for tests; ``time_scale`` then only scales
        nothing).
    :param port: TCP port (0: a free one).
    :param limits: rate limits, queue and payload limits (default: Baseten's documented figures).
    :param webhook_timeout: wall seconds per webhook attempt (Baseten: 10).
    :param deliver_external_webhooks: ``False`` (default) counts webhooks to non-loopback URLs as delivered without
        sending them; ``True`` makes them fail.
    :param visible_floor: wall seconds that a scale-down delay and a finished request's status retention last at
        least on a running clock (capped by their own length), so clients polling at their default intervals see
        an ``ACTIVE`` deployment and a final status however fast time runs (default 120; 0: pure compression).
    """

    def __init__(
        self,
        world: World | None = None,
        *,
        api_key: str | None = DEMO_API_KEY,
        keys: Mapping[str, KeyScope] | None = None,
        time_scale: float = 1.0,
        manual_clock: bool = False,
        port: int = 0,
        host: str = "127.0.0.1",
        limits: Limits | None = None,
        webhook_timeout: float = 10.0,
        deliver_external_webhooks: bool = False,
        visible_floor: float = VISIBLE_FLOOR_SECONDS,
        log_level: str = "warning",
    ) -> None:
        from airflow_provider_baseten.emulator.limits import Limits

        self._world = world or World.default()
        self.options = EmulatorOptions(
            api_key=api_key,
            keys=dict(keys or {}),
            time_scale=time_scale,
            manual_clock=manual_clock,
            limits=limits or Limits(),
            webhook_timeout=webhook_timeout,
            deliver_external_webhooks=deliver_external_webhooks,
            visible_floor=visible_floor,
        )
        self.host = host
        self.port = port
        self.log_level = log_level
        self.app = EmulatorApp(self._world, self.options)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # --- running -------------------------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind the socket, start the server thread and wait until it serves (well under a second)."""
        import uvicorn

        if self._thread is not None:
            return self
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP (without it a reply
        # written in two parts waits out the client's delayed ACK, about 40 ms, on the plain asyncio loop)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(2048)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            loop="uvloop" if _installed("uvloop") else "asyncio",
            http="httptools" if _installed("httptools") else "h11",
            ws="none",
            lifespan="on",
            access_log=False,
            log_level=self.log_level,
            timeout_graceful_shutdown=2,
            timeout_keep_alive=30,
            backlog=2048,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"baseten-emulator-{self.port}", daemon=True
        )
        self._thread.start()
        if not self.app.ready.wait(_START_TIMEOUT):
            self.stop()
            raise RuntimeError("the Baseten emulator did not start")
        log.info("Baseten emulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving: parked and running requests are released first, so stopping takes well under a second."""
        if self._server is not None and self.app.state is not None and self._thread is not None:
            with contextlib.suppress(Exception):
                self._run(self.app.state.close())
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_key(self) -> str | None:
        return self.options.api_key

    def conn_uri(self, *, extra: Mapping[str, Any] | None = None) -> str:
        """An Airflow connection for ``AIRFLOW_CONN_BASETEN_DEFAULT`` (JSON form) pointing at this emulator."""
        conn: dict[str, Any] = {"conn_type": "baseten", "password": self.api_key, "host": self.url}
        if extra:
            conn["extra"] = dict(extra)
        return json.dumps(conn)

    # --- state, on the server's loop ---------------------------------------------------------------------------

    def call(self, fn: Callable[[EmulatorState], T]) -> T:
        """Run ``fn(state)`` on the server's loop and return its result (thread-safe access to the state)."""

        async def run() -> T:
            return fn(self.state)

        return self._run(run())

    def settle_async(self, limit_s: float = 10.0) -> bool:
        """Wait (at most ``limit_s``) until no async request is ``QUEUED`` or ``IN_PROGRESS`` in the records; whether
        that came. Baseten, and the emulator like it, sends the webhook before it records the final status, so a
        client that ends on the deliveries can be a moment ahead of the records: read them after this."""
        from airflow_provider_baseten.hooks.models import AsyncRequestStatus

        running = {AsyncRequestStatus.QUEUED, AsyncRequestStatus.IN_PROGRESS}

        def unsettled(state: EmulatorState) -> bool:
            return any(record.status in running for record in state.queue.records.values())

        until = time.monotonic() + limit_s
        while self.call(unsettled):
            if time.monotonic() >= until:
                return False
            time.sleep(0.05)
        return True

    def _run(self, coroutine: Any) -> Any:
        loop = self.app.loop
        if loop is None or self._thread is None:
            raise RuntimeError("the emulator is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(_CALL_TIMEOUT)

    @property
    def state(self) -> EmulatorState:
        state = self.app.state
        if state is None:
            raise RuntimeError("the emulator is not running")
        return state

    @property
    def world(self) -> World:
        return self.state.world

    @property
    def journal(self) -> Journal:
        return self.state.journal

    @property
    def faults(self) -> FaultInjector:
        return self.state.faults

    @property
    def clock(self) -> Clock:
        return self.state.clock

    @property
    def requests(self) -> dict[str, AsyncRecord]:
        """Async requests by id (including their ``output``, which Baseten itself never returns)."""
        return self.state.queue.records

    @property
    def webhooks(self) -> list[WebhookDelivery]:
        return self.state.webhooks.deliveries

    def counters(self) -> dict[str, Any]:
        return self.state.journal.counters()

    def advance(self, seconds: float) -> None:
        """Move emulated time forward, firing every timer on the way (cold starts end, requests expire, ...)."""
        self._run(self.state.scheduler.advance(seconds))

    def settle(self) -> None:
        """Let work the server has started finish its instant part (an async request just submitted runs until it
        waits on emulated time), so the next read sees it. ``advance`` settles too."""
        self.advance(0)

    def reset(self, world: World | None = None, **options: Any) -> None:
        """A fresh run: new state from ``world`` (default: the one given at start), empty journal, no faults.

        ``options`` override :class:`EmulatorOptions` fields for this and later resets (e.g. ``manual_clock=True``).
        """
        if world is not None:
            self._world = self.app.world = world
        if options:
            for name, value in options.items():
                if not hasattr(self.options, name):
                    raise TypeError(f"unknown emulator option {name!r}")
                setattr(self.options, name, value)
        self._run(self.app.reset(self._world, self.options))

    def deployment(self, target_id: str, **where: Unpack[Where]) -> DeploymentRuntime:
        """The live deployment (``.status``, ``.calls``, ``.queued``...); by environment or ``deployment_id``."""
        return self.state.deployment(target_id, **where)

    def status(self, target_id: str, **where: Any) -> str:
        return self.deployment(target_id, **where).status.value

    def set_status(self, target_id: str, status: str, **where: Any) -> None:
        """Force a deployment's status (a pending one boots to ``ACTIVE`` over its cold start)."""
        self.call(lambda state: state.deployment(target_id, **where).set_status(status))

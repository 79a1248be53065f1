"""``BasetenAsyncRequestTrigger``: waits in the triggerer for an async request that the worker already submitted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_baseten.triggers._addressed import AddressedTrigger

if TYPE_CHECKING:
    from airflow_provider_baseten.hooks.async_requests import AsyncRequestWatch
    from airflow_provider_baseten.hooks.baseten import BasetenHook

#: ``on_kill`` is bounded by the triggerer (``[triggerer] on_kill_timeout``, 30 s); the cancel gets less than that.
CANCEL_TIMEOUT_S = 20.0


class BasetenAsyncRequestTrigger(AddressedTrigger, BaseTrigger):
    """Poll ``GET /async_request/{id}`` until the request ends, then yield exactly one event and return.

    The trigger only reads: it never submits (a triggerer may restart it, move it or run it twice). Every trigger
    of a triggerer process polls on one hot-path ``aiohttp`` session (:mod:`~airflow_provider_baseten.hooks.hotpath`:
    the hook's retry table and error mapping, URL and headers built once) and one poll budget per connection (extra
    ``status_rate_limit``, 15 req/s by default, below Baseten's 20), so thousands of waits never cause a 429 storm.
    Polls are jittered; 429s and transient errors are backed off within a budget; the deadline is checked first on
    every turn. The event schema and the status mapping are in :mod:`airflow_provider_baseten.hooks.async_requests`.

    All keyword arguments are JSON primitives, serialized by :meth:`serialize`; new ones are optional.

    :param request_id: the async request to wait for.
    :param baseten_conn_id: the ``baseten`` connection (resolved asynchronously).
    :param model_id: the model the request was sent to (or ``chain_id``); its host serves the status.
    :param chain_id: the chain the request was sent to.
    :param environment: the environment the request was sent to.
    :param deployment_id: the pinned deployment, if any.
    :param regional: whether the request went to a regional host.
    :param poll_interval: seconds between polls (jittered by +/-25%).
    :param deadline: absolute wall-clock deadline in epoch seconds; a ``timeout`` event once it passes.
    :param fail_on_webhook_failure: map ``WEBHOOK_FAILED`` to ``failed`` (default) or to ``success``.
    :param started_at: epoch seconds of the submit, for "time waited" in the logs.
    :param cancel_on_kill: cancel the request in :meth:`on_kill` (Airflow 3.3+) when a user kills the task.
    :param output_uri: where the model writes its own output; copied into the manifest.
    :param last_status: the status the task saw before deferring (only later changes are logged).
    :param clock: test hook, not serialized: wall clock in epoch seconds.
    :param sleep: test hook, not serialized: async sleep, also used for the hook's retry waits.
    """

    def __init__(
        self,
        *,
        request_id: str,
        baseten_conn_id: str = "baseten_default",
        model_id: str | None = None,
        chain_id: str | None = None,
        environment: str = "production",
        deployment_id: str | None = None,
        regional: bool = False,
        poll_interval: float = 30.0,
        deadline: float | None = None,
        fail_on_webhook_failure: bool = True,
        started_at: float | None = None,
        cancel_on_kill: bool = True,
        output_uri: str | None = None,
        last_status: str | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self.request_id = request_id
        self.baseten_conn_id = baseten_conn_id
        self.model_id = model_id
        self.chain_id = chain_id
        self.environment = environment
        self.deployment_id = deployment_id
        self.regional = regional
        self.poll_interval = float(poll_interval)
        self.deadline = None if deadline is None else float(deadline)
        self.fail_on_webhook_failure = fail_on_webhook_failure
        self._clock = clock or time.time
        self._sleep = sleep or asyncio.sleep
        self._hook_clock = clock  # an injected clock also runs the hook's poll budget (tests)
        self.started_at = float(started_at) if started_at is not None else self._clock()
        self.cancel_on_kill = cancel_on_kill
        self.output_uri = output_uri
        self.last_status = last_status
        self._hook: BasetenHook | None = None

    @classmethod
    def for_watch(
        cls, watch: AsyncRequestWatch, *, baseten_conn_id: str, cancel_on_kill: bool = True
    ) -> BasetenAsyncRequestTrigger:
        """The trigger that continues ``watch`` (a wait the operator or sensor started) in the triggerer."""
        from airflow_provider_baseten.hooks.async_requests import TRIGGER_FIELDS

        return cls(
            request_id=watch.request_id,
            baseten_conn_id=baseten_conn_id,
            cancel_on_kill=cancel_on_kill,
            **watch.target.to_kwargs(),
            **{name: getattr(watch, name) for name in TRIGGER_FIELDS},
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_provider_baseten.triggers.baseten.BasetenAsyncRequestTrigger",
            {
                "request_id": self.request_id,
                **self._address_kwargs(),
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "fail_on_webhook_failure": self.fail_on_webhook_failure,
                "started_at": self.started_at,
                "cancel_on_kill": self.cancel_on_kill,
                "output_uri": self.output_uri,
                "last_status": self.last_status,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_baseten.hooks.async_requests import (
            TRIGGER_FIELDS,
            AsyncRequestWatch,
            make_event,
            wait_async,
        )

        try:
            target = self._target()
        except Exception as err:
            # Kwargs written by another version, or edited: report it instead of failing the triggerer loop.
            yield TriggerEvent(
                make_event(
                    "error",
                    f"Invalid trigger arguments for async request {self.request_id}: {err}",
                    {"request_id": self.request_id, "status": self.last_status, "errors": []},
                )
            )
            return
        watch = AsyncRequestWatch(
            target=target,
            request_id=self.request_id,
            log=self.log,
            **{name: getattr(self, name) for name in TRIGGER_FIELDS},
        )
        # Debug only: the task logged this wait as it deferred, and the triggerer logs the trigger's start; one line
        # fewer per trigger matters: log lines were a third of a polling trigger's CPU (benchmarks/README.md, fan-out).
        self.log.debug("Waiting for %s.", watch.describe(self._clock()))
        event = await wait_async(self._get_hook(), watch, sleep=self._sleep, clock=self._clock)
        yield TriggerEvent(event)

    async def on_kill(self) -> None:
        """Cancel the request when a user kills the deferred task (Airflow 3.3+; older versions never call this).

        Baseten cancels only ``QUEUED`` requests: ``canceled: false`` (already running) is logged as a warning.
        Never called on a triggerer restart, a move to another triggerer or a timeout.
        """
        if not self.cancel_on_kill:
            self.log.info("Task killed; leaving async request %s running (cancel_on_kill=False).", self.request_id)
            return
        from airflow_provider_baseten.exceptions import BasetenNotFoundError
        from airflow_provider_baseten.hooks.async_requests import log_cancel_result

        self.log.info("Task killed by a user: canceling async request %s.", self.request_id)
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT_S):
                response = await self._get_hook().acancel_async_request(self._target(), self.request_id)
        except BasetenNotFoundError:
            self.log.warning("Async request %s is no longer known to Baseten; nothing to cancel.", self.request_id)
        except Exception as err:
            self.log.warning("Could not cancel async request %s: %s: %s", self.request_id, type(err).__name__, err)
        else:
            log_cancel_result(self.log, self.request_id, response)

    async def cleanup(self) -> None:
        """Release local resources only: the shared client stays open for the other triggers, the request runs on."""
        self._hook = None

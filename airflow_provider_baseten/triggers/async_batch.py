"""``BasetenAsyncBatchTrigger``: one trigger waits on every request of an async batch, reading them from its manifest.

Which requests are polled each round (the rule that keeps thousands of waits inside a 20 req/s status limit):

1. ``IN_PROGRESS`` requests are polled every round: they may finish at any moment.
2. ``QUEUED`` requests are polled oldest first (the order they were accepted), a few at a time, and the round stops
   at the first chunk holding one that is still ``QUEUED``: Baseten starts a deployment's requests of one priority
   in arrival order, so while an earlier request of this batch waits, a later one (same priority, submitted after
   it, expiring no sooner) cannot have started, let alone finished.
3. The deployment's ``async_queue_status`` is read once a round (shared by every trigger of the triggerer): when it
   reports nothing queued, rule 2's stop is lifted, since every request of the batch has left the queue.
4. Every ``FULL_SWEEP_S`` every request is polled, whatever rules 2 and 3 say: requests canceled from outside or
   expired out of order are then seen within that time.

Every poll takes a token of the triggerer's shared status budget (``hooks.ratelimit``), so this trigger and the
single-request triggers of the same key share Baseten's limit. Status changes go to the manifest as one new part
per round; the trigger yields exactly one event: ``done`` (every request terminal), ``capacity`` (enough requests
finished that the task should submit more: only the worker submits), ``timeout`` or ``error``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from airflow_provider_baseten.hooks.addressing import Target
    from airflow_provider_baseten.hooks.baseten import BasetenHook
    from airflow_provider_baseten.operators._async_manifest import Entry, Manifest

#: Events this trigger yields; anything else fails the task.
BATCH_EVENT_STATUSES = frozenset({"done", "capacity", "timeout", "error"})
#: Seconds between rounds that poll every in-flight request (rule 4).
FULL_SWEEP_S = 600.0
#: Polls in flight at once within a round (the status budget paces them anyway).
POLL_CONCURRENCY = 16
#: ``on_kill`` is bounded by the triggerer (``[triggerer] on_kill_timeout``, 30 s); cancels get less than that.
CANCEL_TIMEOUT_S = 20.0
#: Seconds between progress lines.
PROGRESS_EVERY_S = 60.0


def batch_event(
    status: str, manifest: Manifest, total: int, message: str, deadline: float | None = None
) -> dict[str, Any]:
    return {
        "status": status,
        "manifest_uri": manifest.uri,
        "counts": manifest.counts(total),
        "message": message,
        "deadline": deadline,
    }


class BatchWatcher:
    """The waiting loop over a batch's in-flight requests (used by the trigger and by ``deferrable=False``)."""

    def __init__(
        self,
        hook: BasetenHook,
        target: Target,
        manifest: Manifest,
        *,
        total: int,
        poll_interval: float,
        deadline: float | None,
        refill_below: int | None,
        log: Any,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        error_budget: float | None = None,
    ) -> None:
        from airflow_provider_baseten.hooks.async_requests import DEFAULT_ERROR_BUDGET_S

        self.hook, self.target, self.manifest = hook, target, manifest
        self.total = total
        self.poll_interval = poll_interval
        self.deadline = deadline
        self.refill_below = refill_below
        self.log = log
        self.clock, self.sleep = clock, sleep
        self.error_budget = DEFAULT_ERROR_BUDGET_S if error_budget is None else error_budget
        self.polls = 0
        self._chunk = 4
        self._last_sweep = clock()
        self._last_progress = clock()
        self._failing_since: float | None = None

    async def run(self) -> dict[str, Any]:
        """Rounds until every request is terminal, capacity frees up, the deadline passes or polls keep failing."""
        while True:
            now = self.clock()
            if self.deadline is not None and now >= self.deadline:
                return self._event("timeout", "The batch's deadline passed before every request finished.")
            in_flight = self.manifest.in_flight()
            if not in_flight:
                return self._event("done", "Every submitted request of the batch has finished.")
            if self.refill_below is not None and len(in_flight) <= self.refill_below:
                return self._event("capacity", f"{len(in_flight)} requests in flight: room to submit more.")
            delay = self.poll_interval * (0.75 + 0.5 * _random())
            if self.deadline is not None:
                delay = min(delay, max(0.0, self.deadline - now))
            await self.sleep(delay)
            error = await self.round(self.manifest.in_flight())
            if error is not None:
                return self._event("error", error)

    def _event(self, status: str, message: str) -> dict[str, Any]:
        return batch_event(status, self.manifest, self.total, message, self.deadline)

    async def round(self, in_flight: list[Entry]) -> str | None:
        """Poll what rules 1-4 select, record the changes as one part; an error message ends the wait."""
        from airflow_provider_baseten.hooks.models import AsyncRequestStatus

        records: list[dict[str, Any]] = []
        failures: list[BaseException] = []
        polled = 0
        now = self.clock()
        sweep = now - self._last_sweep >= FULL_SWEEP_S
        running = [entry for entry in in_flight if entry.status == AsyncRequestStatus.IN_PROGRESS]
        queued = [entry for entry in in_flight if entry.status != AsyncRequestStatus.IN_PROGRESS]
        if sweep:
            self._last_sweep = now
            running, queued = in_flight, []
        elif queued and await self._queue_empty():
            running, queued = running + queued, []
        polled += await self._poll(running, records, failures)
        started = 0
        while queued:
            chunk, queued = queued[: self._chunk], queued[self._chunk :]
            before = len(records)
            polled += await self._poll(chunk, records, failures)
            left = [r for r in records[before:] if r.get("status") != AsyncRequestStatus.QUEUED]
            started += len(left)
            if len(left) < len(chunk):
                break  # rule 2: one of this chunk still waits, so the later ones cannot have started
        self._chunk = max(4, min(64, started + 1))
        changes = [record for record in records if record.pop("_changed", True)]
        if changes:
            await asyncio.to_thread(self.manifest.write, changes)
            await asyncio.to_thread(self.manifest.write_index, target=self.target.to_kwargs(), total=self.total)
        self._progress()
        return self._judge(failures, polled)

    async def _queue_empty(self) -> bool:
        try:
            queue = await self.hook.aget_async_queue_status(
                self.target, max_age=self.poll_interval / 2, clock=self.clock
            )
        except Exception as err:
            self.log.debug("No queue depth for %s: %s", self.target.describe(), err)
            return False
        return queue.num_queued_requests == 0

    async def _poll(self, entries: list[Entry], records: list[dict[str, Any]], failures: list[BaseException]) -> int:
        from airflow_provider_baseten.exceptions import BasetenNotFoundError
        from airflow_provider_baseten.operators._async_manifest import LOST

        semaphore = asyncio.Semaphore(POLL_CONCURRENCY)

        async def one(entry: Entry) -> None:
            assert entry.request_id is not None
            async with semaphore:
                try:
                    state = await self.hook.aget_async_request(self.target, entry.request_id)
                except BasetenNotFoundError:
                    records.append(_status_record(entry, LOST, None, []))
                    return
                except Exception as err:
                    failures.append(err)
                    return
            errors = [error.model_dump(mode="json") for error in state.errors]
            record = _status_record(entry, state.status, state.status_at, errors)
            record["_changed"] = state.status != entry.status
            records.append(record)

        await asyncio.gather(*(one(entry) for entry in entries))
        self.polls += len(entries)
        return len(entries)

    def _judge(self, failures: list[BaseException], polled: int) -> str | None:
        from airflow_provider_baseten.hooks.retries import is_retryable

        if not failures:
            self._failing_since = None
            return None
        for err in failures:
            if not is_retryable(err, idempotent=True):
                return f"Could not read the status of the batch's requests: {type(err).__name__}: {err}"
        now = self.clock()
        if len(failures) < polled:
            self._failing_since = None
        elif self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since >= self.error_budget:
            err = failures[-1]
            return (
                f"Gave up reading the status of the batch's requests after {now - self._failing_since:.0f} s of "
                f"failing polls ({type(err).__name__}: {err}). The requests may still run; a task retry waits on "
                "them again from the manifest."
            )
        self.log.warning("%d status reads failed this round (%s); retrying.", len(failures), failures[-1])
        return None

    def _progress(self) -> None:
        now = self.clock()
        if now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            self.log.info("Async batch %s: %s", self.manifest.uri, self.manifest.counts(self.total))


def _random() -> float:
    import random

    return random.random()


def _status_record(entry: Entry, status: str, status_at: str | None, errors: list[Any]) -> dict[str, Any]:
    return {
        "event": "status",
        "index": entry.index,
        "attempt": entry.attempt,
        "request_id": entry.request_id,
        "status": status,
        "status_at": status_at,
        "errors": errors,
    }


async def acancel_queued(hook: BasetenHook, target: Target, manifest: Manifest, log: Any) -> int:
    """Cancel every request the manifest last saw ``QUEUED`` (inside the status budget); record each outcome."""
    from airflow_provider_baseten.hooks.models import AsyncRequestStatus
    from airflow_provider_baseten.operators._async_manifest import cancel_record

    queued = [entry for entry in manifest.in_flight() if entry.status == AsyncRequestStatus.QUEUED]
    records: list[dict[str, Any]] = []
    try:
        for entry in queued:
            assert entry.request_id is not None
            try:
                response = await hook.acancel_async_request(target, entry.request_id)
            except Exception as err:
                records.append(cancel_record(entry, err))
            else:
                records.append(cancel_record(entry, response))
    finally:
        await asyncio.to_thread(manifest.write, records)
    canceled = sum(1 for record in records if record["canceled"])
    log.info("Canceled %d of %d queued requests of the batch.", canceled, len(queued))
    return canceled


class BasetenAsyncBatchTrigger(BaseTrigger):
    """Wait in the triggerer for every request of an async batch; the request ids live in the manifest, not here.

    All keyword arguments are JSON primitives; new ones are optional. The trigger only reads Baseten (and writes
    status changes to the manifest); it never submits.

    :param manifest_uri: the batch's manifest (a local path or any ``ObjectStoragePath`` URI).
    :param total: the number of inputs of the batch.
    :param baseten_conn_id: the ``baseten`` connection (resolved asynchronously).
    :param model_id: the model the requests went to (or ``chain_id``).
    :param chain_id: the chain the requests went to.
    :param environment: the environment they went to.
    :param deployment_id: the pinned deployment, if any.
    :param regional: whether they went to a regional host.
    :param poll_interval: seconds between rounds (jittered by +/-25%).
    :param deadline: absolute wall-clock deadline in epoch seconds; a ``timeout`` event once it passes.
    :param refill_below: yield ``capacity`` once this few requests are in flight (``None``: wait for all).
    :param cancel_on_kill: cancel the queued requests in :meth:`on_kill` (Airflow 3.3+) when a user kills the task.
    :param clock: test hook, not serialized. :param sleep: test hook, not serialized.
    """

    def __init__(
        self,
        *,
        manifest_uri: str,
        total: int,
        baseten_conn_id: str = "baseten_default",
        model_id: str | None = None,
        chain_id: str | None = None,
        environment: str = "production",
        deployment_id: str | None = None,
        regional: bool = False,
        poll_interval: float = 30.0,
        deadline: float | None = None,
        refill_below: int | None = None,
        cancel_on_kill: bool = True,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self.manifest_uri = manifest_uri
        self.total = int(total)
        self.baseten_conn_id = baseten_conn_id
        self.model_id = model_id
        self.chain_id = chain_id
        self.environment = environment
        self.deployment_id = deployment_id
        self.regional = regional
        self.poll_interval = float(poll_interval)
        self.deadline = None if deadline is None else float(deadline)
        self.refill_below = None if refill_below is None else int(refill_below)
        self.cancel_on_kill = cancel_on_kill
        self._clock = clock or time.time
        self._sleep = sleep or asyncio.sleep
        self._hook_clock = clock
        self._hook: BasetenHook | None = None
        self._manifest: Manifest | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_provider_baseten.triggers.baseten.BasetenAsyncBatchTrigger",
            {
                "manifest_uri": self.manifest_uri,
                "total": self.total,
                "baseten_conn_id": self.baseten_conn_id,
                "model_id": self.model_id,
                "chain_id": self.chain_id,
                "environment": self.environment,
                "deployment_id": self.deployment_id,
                "regional": self.regional,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "refill_below": self.refill_below,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    def _target(self) -> Target:
        from airflow_provider_baseten.hooks.addressing import Target

        return Target.of(
            model_id=self.model_id,
            chain_id=self.chain_id,
            environment=self.environment,
            deployment_id=self.deployment_id,
            regional=self.regional,
        )

    def _get_hook(self) -> BasetenHook:
        if self._hook is None:
            from airflow_provider_baseten.hooks.baseten import BasetenHook

            self._hook = BasetenHook(
                self.baseten_conn_id, customer_request_id="", async_sleep=self._sleep, clock=self._hook_clock
            )
        return self._hook

    async def _load(self) -> Manifest:
        from airflow_provider_baseten.operators._async_manifest import Manifest

        if self._manifest is None:
            self._manifest = await asyncio.to_thread(lambda: Manifest(self.manifest_uri).load())
        return self._manifest

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            target = self._target()
            manifest = await self._load()
        except Exception as err:
            # Edited kwargs, or a manifest that cannot be read: report it instead of failing the triggerer loop.
            yield TriggerEvent(
                {
                    "status": "error",
                    "manifest_uri": self.manifest_uri,
                    "counts": {},
                    "deadline": self.deadline,
                    "message": f"Cannot wait on the async batch at {self.manifest_uri}: {type(err).__name__}: {err}",
                }
            )
            return
        self.log.info(
            "Waiting for %d requests of the async batch %s on %s.",
            len(manifest.in_flight()),
            self.manifest_uri,
            target.describe(),
        )
        watcher = BatchWatcher(
            self._get_hook(),
            target,
            manifest,
            total=self.total,
            poll_interval=self.poll_interval,
            deadline=self.deadline,
            refill_below=self.refill_below,
            log=self.log,
            clock=self._clock,
            sleep=self._sleep,
        )
        yield TriggerEvent(await watcher.run())

    async def on_kill(self) -> None:
        """Cancel the batch's queued requests when a user kills the deferred task (Airflow 3.3+), within a bound.

        Requests already running finish (Baseten cancels only ``QUEUED`` ones); each outcome goes to the manifest.
        """
        if not self.cancel_on_kill:
            self.log.info("Task killed; leaving the batch's requests running (cancel_on_kill=False).")
            return
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT_S):
                await acancel_queued(self._get_hook(), self._target(), await self._load(), self.log)
        except Exception as err:
            self.log.warning("Could not cancel every queued request of the batch: %s: %s", type(err).__name__, err)

    async def cleanup(self) -> None:
        """Release local resources only: the shared client stays open, the requests run on."""
        self._hook = None

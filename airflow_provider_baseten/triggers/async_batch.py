"""``BasetenAsyncBatchTrigger``: one trigger waits on every request of an async batch, reading them from its manifest.

Which requests are read, and when (the rule that keeps thousands of waits inside a 20 req/s status limit while
seeing each finish as soon as the budget allows):

1. ``IN_PROGRESS`` requests may finish at any moment: each is due again ``poll_interval`` after its last read.
   When some are due, the deployment's ``async_queue_status`` (rule 3's read) says how many of the batch finished
   at least: ``pending - (queued + in progress)`` when the deployment holds no more than the batch's pending
   requests. Then only that many of the oldest running ones are read (a FIFO queue of equal work finishes in start
   order), and a due request is read anyway once ``RECHECK_INTERVALS`` intervals passed since its last read. When
   one of those reads finds a request still running (the counts and the reads disagree), every running request is
   read at once and the counts are not used for ``RECHECK_INTERVALS`` intervals; when the deployment holds more
   than the batch (other callers' requests), the counts cannot tell, and every due request is read.
2. ``QUEUED`` requests are read oldest first (the order they were accepted), in chunks, continuously while the reads
   find requests that left the queue (a backlog of finished requests is read at the budget's pace, not a chunk per
   ``poll_interval``). At the first chunk holding one still ``QUEUED`` the frontier pauses ``poll_interval``:
   Baseten starts a deployment's requests of one priority in arrival order, so while an earlier request of this
   batch waits, a later one (same priority, submitted after it, expiring no sooner) cannot have started.
3. Before reading a paused frontier again, the deployment's ``async_queue_status`` is read (shared by every trigger
   of the triggerer, at most every ``poll_interval / 2``): when it reports nothing queued, every request of the
   batch left the queue, so all become due at once.
4. ``FULL_SWEEP_S`` after the last sweep ended, every request past a paused frontier is read once (a round's
   worth at a time): requests canceled from outside or expired out of order are seen within that time.

Nothing due: the trigger sleeps until the next read is (at most ``poll_interval``), so an idle batch costs a read
per running request and one at the frontier per interval.

Every poll takes a token of the triggerer's shared status budget (``hooks.ratelimit``), so this trigger and the
single-request triggers of the same key share Baseten's limit. Status changes go to the manifest as one new part
per round; the trigger yields exactly one event: ``done`` (every request terminal), ``capacity`` (enough requests
finished that the task should submit more: only the worker submits), ``timeout`` or ``error``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_baseten.triggers._addressed import AddressedTrigger
from airflow_provider_baseten.triggers._deliveries import Delivery, DeliveryListing

if TYPE_CHECKING:
    from airflow_provider_baseten.hooks.addressing import Target
    from airflow_provider_baseten.hooks.baseten import BasetenHook
    from airflow_provider_baseten.hooks.hotpath import HotSender
    from airflow_provider_baseten.hooks.models import AsyncQueueStatus
    from airflow_provider_baseten.hooks.ratelimit import AsyncTokenBucket
    from airflow_provider_baseten.operators._async_manifest import Entry, Manifest

#: Events this trigger yields; anything else fails the task.
BATCH_EVENT_STATUSES = frozenset({"done", "capacity", "timeout", "error"})
#: Seconds between rounds that poll every in-flight request (rule 4).
FULL_SWEEP_S = 600.0
#: Polls in flight at once within a round (the status budget paces them anyway).
POLL_CONCURRENCY = 16
#: Status reads per round at most; each round's changes are one manifest part, so a crash re-reads at most this many.
ROUND_READS = 256
#: Statuses after which a request may still change.
_PENDING = frozenset({"QUEUED", "IN_PROGRESS"})
#: ``on_kill`` is bounded by the triggerer (``[triggerer] on_kill_timeout``, 30 s); cancels get less than that.
CANCEL_TIMEOUT_S = 20.0
#: Seconds between progress lines.
PROGRESS_EVERY_S = 60.0
#: A running request the queue counts say need not be read is read anyway this many poll intervals after its last.
RECHECK_INTERVALS = 4


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
    """The waiting loop over a batch's in-flight requests (used by the trigger and by ``deferrable=False``).

    It keeps, from one pass over the manifest at start: the requests last seen running (a heap by next read
    time: each read at most once per ``poll_interval``), the ones last seen queued in arrival order (the FIFO
    frontier: read continuously while the reads find requests that left the queue, paused ``poll_interval`` at
    one still queued) and the sweep's cursor. A round reads what is due, at most :data:`ROUND_READS`, records the
    changes as one part, and the next round starts at once while anything is due: the budget paces the reads.
    """

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
        webhook_outputs: str | None = None,
    ) -> None:
        from airflow_provider_baseten.hooks.async_requests import DEFAULT_ERROR_BUDGET_S
        from airflow_provider_baseten.hooks.models import AsyncRequestStatus

        self.hook, self.target, self.manifest = hook, target, manifest
        self.total = total
        self.poll_interval = poll_interval
        self.deadline = deadline
        self.refill_below = refill_below
        self.log = log
        self.clock, self.sleep = clock, sleep
        self.error_budget = DEFAULT_ERROR_BUDGET_S if error_budget is None else error_budget
        self.polls = 0
        self._sender: HotSender | None = None
        self._budget: AsyncTokenBucket | None = None
        self._chunk = 4
        now = clock()
        self._last_progress = now
        self._failing_since: float | None = None
        in_flight = manifest.in_flight()
        self._pending = len(in_flight)
        #: (due, sequence, entry, last read) of the requests last seen running (or out of the queue); an item whose
        #: sequence is not ``_live[index]`` was replaced by a later push.
        self._running: list[tuple[float, int, Entry, float]] = []
        self._live: dict[int, int] = {}
        self._seq = 0
        #: The same requests in the order they left the queue (about their start order): the oldest are read first.
        self._started: list[Entry] = []
        self._started_head = 0
        self._distrust_until = -math.inf
        for entry in in_flight:
            if entry.status == AsyncRequestStatus.IN_PROGRESS:
                self._start(entry, now, -math.inf)  # seen running before this watcher: read once, whatever
        #: Requests last seen queued, oldest first; ``_head`` is the frontier (earlier ones left the queue).
        self._queued = [entry for entry in in_flight if entry.status != AsyncRequestStatus.IN_PROGRESS]
        self._head = 0
        self._frontier_due = now
        self._frontier_stuck = False
        self._sweep_due = now + FULL_SWEEP_S
        self._sweep_at: int | None = None
        #: The webhook receiver's deliveries (rule 0), the pending requests by id, and when the rules last ran.
        self._outputs = DeliveryListing(webhook_outputs) if webhook_outputs else None
        self._by_id = {e.request_id: e for e in in_flight if e.request_id is not None} if self._outputs else {}
        self._unusable: set[str] = set()
        self._outputs_due = now
        self._gated = False
        self._reads_ran = now

    async def run(self) -> dict[str, Any]:
        """Rounds until every request is terminal, capacity frees up, the deadline passes or polls keep failing."""
        while True:
            now = self.clock()
            if self.deadline is not None and now >= self.deadline:
                return self._event("timeout", "The batch's deadline passed before every request finished.")
            if self._pending <= 0:
                return self._event("done", "Every submitted request of the batch has finished.")
            if self.refill_below is not None and self._pending <= self.refill_below:
                return self._event("capacity", f"{self._pending} requests in flight: room to submit more.")
            wait = self._next_due() - now
            if wait > 0:
                if self.deadline is not None:
                    wait = min(wait, max(0.0, self.deadline - now))
                await self.sleep(wait)
                continue
            error = await self.round()
            if error is not None:
                return self._event("error", error)

    def _event(self, status: str, message: str) -> dict[str, Any]:
        return batch_event(status, self.manifest, self.total, message, self.deadline)

    def _interval(self) -> float:
        return self.poll_interval * (0.75 + 0.5 * _random())

    def _push(self, entry: Entry, due: float, read_at: float) -> None:
        self._seq += 1
        self._live[entry.index] = self._seq
        heapq.heappush(self._running, (due, self._seq, entry, read_at))

    def _start(self, entry: Entry, due: float, read_at: float) -> None:
        """A request that left the queue (last read at ``read_at``): read at ``due``, or among the oldest."""
        self._started.append(entry)
        self._push(entry, due, read_at)

    def _skip_left(self) -> None:
        """Move the frontier past requests that left the queue (read by the sweep or an earlier chunk)."""
        from airflow_provider_baseten.hooks.models import AsyncRequestStatus

        queued, head = self._queued, self._head
        while head < len(queued) and queued[head].status != AsyncRequestStatus.QUEUED:
            head += 1
        if head > 1024 and head * 2 > len(queued):  # compact now and then: O(1) per request overall
            del queued[:head]
            if self._sweep_at is not None:
                self._sweep_at = max(0, self._sweep_at - head)
            head = 0
        self._head = head

    def _next_due(self) -> float:
        """When the next read is worth making: the earliest running request's, the frontier's or the sweep's
        (only the next listing's while the deliveries gate the reads)."""
        if self._outputs is not None and self._gated:
            return self._outputs_due
        self._skip_left()
        due = self._running[0][0] if self._running else float("inf")
        if self._head < len(self._queued):
            due = min(due, self._frontier_due, self._sweep_due)
        return due if self._outputs is None else min(due, self._outputs_due)

    async def round(self) -> str | None:
        """Read what is due (rules 1-4), at most :data:`ROUND_READS`; record the changes as one part.

        Returns an error message that ends the wait, else ``None``.
        """
        failures: list[BaseException] = []
        polled = 0
        now = self.clock()
        # Rule 0: deliveries end requests without a read; while the batch still has work on the deployment, only
        # the listing runs (and rules 1-4 once every FULL_SWEEP_S): a lost webhook is read once the queue is done.
        if self._outputs is not None and self._outputs_due <= now:
            # The counts before the listing: a request that left the deployment before the counts were read sent
            # its webhook before that, so the listing holds its delivery (listing first, the last ones to finish
            # could land in between and be read instead).
            busy = now - self._reads_ran < FULL_SWEEP_S and await self._batch_busy()
            polled += await self._collect(failures)
            self._outputs_due = now + self._interval()
            self._gated = busy and self._pending > 0
            if self._gated:
                return await self._end_round(failures, polled)
            self._reads_ran = now
        # Rule 1: running requests whose read is due (as many as the queue counts say finished, if they can tell).
        if self._running and self._running[0][0] <= now:
            polled += await self._read_running(now, failures)
        # Rule 2: the frontier, oldest first, in chunks, while the reads find requests that left the queue.
        self._skip_left()
        if self._head < len(self._queued) and self._frontier_due <= now and polled < ROUND_READS:
            if self._frontier_stuck and await self._queue_empty():
                self._lift()  # rule 3
            else:
                polled += await self._frontier(ROUND_READS - polled, failures)
        # Rule 4: the sweep, past a paused frontier (a flowing one reads them anyway).
        if self._head < len(self._queued) and self._sweep_due <= now and self._frontier_stuck and polled < ROUND_READS:
            polled += await self._sweep(ROUND_READS - polled, failures)
        return await self._end_round(failures, polled)

    async def _end_round(self, failures: list[BaseException], polled: int) -> str | None:
        if self.manifest.pending_records():
            await asyncio.to_thread(self._write)
        self._progress()
        return self._judge(failures, polled)

    async def _collect(self, failures: list[BaseException]) -> int:
        """Rule 0: record the new deliveries of pending requests; a malformed one is read instead. Reads made."""
        assert self._outputs is not None
        outputs = self._outputs
        by_id, unusable = self._by_id, self._unusable

        def waited_on(request_id: str) -> bool:
            entry = by_id.get(request_id)
            return entry is not None and entry.in_flight and request_id not in unusable

        try:
            fresh = await asyncio.to_thread(outputs.delivered, waited_on)
        except Exception as err:
            self.log.warning("Cannot list the webhook outputs at %s: %s: %s", outputs.uri, type(err).__name__, err)
            return 0
        entries = [by_id[rid] for rid in fresh]
        if not entries:
            return 0

        def read_all() -> list[Delivery | Exception]:
            results: list[Delivery | Exception] = []
            for entry in entries:
                assert entry.request_id is not None
                try:
                    results.append(outputs.read(entry.request_id))
                except Exception as err:
                    results.append(err)
            return results

        unreadable: list[Entry] = []
        for entry, delivery in zip(entries, await asyncio.to_thread(read_all), strict=True):
            if isinstance(delivery, Exception):
                self.log.warning(
                    "Cannot use the webhook delivery of %s (%s); reading its status instead.",
                    entry.request_id,
                    delivery,
                )
                unreadable.append(entry)
                unusable.add(str(entry.request_id))  # not read (nor warned about) again: its status is read instead
                continue
            record = _status_record(entry, delivery.status, None, delivery.errors)
            record["output_uri"] = delivery.uri
            self._record(entry, record)
        if unreadable:
            await self._poll(unreadable, failures)
        return len(unreadable)

    async def _batch_busy(self) -> bool:
        """Whether the deployment's queue counts show requests queued or in progress (the batch's, as far as they
        can tell); ``False`` when there are no counts, so the status reads take over."""
        queue = await self._queue_counts()
        return queue is not None and queue.num_queued_requests + queue.num_in_progress_requests > 0

    async def _read_running(self, now: float, failures: list[BaseException]) -> int:
        """Rule 1: read the due running requests, or only as many of the oldest as the queue counts say finished."""
        recheck = RECHECK_INTERVALS * self.poll_interval
        reads: list[Entry] = []  # due, and not read for ``recheck`` (or never by this watcher): read whatever
        kept: list[tuple[Entry, float]] = []  # due: read if the counts cannot tell
        while self._running and self._running[0][0] <= now and len(reads) + len(kept) < ROUND_READS:
            _, seq, entry, read_at = heapq.heappop(self._running)
            if self._live.get(entry.index) != seq or not entry.in_flight:
                continue  # replaced by a later push, or finished
            if now - read_at >= recheck:
                reads.append(entry)
            else:
                kept.append((entry, read_at))
        finished = (await self._finished_at_least() if now >= self._distrust_until else None) if kept else 0
        if finished is None:
            reads += [entry for entry, _ in kept]
            kept = []
        chosen = {entry.index for entry in reads}
        guided = self._oldest_running(min(finished, ROUND_READS - len(reads))) if finished else []
        reads += [entry for entry in guided if entry.index not in chosen]
        results = await self._poll(reads, failures) if reads else []
        after = self.clock()
        for entry, status in zip(reads, results, strict=True):
            if status is None or status in _PENDING:
                self._push(entry, after + self._interval(), after)
        statuses = dict(zip((entry.index for entry in reads), results, strict=True))
        for entry, read_at in kept:
            if entry.index not in statuses:
                self._push(entry, now + self._interval(), read_at)
        if any(statuses[entry.index] in _PENDING for entry in guided):
            # The counts and the reads disagree (not FIFO, or requests gone from the queue unseen): read every
            # running one at once, and go by poll intervals alone for a while.
            self._read_all_running(after)
            self._distrust_until = after + recheck
        return len(reads)

    async def _finished_at_least(self) -> int | None:
        """How many of the batch's pending requests finished at least, by the deployment's queue counts; ``None``
        when the counts cannot tell (no answer, or the deployment holds more requests than the batch has pending).

        Every pending request of the batch is queued or in progress on the deployment, so the counts hold them
        all: the rest of what the batch thinks pending has finished (a count read earlier only says fewer).
        """
        queue = await self._queue_counts()
        if queue is None:
            return None
        held = queue.num_queued_requests + queue.num_in_progress_requests
        return None if held > self._pending else self._pending - held

    def _oldest_running(self, count: int) -> list[Entry]:
        """Up to ``count`` pending requests that left the queue, oldest first."""
        started, head = self._started, self._started_head
        while head < len(started) and not started[head].in_flight:
            head += 1
        if head > 1024 and head * 2 > len(started):  # compact now and then: O(1) per request overall
            del started[:head]
            head = 0
        self._started_head = head
        oldest: list[Entry] = []
        for entry in itertools.islice(started, head, None):
            if len(oldest) >= count:
                break
            if entry.in_flight:
                oldest.append(entry)
        return oldest

    def _read_all_running(self, now: float) -> None:
        """Every pending request that left the queue is due now, past the recheck (read whatever the counts say)."""
        for entry in itertools.islice(self._started, self._started_head, None):
            if entry.in_flight:
                self._push(entry, now, -math.inf)

    async def _frontier(self, limit: int, failures: list[BaseException]) -> int:
        from airflow_provider_baseten.hooks.models import AsyncRequestStatus

        polled, started = 0, 0
        self._frontier_stuck = False
        while polled < limit:
            self._skip_left()
            end = self._head + min(self._chunk, limit - polled)
            chunk = [entry for entry in self._queued[self._head : end] if entry.status == AsyncRequestStatus.QUEUED]
            if not chunk:
                break
            results = await self._poll(chunk, failures)
            polled += len(chunk)
            after = self.clock()
            left = 0
            for entry, status in zip(chunk, results, strict=True):
                if status is not None and status != AsyncRequestStatus.QUEUED:
                    left += 1
                    if status in _PENDING:
                        self._start(entry, after + self._interval(), after)
            started += left
            if left < len(chunk):
                # Rule 2: one of this chunk still waits (or could not be read): later ones cannot have started.
                self._frontier_stuck = True
                self._frontier_due = after + self._interval()
                break
            self._chunk = min(64, self._chunk * 2)
        if self._frontier_stuck:
            self._chunk = max(4, min(64, started + 1))
        return polled

    async def _sweep(self, limit: int, failures: list[BaseException]) -> int:
        """Rule 4: read every queued request past the frontier once, a round's worth at a time."""
        from airflow_provider_baseten.hooks.models import AsyncRequestStatus

        if self._sweep_at is None:
            self._sweep_at = self._head + 1
        start = max(self._sweep_at, self._head + 1)
        chunk = [entry for entry in self._queued[start : start + limit] if entry.status == AsyncRequestStatus.QUEUED]
        self._sweep_at = start + limit
        polled = 0
        if chunk:
            results = await self._poll(chunk, failures)
            polled = len(chunk)
            after = self.clock()
            for entry, status in zip(chunk, results, strict=True):
                if status == AsyncRequestStatus.IN_PROGRESS:
                    self._start(entry, after + self._interval(), after)
        if self._sweep_at >= len(self._queued):
            # Due again FULL_SWEEP_S after this sweep ended: a sweep longer than that is not followed by another.
            self._sweep_at = None
            self._sweep_due = self.clock() + FULL_SWEEP_S
        return polled

    def _lift(self) -> None:
        """Rule 3: the deployment queues nothing, so every request of the batch left the queue: all are due."""
        from airflow_provider_baseten.hooks.models import AsyncRequestStatus

        now = self.clock()
        for entry in self._queued[self._head :]:
            if entry.status == AsyncRequestStatus.QUEUED:  # the others are in the running heap already
                self._start(entry, now, -math.inf)
        self._queued, self._head, self._sweep_at = [], 0, None
        self._frontier_stuck = False

    def _write(self) -> None:
        self.manifest.flush()
        self.manifest.write_index(target=self.target.to_kwargs(), total=self.total)

    async def _queue_empty(self) -> bool:
        queue = await self._queue_counts()
        return queue is not None and queue.num_queued_requests == 0

    async def _queue_counts(self) -> AsyncQueueStatus | None:
        """The deployment's queue counts (one read per ``poll_interval / 2`` for every trigger of the loop)."""
        try:
            return await self.hook.aget_async_queue_status(
                self.target, max_age=self.poll_interval / 2, clock=self.clock
            )
        except Exception as err:
            self.log.debug("No queue depth for %s: %s", self.target.describe(), err)
            return None

    async def _hot(self) -> tuple[HotSender, AsyncTokenBucket]:
        """The triggerer's shared hot-path sender and status budget for this hook's connection (built once)."""
        if self._sender is None:
            from airflow_provider_baseten.hooks.hotpath import HotSender, status_budget

            self._sender = await HotSender.shared(self.hook)
            self._budget = status_budget(self.hook)
        assert self._budget is not None
        return self._sender, self._budget

    async def _poll(self, entries: list[Entry], failures: list[BaseException]) -> list[str | None]:
        """Read ``entries`` (each read takes a budget token); record what changed; their statuses (``None``: failed).

        Reads go in groups: a group waits once for its tokens (``acquire_many``, at most the budget's burst) and
        its reads run together, so they share the event loop's wake-ups instead of one paced read after another
        (a wake-up costs several times a read's parsing). Up to :data:`POLL_CONCURRENCY` reads are in flight.
        """
        from airflow_provider_baseten.exceptions import BasetenNotFoundError
        from airflow_provider_baseten.hooks._stepper import time_left
        from airflow_provider_baseten.operators._async_manifest import LOST

        target = self.target
        sender, budget = await self._hot()
        left = time_left(self.deadline, self.clock())  # no read, and no wait for tokens, runs past the deadline
        until = None if left is None else asyncio.get_running_loop().time() + left
        size = group_size(budget.burst)
        results: list[str | None] = [None] * len(entries)
        ended: list[tuple[Entry, dict[str, Any]]] = []  # with webhook outputs: recorded with their delivery's URI

        async def one(position: int, entry: Entry, granted: float) -> None:
            assert entry.request_id is not None
            try:
                async with asyncio.timeout_at(until):
                    state = await sender.get_async_request(target, entry.request_id, budget, granted=granted)
            except BasetenNotFoundError:
                status, status_at, errors = LOST, None, []
            except TimeoutError:  # the deadline cut the read short: the next turn reports the timeout
                return
            except Exception as err:
                failures.append(err)
                return
            else:
                status, status_at = str(state.status), state.status_at
                errors = [error.model_dump(mode="json") for error in state.errors] if state.errors else []
            if status != entry.status:
                record = _status_record(entry, status, status_at, errors)
                if self._outputs is not None and status not in _PENDING:
                    ended.append((entry, record))
                else:
                    self._record(entry, record)
            results[position] = status

        groups = [range(start, min(start + size, len(entries))) for start in range(0, len(entries), size)]
        queue = iter(groups)

        async def lane() -> None:
            for group in queue:  # the lanes share one iterator: each takes the next group
                try:
                    async with asyncio.timeout_at(until):
                        granted = await budget.acquire_many(len(group))
                except TimeoutError:
                    return  # the deadline passed: the rest stay unread, and the next turn reports the timeout
                await asyncio.gather(*(one(position, entries[position], granted) for position in group))

        lanes = min(len(groups), max(1, POLL_CONCURRENCY // size))
        await (lane() if lanes == 1 else asyncio.gather(*(lane() for _ in range(lanes))))
        self.polls += len(entries)
        if ended:
            await self._record_ended(ended)
        return results

    def _record(self, entry: Entry, record: dict[str, Any]) -> None:
        was_pending = entry.in_flight
        self.manifest.record(record)
        if was_pending and not entry.in_flight:
            self._pending -= 1

    async def _record_ended(self, ended: list[tuple[Entry, dict[str, Any]]]) -> None:
        """Record requests a status read found ended, each with its stored delivery's URI when there is one.

        Baseten sends the webhook before it records the end, so a request read as ended was delivered already
        unless its webhook failed: the manifest must point at the output (the webhook holds its only copy),
        whichever read saw the end first.
        """
        assert self._outputs is not None
        outputs = self._outputs

        def find() -> list[str | None]:
            uris: list[str | None] = []
            for entry, _ in ended:
                try:
                    uris.append(outputs.read(str(entry.request_id)).uri)
                except Exception as err:  # none stored (the webhook failed), or not a delivery: no URI
                    self.log.debug("No usable delivery of %s: %s", entry.request_id, err)
                    uris.append(None)
            return uris

        for (entry, record), uri in zip(ended, await asyncio.to_thread(find), strict=True):
            if uri is not None:
                record["output_uri"] = uri
            self._record(entry, record)

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


def group_size(burst: float) -> int:
    """Reads per wake-up: the budget's burst (what it may release at once anyway), within the concurrency cap."""
    return max(1, min(POLL_CONCURRENCY, int(burst)))


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


class BasetenAsyncBatchTrigger(AddressedTrigger, BaseTrigger):
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
    :param webhook_outputs: the webhook receiver's store folder (``{store}/{prefix}``): a request delivered there is
        terminal without a status read, and the manifest records the output's URI.
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
        webhook_outputs: str | None = None,
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
        self.webhook_outputs = webhook_outputs
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
                **self._address_kwargs(),
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "refill_below": self.refill_below,
                "cancel_on_kill": self.cancel_on_kill,
                **({"webhook_outputs": self.webhook_outputs} if self.webhook_outputs else {}),
            },
        )

    async def _load(self) -> Manifest:
        from airflow_provider_baseten.operators._async_manifest import Manifest

        if self._manifest is None:
            self._manifest = await asyncio.to_thread(lambda: Manifest(self.manifest_uri, keep_output_uris=False).load())
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
            webhook_outputs=self.webhook_outputs,
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

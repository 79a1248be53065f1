"""The send loop of the batch operators: workers over one iterator, stop, grace period, release, progress.

Batch predict, embeddings (and rerank or classify beside them) all run the same loop: ``max_concurrency`` worker
coroutines take units of work from one lazy iterator (never one task per input, never the whole input in memory)
and send them through one :class:`~airflow_provider_baseten.hooks.hotpath.HotSender` (one ``aiohttp`` session, one
batch-wide retry budget). Before a unit is sent its intents go to the journal (``_batch_journal``); its finished
lines are queued and written once per event-loop tick. A stop (``on_kill`` from any thread, an error every input
would hit, a failed write) stops the taking; in-flight units get ``kill_grace_period`` to finish. Whatever ends
the loop (also the cancel ``_event_loop.run_to_end`` turns an ``execution_timeout`` into), the units still in flight
are settled before it returns: written as ``model_may_have_run`` errors, or released for the next try to send.

Workers may start on a ramp (``ramp`` seconds apart) instead of all at once: the first wave then reaches the server
spread out rather than as one burst of ``max_concurrency`` connects and requests, and the answers come back spread
out too, so neither side queues a burst on every round trip. A stop during the ramp starts no further sends.

What an operator supplies is a :class:`Job`: how the next unit is taken (one input; a pack of texts), how a unit
is sent and its answer becomes lines, and what becomes of a unit still in flight when the try ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_baseten.exceptions import BasetenAPIError, BasetenConfigError, BasetenConnectionError
from airflow_provider_baseten.operators._batch_journal import Existing, LineWriter, Sink

if TYPE_CHECKING:
    from airflow_provider_baseten.hooks.baseten import BasetenHook
    from airflow_provider_baseten.hooks.hotpath import HotSender

__all__ = [
    "Encoded",
    "Host",
    "Job",
    "RunState",
    "SendLoop",
    "Unit",
    "describe_error",
    "is_fatal",
    "model_may_have_run",
    "task_prefix",
]

Line = dict[str, Any]

#: Statuses of a failed request that prove the model never ran (so re-sending on a task retry is safe); a 503
#: counts only when Baseten's error code says it refused the request (``hooks.retries.ambiguous_answer``).
_NOT_RUN_STATUSES = frozenset({401, 403, 404, 413, 429, 503, 529})
#: Errors that fail every input alike: stop the batch instead of writing one error line per input.
_FATAL_STATUSES = frozenset({401, 403, 404})
_MESSAGE_LIMIT = 500


class Unit:
    """One request's worth of work: the line so far of each input it carries (its intents) and what to send.

    ``intents``: those lines already encoded, when the job has them (else the writer encodes ``lines``).
    """

    __slots__ = ("intents", "key", "lines", "payload")

    def __init__(self, lines: list[Line], payload: Any, intents: bytes | None = None) -> None:
        self.key: int = lines[0]["index"]
        self.lines = lines
        self.payload = payload
        self.intents = intents


class Encoded:
    """The finished lines of a unit already encoded as JSONL (each input's line, none an error)."""

    __slots__ = ("count", "data")

    def __init__(self, data: bytes, count: int) -> None:
        self.data = data
        self.count = count


class Job(Protocol):
    """What differs between the operators that run the loop."""

    #: The progress line, ``%`` formatted with: phase, done, total, failed, units in flight, done by an earlier
    #: try, rate, ETA, then :meth:`progress_extra`.
    progress_format: str

    def take(self) -> tuple[Unit | None, list[Line]]:
        """The next unit (``None`` at the end) and lines of inputs met on the way that are never sent.

        Never awaits, so concurrent workers take disjoint units. ``(None, [])`` means the inputs are exhausted.
        """

    async def send(self, sender: HotSender, unit: Unit) -> list[Line] | Encoded:
        """Send ``unit`` and return one finished line per input (or all of them :class:`Encoded`); an exception is
        written as each input's error."""

    def abandoned(self, unit: Unit) -> list[Line] | None:
        """The lines of a unit still in flight when the try ends, or ``None`` to release it (sent again later)."""

    def progress_extra(self) -> tuple[Any, ...]:
        """Arguments of :attr:`progress_format` after the ETA."""


class Host(Protocol):
    """The operator running the loop: its hook, log, injected clock and sleep, and the loop's parameters."""

    max_concurrency: int
    progress_interval: float
    kill_grace_period: float
    #: Retries the batch affords per request sent (at least 10; 429/529 spend none): one
    #: :class:`~airflow_provider_baseten.hooks.retry_budget.RetryBudget` for the whole try.
    retry_budget_fraction: float
    _clock: Callable[[], float]
    _sleep: Callable[[float], Awaitable[None]]

    @property
    def hook(self) -> BasetenHook: ...

    @property
    def log(self) -> Any: ...


class RunState:
    """Counters of this try, in-flight units, and the stop request (``on_kill`` may come from another thread)."""

    def __init__(self, *, existing: Existing, total: int | None) -> None:
        self.existing = existing
        self.total = total
        self.succeeded = 0
        self.failed = 0
        #: first index: the unit in flight. After the loop: the units it released (sent again by the next try).
        self.in_flight: dict[int, Unit] = {}
        self.stop_reason: str | None = None
        self.stopped = asyncio.Event()
        self.writer: LineWriter | None = None
        self.fatal: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        if self.stop_reason:
            self.stopped.set()

    def request_stop(self, reason: str) -> None:
        if self.stop_reason:
            return
        self.stop_reason = reason
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.stopped.set)

    def count(self, line: Line) -> None:
        if "error" in line:
            self.failed += 1
        else:
            self.succeeded += 1


class SendLoop:
    """Run one :class:`Job` for ``host`` to its end (see the module docstring)."""

    #: Injectable for tests: the sleep of the start ramp (wall time, never the host's injected sleep).
    _ramp_sleep: Callable[[float], Awaitable[None]] = staticmethod(asyncio.sleep)

    def __init__(self, host: Host, job: Job, state: RunState, *, ramp: float = 0.0) -> None:
        """``ramp``: seconds between the starts of consecutive workers (worker ``i`` starts after ``i * ramp``)."""
        self.host = host
        self.job = job
        self.state = state
        self.ramp = ramp
        self.progress = Progress(host, job, state)

    async def run(self, sink: Sink, first_lines: Iterable[Line] = ()) -> None:
        """Returns when the inputs are exhausted or a stop is done; in-flight units are settled however it ends."""
        from airflow_provider_baseten.hooks.hotpath import HotSender
        from airflow_provider_baseten.hooks.retry_budget import RetryBudget

        host, state = self.host, self.state
        loop = asyncio.get_running_loop()
        state.bind(loop)
        writer = state.writer = LineWriter(
            sink, loop, host._clock, lambda err: state.request_stop(f"writing {type(err).__name__}: {err}")
        )
        for line in first_lines:
            state.count(line)
            writer.add(line)
        sender = await HotSender.open(
            host.hook,
            max_connections=host.max_concurrency,
            retry_budget=RetryBudget(host.retry_budget_fraction),
        )
        workers = [
            asyncio.create_task(self._worker(sender, writer, number * self.ramp))
            for number in range(host.max_concurrency)
        ]
        reporter = asyncio.create_task(self.report())
        stopper = asyncio.create_task(state.stopped.wait())
        all_done = asyncio.gather(*workers)
        try:
            await asyncio.wait([all_done, stopper], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
            if all_done.done():
                all_done.result()  # a bug in a worker surfaces here
            else:
                host.log.warning(
                    "Stopping: %s Waiting up to %ss for the %d requests in flight.",
                    state.stop_reason,
                    host.kill_grace_period,
                    len(state.in_flight),
                )
                await self._grace(workers)
        finally:
            for task in (reporter, stopper, *workers):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(all_done, reporter, stopper, return_exceptions=True)
            self._settle_in_flight(writer)
            writer.flush()
            if writer.syncing is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.gather(writer.syncing, return_exceptions=True)
            with contextlib.suppress(Exception):
                await sender.aclose()
        self.progress.log_now(final=True)

    async def _worker(self, sender: HotSender, writer: LineWriter, start_after: float = 0.0) -> None:
        state, job, progress = self.state, self.job, self.progress
        if start_after > 0:
            await self._ramp_sleep(start_after)
        while not state.stop_reason:
            unit, unsent = job.take()
            for line in unsent:
                state.count(line)
                writer.add(line)
            if unit is None:
                if unsent:
                    continue
                return
            if not writer.intend_many(unit.lines, unit.intents):
                return  # the intents could not be recorded: the unit is not sent (a stop is requested)
            # In flight until its lines are added: if this coroutine is cancelled or a BaseException (an
            # execution_timeout) lands here, run() settles the unit.
            state.in_flight[unit.key] = unit
            try:
                lines: list[Line] | Encoded = await job.send(sender, unit)
            except Exception as err:
                if is_fatal(err):  # the same for every input: leave them all for a retry
                    state.in_flight.pop(unit.key, None)
                    for line in unit.lines:
                        writer.release(line["index"])
                    state.fatal = state.fatal or err
                    state.request_stop(f"{type(err).__name__}: {err}")
                    return
                error = describe_error(err)
                lines = [{**line, "error": error} for line in unit.lines]
            state.in_flight.pop(unit.key, None)
            if isinstance(lines, Encoded):
                state.succeeded += lines.count
                writer.add_encoded(lines.data)
            else:
                for line in lines:
                    state.count(line)
                    writer.add(line)
            progress.maybe_log()

    async def _grace(self, workers: list[asyncio.Task[None]]) -> None:
        """After a stop: give in-flight units the grace period (the caller cancels what is left)."""
        pending = [task for task in workers if not task.done()]
        if pending and self.host.kill_grace_period > 0:
            finished = asyncio.gather(*pending, return_exceptions=True)
            grace = asyncio.ensure_future(self.host._sleep(self.host.kill_grace_period))
            await asyncio.wait([finished, grace], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
            grace.cancel()

    def _settle_in_flight(self, writer: LineWriter) -> None:
        """Units still in flight when the loop ends: written as the job says, or released (kept in ``in_flight``)."""
        state = self.state
        for key, unit in list(state.in_flight.items()):
            lines = self.job.abandoned(unit)
            if lines is None:
                for line in unit.lines:
                    writer.release(line["index"])
                continue
            for line in lines:
                state.count(line)
                writer.add(line)
            del state.in_flight[key]

    async def report(self) -> None:
        """Progress even while nothing completes (a slow model): at least every ``progress_interval``."""
        interval = max(self.host.progress_interval, 0.05)
        while True:
            await self.host._sleep(interval)
            self.progress.maybe_log()


class Progress:
    """Progress lines: done (this try and earlier ones), failed, in flight, rate and ETA, plus the job's extras."""

    def __init__(self, host: Host, job: Job, state: RunState) -> None:
        self.host = host
        self.job = job
        self.state = state
        self.clock = host._clock
        self.started = self.last = self.clock()

    def maybe_log(self) -> None:
        if self.clock() - self.last >= self.host.progress_interval:
            self.log_now()

    def log_now(self, *, final: bool = False) -> None:
        now = self.last = self.clock()
        state, existing = self.state, self.state.existing
        done_now = state.succeeded + state.failed
        rate = done_now / max(now - self.started, 1e-9)
        total = state.total
        done = done_now + existing.kept
        eta = f"{max(total - done, 0) / rate:.0f}s" if total is not None and rate > 0 else "?"
        self.host.log.info(
            self.job.progress_format,
            ("stopped" if state.stop_reason else "finished") if final else "progress",
            done,
            "?" if total is None else total,
            state.failed + existing.failed,
            len(state.in_flight),
            existing.kept,
            rate,
            eta,
            *self.job.progress_extra(),
        )


def task_prefix(context: Any, operator: Any) -> str:
    """``dag.task.run.map_index.try`` of the running task (``dag.task`` outside one): a request's
    ``x-baseten-customer-request-id`` is ``{prefix}:{first index}`` (journaled with it), so it can be found in
    Baseten's logs."""
    from airflow_provider_baseten.hooks.hotpath import task_request_prefix

    ti = context.get("ti") if hasattr(context, "get") else None
    if ti is None:
        return task_request_prefix(getattr(operator, "dag_id", None) or "-", operator.task_id)
    return task_request_prefix(ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1), ti.try_number)


# --- errors ---------------------------------------------------------------------------------------------------------


def model_may_have_run(err: BaseException) -> bool:
    """Whether a failed request may have reached (and been billed by) the model: if so, it is never re-sent."""
    if isinstance(err, BasetenConfigError):
        return False
    if isinstance(err, BasetenAPIError):
        from airflow_provider_baseten.hooks.retries import ambiguous_answer

        return ambiguous_answer(err) or (err.status_code or 0) not in _NOT_RUN_STATUSES
    import httpx

    if isinstance(err, httpx.TransportError | BasetenConnectionError):
        from airflow_provider_baseten.hooks.retries import never_reached_server

        return not never_reached_server(err)
    return True


def describe_error(err: BaseException) -> dict[str, Any]:
    """An error line's ``error`` object."""
    message = str(err)
    return {
        "type": type(err).__name__,
        "message": message if len(message) <= _MESSAGE_LIMIT else message[:_MESSAGE_LIMIT] + "...",
        "status_code": getattr(err, "status_code", None),
        "request_id": getattr(err, "request_id", None),
        "model_may_have_run": model_may_have_run(err),
    }


def is_fatal(err: BaseException) -> bool:
    return isinstance(err, BasetenAPIError) and (err.status_code or 0) in _FATAL_STATUSES

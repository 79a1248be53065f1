"""``BasetenBatchPredictOperator``: score many inputs in one task, concurrently, resumably, into a JSONL file.

How it keeps up: a fixed pool of ``max_concurrency`` worker coroutines pulls items from one lazy iterator (never one
task per item, never the whole input in memory) and sends them through one ``httpx.AsyncClient`` on aiohttp's
transport (httpx's own async pool plateaus near 150 req/s; see the benchmarks). Finished lines are queued and written
in one ``write`` per event-loop tick, so the file is current to within one tick.

How it resumes: the output file is the journal. Each finished item is one line ``{"index", "input_id", "output"}`` or
``{"index", "input_id", "error"}``; a retried task reads the file, drops a torn last line, and predicts only the
indices that are not there (plus, see below, errors that provably never reached the model).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from airflow_provider_baseten.exceptions import BasetenAPIError, BasetenConfigError, BasetenError
from airflow_provider_baseten.operators._base import ADDRESS_TEMPLATE_FIELDS, BasetenBaseOperator, check_seconds
from airflow_provider_baseten.operators.links import BasetenChainLink, BasetenModelLink

if TYPE_CHECKING:
    import httpx
    from airflow.providers.common.compat.sdk import Context, ObjectStoragePath

    from airflow_provider_baseten.hooks.addressing import Target
    from airflow_provider_baseten.hooks.baseten import BasetenHook

__all__ = ["BasetenBatchPredictOperator", "model_may_have_run"]

BATCHES_FOLDER = "baseten-batches"
#: Statuses of a failed predict that prove the model never ran (so re-sending on a task retry is safe).
_NOT_RUN_STATUSES = frozenset({401, 403, 404, 413, 429, 503, 529})
#: Errors that fail every item alike: stop the batch instead of writing one error line per input.
_FATAL_STATUSES = frozenset({401, 403, 404})
_FSYNC_INTERVAL = 1.0
_MESSAGE_LIMIT = 500


class BasetenBatchPredictOperator(BasetenBaseOperator):
    """Predict on many inputs with bounded concurrency, writing one JSONL line per input; resumes on retry.

    **Inputs.** ``inputs`` (a templated list) or ``input_path`` (a JSONL file: a local path, ``file://`` or any
    ``ObjectStoragePath`` URI, read line by line, so memory stays flat in the number of inputs; blank lines are
    skipped and take no index). Each element (line) is one record. Simple rule: the record is the model input,
    sent unchanged; its ``index`` is its 0-based position and its ``input_id`` is the index, unless ``id_field``
    names a key of the record whose value is the ``input_id``. With ``input_field``, only the value under that key
    is sent (so ``{"id": 7, "input": {...}}`` works with ``id_field="id", input_field="input"``).

    **Outputs.** ``output_path`` (templated; default
    ``{AIRFLOW_HOME}/baseten-batches/{dag_id}/{run_id}/{task_id}[-{map_index}].jsonl``) receives one line per input,
    in completion order: ``{"index", "input_id", "output"}`` or ``{"index", "input_id", "error": {"type",
    "message", "status_code", "request_id", "model_may_have_run"}}``. The task returns the manifest
    ``{output_path, total, succeeded, failed, skipped_existing, duration_s}`` (counts over the whole file).

    **Cost, retries, idempotency.** Every input is one billed predict. Within the task, each predict is retried
    with the hook's policy only when it provably never reached the model (connect errors, 429, 503, 529, honouring
    ``Retry-After``); one that ends ambiguous (read timeout, reset mid-response) is written as an error with
    ``model_may_have_run: true`` and never re-sent. On a task *retry* (any try after the first, including a clear)
    the operator resumes from the output file: indices already written are skipped (``skipped_existing``), a torn
    last line from a crash is dropped, and only error lines with ``model_may_have_run: false`` are predicted again
    (their line is replaced). So no input is predicted twice unless the model provably never ran it, and none is
    lost. The first try of a task instance (or a bare ``execute()`` without one) starts a new file, replacing any
    file at that path. Resuming keys on the index, so the inputs must be the same on the retry, and mapped tasks
    need an ``output_path`` per map index (the default has one). On a local or mounted file system every line is
    written (and flushed) as it completes, so a crash loses only the in-flight items; an object store (S3, GCS)
    receives the object when the task ends, so a crash of the worker loses that try's new lines (they are predicted
    again). Authentication and not-found errors stop the batch at once (the rest is left for a retry); ``on_kill``
    stops taking inputs and lets in-flight predicts finish for ``kill_grace_period``.

    :param baseten_conn_id: the ``baseten`` connection (templated).
    :param model_id: the model to call (templated); exactly one of ``model_id`` and ``chain_id``.
    :param chain_id: the chain to run (``/run_remote``) instead (templated).
    :param environment: ``production`` (default), ``development`` or a named environment (templated).
    :param deployment_id: pin one deployment instead of an environment (templated).
    :param regional: use the regional host ``model-{id}-{environment}.api.baseten.co``.
    :param inputs: the inputs (templated): a list, or a JSON string of one. Exactly one of ``inputs`` and
        ``input_path``.
    :param input_path: a JSONL file of inputs (templated): local path, URI or ``ObjectStoragePath``.
    :param output_path: where to write the JSONL results (templated): local path, URI or ``ObjectStoragePath``.
    :param id_field: key of each (dict) record whose value becomes the line's ``input_id``; default: the index.
    :param input_field: key of each (dict) record whose value is sent as the model input; default: the record.
    :param max_concurrency: predicts in flight at once (default 32); the HTTP pool holds as many connections.
    :param max_failed_fraction: the task fails when more than this fraction of all inputs ends in an error
        (default 0.0: any error fails the task, after every input was tried and written).
    :param progress_interval: seconds between progress lines in the task log (done / failed / rate / ETA).
    :param kill_grace_period: on ``on_kill``, seconds to let in-flight predicts finish (and be written) before
        they are cancelled and written as errors with ``model_may_have_run: true``.
    :param timeout: read timeout in seconds of each predict (default: the connection's).
    """

    template_fields: Sequence[str] = (*ADDRESS_TEMPLATE_FIELDS, "inputs", "input_path", "output_path")
    template_fields_renderers = {"inputs": "json"}
    operator_extra_links = (BasetenModelLink(), BasetenChainLink())
    ui_color = "#e5fff0"

    #: Injectable for tests: a monotonic clock and an async sleep (progress reporting and the kill grace period).
    _clock: Callable[[], float] = staticmethod(time.monotonic)
    _sleep: Callable[[float], Awaitable[None]] = staticmethod(asyncio.sleep)

    def __init__(
        self,
        *,
        inputs: list[Any] | str | None = None,
        input_path: str | ObjectStoragePath | None = None,
        output_path: str | ObjectStoragePath | None = None,
        id_field: str | None = None,
        input_field: str | None = None,
        max_concurrency: int = 32,
        max_failed_fraction: float = 0.0,
        progress_interval: float = 10.0,
        kill_grace_period: float = 10.0,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.inputs = inputs
        self.input_path = input_path
        self.output_path = output_path
        self.id_field = id_field
        self.input_field = input_field
        self.max_concurrency = max_concurrency
        self.max_failed_fraction = max_failed_fraction
        self.progress_interval = progress_interval
        self.kill_grace_period = kill_grace_period
        self.timeout = timeout
        if (inputs is None) == (input_path is None):
            raise BasetenConfigError("Pass exactly one of inputs= (a list) and input_path= (a JSONL file).")
        if isinstance(inputs, tuple | set | dict):
            raise BasetenConfigError("inputs must be a list (or a templated string rendering to one).")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise BasetenConfigError(f"max_concurrency must be a positive integer, got {max_concurrency!r}.")
        if isinstance(max_failed_fraction, bool) or not isinstance(max_failed_fraction, int | float):
            raise BasetenConfigError(f"max_failed_fraction must be a number from 0 to 1, got {max_failed_fraction!r}.")
        if not 0.0 <= max_failed_fraction <= 1.0:
            raise BasetenConfigError(f"max_failed_fraction must be a number from 0 to 1, got {max_failed_fraction!r}.")
        self.progress_interval = check_seconds(progress_interval, "progress_interval", allow_zero=True)
        self.kill_grace_period = check_seconds(kill_grace_period, "kill_grace_period", allow_zero=True)
        self.timeout = None if timeout is None else check_seconds(timeout, "timeout")
        for name, key in (("id_field", id_field), ("input_field", input_field)):
            if key is not None and (not isinstance(key, str) or not key):
                raise BasetenConfigError(f"{name} must be a non-empty string (a key of each record).")
        self._run_state: _RunState | None = None

    # --- execute ----------------------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        target = self.target
        source = self._source()
        output = _OutputFile(self._output_path(context))
        started = self._clock()
        if "ti" in context:
            (BasetenModelLink if target.kind == "model" else BasetenChainLink).persist(context, self)
        resume = _is_retry(context)
        existing = output.prepare(resume=resume, log=self.log)
        if existing.kept:
            self.log.info(
                "Resuming: %d inputs already written to %s (%d failed); %d errors that never reached the model are "
                "predicted again.",
                existing.kept,
                output.uri,
                existing.failed,
                existing.dropped_retryable,
            )
        self.log.info(
            "Batch predict on %s: %s inputs, concurrency %d, output %s",
            target.describe(),
            "?" if source.total is None else source.total,
            self.max_concurrency,
            output.uri,
        )
        if self.activate_if_inactive:
            self.ensure_active(target)  # one status read; items sent to an INACTIVE deployment would all 404
        self.hook.settings  # noqa: B018  (resolve the connection synchronously, before the event loop)
        state = self._run_state = _RunState(existing=existing, total=source.total)
        try:
            with output.open_append() as sink:
                asyncio.run(self._run(target, source.items(skip=existing.done), sink, state))
        finally:
            self._run_state = None
        duration = self._clock() - started
        total = source.total if source.total is not None else source.seen
        failed = existing.failed + state.failed
        manifest: dict[str, Any] = {
            "output_path": output.uri,
            "total": total,
            "succeeded": existing.succeeded + state.succeeded,
            "failed": failed,
            "skipped_existing": existing.kept,
            "duration_s": round(duration, 3),
        }
        self.log.info("Batch finished: %s", manifest)
        if state.writer is not None and state.writer.error is not None:
            raise BasetenError(f"Writing the results to {output.uri} failed.") from state.writer.error
        if state.fatal is not None:
            self.log.error("Stopped at the first error that every input would hit; unsent inputs are left for a retry.")
            raise state.fatal
        if state.stop_reason:
            raise BasetenError(f"The batch stopped early: {state.stop_reason} Written so far: {manifest}.")
        failed_fraction = failed / total if total else 0.0
        if failed_fraction > self.max_failed_fraction:
            raise BasetenError(
                f"{failed} of {total} inputs failed ({failed_fraction:.1%}), over max_failed_fraction="
                f"{self.max_failed_fraction}; see the error lines in {output.uri}. A task retry re-predicts only "
                "errors that never reached the model."
            )
        return manifest

    def on_kill(self) -> None:
        """Stop taking new inputs; let in-flight predicts finish for ``kill_grace_period``; written lines stay."""
        state = self._run_state
        if state is not None:
            state.request_stop("the task was killed (on_kill).")

    # --- inputs and outputs -------------------------------------------------------------------------------------

    def _source(self) -> _Source:
        if self.input_path not in (None, ""):
            if self.inputs not in (None, ""):
                raise BasetenConfigError("Pass exactly one of inputs= and input_path=.")
            return _FileSource(_as_path(self.input_path), self.id_field, self.input_field)
        inputs: Any = self.inputs
        if isinstance(inputs, str):
            inputs = _parse_list(inputs)
        if not isinstance(inputs, list | tuple):
            raise BasetenConfigError(f"inputs must render to a list, got {type(inputs).__name__}.")
        return _ListSource(list(inputs), self.id_field, self.input_field)

    def _output_path(self, context: Context) -> ObjectStoragePath | Path:
        if self.output_path not in (None, ""):
            return _as_path(self.output_path)  # type: ignore[arg-type]
        from airflow_provider_baseten.operators._results import task_result_path

        if "ti" not in context:
            raise BasetenConfigError("Pass output_path= when running outside a task instance.")

        home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
        return _as_path(task_result_path(context, os.path.join(home, BATCHES_FOLDER), suffix=".jsonl"))

    # --- the async part ---------------------------------------------------------------------------------------

    async def _run(self, target: Target, items: Iterator[_Item], sink: _Sink, state: _RunState) -> None:
        """``max_concurrency`` workers over one client; returns when the inputs are exhausted or a stop is done."""
        from airflow_provider_baseten.hooks import baseten as hook_module

        hook = self.hook
        loop = asyncio.get_running_loop()
        client = hook_module.build_async_client(await hook.aget_settings(), max_connections=self.max_concurrency)
        state.bind(loop)
        writer = state.writer = _LineWriter(
            sink, loop, self._clock, lambda err: state.request_stop(f"writing {type(err).__name__}: {err}")
        )
        progress = _Progress(self, state)
        workers = [
            asyncio.create_task(self._worker(hook, client, target, items, writer, state, progress))
            for _ in range(self.max_concurrency)
        ]
        reporter = asyncio.create_task(self._report(progress))
        stopper = asyncio.create_task(state.stopped.wait())
        all_done = asyncio.gather(*workers)
        try:
            await asyncio.wait([all_done, stopper], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
            if all_done.done():
                all_done.result()  # a bug in a worker surfaces here
            else:
                self.log.warning(
                    "Stopping the batch: %s Waiting up to %ss for the %d predicts in flight.",
                    state.stop_reason,
                    self.kill_grace_period,
                    len(state.in_flight),
                )
                await self._drain(workers, writer, state)
        finally:
            for task in (reporter, stopper, *workers):
                task.cancel()
            await asyncio.gather(all_done, reporter, stopper, return_exceptions=True)
            writer.flush()
            if writer.syncing is not None:
                await asyncio.gather(writer.syncing, return_exceptions=True)
            await client.aclose()
        progress.log_now(final=True)

    async def _worker(
        self,
        hook: BasetenHook,
        client: httpx.AsyncClient,
        target: Target,
        items: Iterator[_Item],
        writer: _LineWriter,
        state: _RunState,
        progress: _Progress,
    ) -> None:
        while not state.stop_reason:
            item = next(items, None)
            if item is None:
                return
            line: dict[str, Any] = {"index": item.index, "input_id": item.input_id}
            if item.error is not None:
                line["error"] = item.error
            else:
                state.in_flight[item.index] = item.input_id
                try:
                    line["output"] = (
                        await hook.apredict(target, item.payload, client=client, timeout=self.timeout)
                    ).data
                except Exception as err:
                    if _is_fatal(err):  # the same for every input: leave them all for a retry
                        state.fatal = state.fatal or err
                        state.request_stop(f"{type(err).__name__}: {err}")
                        return
                    line["error"] = describe_error(err)
                finally:
                    state.in_flight.pop(item.index, None)
            state.count(line)
            writer.add(line)
            progress.maybe_log()

    async def _drain(self, workers: list[asyncio.Task[None]], writer: _LineWriter, state: _RunState) -> None:
        """After a stop: give in-flight predicts the grace period, then cancel them and record them as ambiguous."""
        pending = [task for task in workers if not task.done()]
        if pending and self.kill_grace_period > 0:
            finished = asyncio.gather(*pending, return_exceptions=True)
            grace = asyncio.ensure_future(self._sleep(self.kill_grace_period))
            await asyncio.wait([finished, grace], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
            grace.cancel()
        stranded = dict(state.in_flight)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for index, input_id in stranded.items():
            line = {
                "index": index,
                "input_id": input_id,
                "error": {
                    "type": "Cancelled",
                    "message": "The predict was in flight when the batch stopped; the model may have run, so it is "
                    "not re-sent on a retry.",
                    "status_code": None,
                    "request_id": None,
                    "model_may_have_run": True,
                },
            }
            state.count(line)
            writer.add(line)
        state.in_flight.clear()

    async def _report(self, progress: _Progress) -> None:
        """Progress even while nothing completes (a slow model): at least every ``progress_interval``."""
        interval = max(self.progress_interval, 0.05)
        while True:
            await self._sleep(interval)
            progress.maybe_log()


# --- items -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    index: int
    input_id: Any
    payload: Any = None
    error: dict[str, Any] | None = None


def _make_item(index: int, record: Any, id_field: str | None, input_field: str | None) -> _Item:
    input_id: Any = index
    for name, key in (("id_field", id_field), ("input_field", input_field)):
        if key is not None and not (isinstance(record, dict) and key in record):
            return _Item(index, index, error=_input_error(f"the record has no key {key!r} ({name})."))
    if id_field is not None:
        input_id = record[id_field]
    payload = record[input_field] if input_field is not None else record
    return _Item(index, input_id, payload)


def _input_error(message: str) -> dict[str, Any]:
    return {
        "type": "InvalidInput",
        "message": message,
        "status_code": None,
        "request_id": None,
        "model_may_have_run": False,
    }


class _Source:
    total: int | None

    def records(self) -> Iterator[tuple[Any, str | None]]:
        raise NotImplementedError

    def __init__(self, id_field: str | None, input_field: str | None) -> None:
        self.id_field = id_field
        self.input_field = input_field
        self.seen = 0  # records read so far: the total once the source is exhausted

    def items(self, *, skip: _IndexSet) -> Iterator[_Item]:
        """Lazily, the items whose index is not in ``skip``."""
        for index, (record, problem) in enumerate(self.records()):
            self.seen = index + 1
            if index in skip:
                continue
            if problem is not None:
                yield _Item(index, index, error=_input_error(problem))
            else:
                yield _make_item(index, record, self.id_field, self.input_field)


class _ListSource(_Source):
    def __init__(self, inputs: list[Any], id_field: str | None, input_field: str | None) -> None:
        super().__init__(id_field, input_field)
        self.inputs = inputs
        self.total = len(inputs)

    def records(self) -> Iterator[tuple[Any, str | None]]:
        for record in self.inputs:
            yield record, None


class _FileSource(_Source):
    """JSONL read line by line; for local files the lines are counted first (one cheap pass) for the ETA."""

    def __init__(self, path: ObjectStoragePath | Path, id_field: str | None, input_field: str | None) -> None:
        super().__init__(id_field, input_field)
        self.path = path
        if not path.exists():
            raise BasetenConfigError(f"input_path {_uri(path)} does not exist.")
        self.total = sum(1 for _ in self._lines()) if _is_local(path) else None

    def _lines(self) -> Iterator[bytes]:
        with self.path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    yield line

    def records(self) -> Iterator[tuple[Any, str | None]]:
        for number, line in enumerate(self._lines()):
            try:
                yield json.loads(line), None
            except ValueError as err:
                yield None, f"record {number} of {_uri(self.path)} is not valid JSON: {err}"


# --- the output file: the journal of the batch ---------------------------------------------------------------


class _IndexSet:
    """A set of non-negative indices as a growable bitmap: 1 bit per input, flat enough at millions of inputs."""

    def __init__(self) -> None:
        self._bits = bytearray()

    def add(self, index: int) -> None:
        byte = index >> 3
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte - len(self._bits) + 1024))
        self._bits[byte] |= 1 << (index & 7)

    def __contains__(self, index: int) -> bool:
        byte = index >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (index & 7)))


@dataclass
class _Existing:
    """What an earlier try left in the output file (after dropping re-sendable errors and a torn tail)."""

    done: _IndexSet = field(default_factory=_IndexSet)
    kept: int = 0
    succeeded: int = 0
    failed: int = 0
    dropped_retryable: int = 0
    torn_bytes: int = 0


class _Sink:
    """Where the writer puts bytes: a local file (flushed per write) or an object-store stream."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        """Make written data durable (local files: ``fsync``); object stores write at close."""


class _OutputFile:
    """The output JSONL: appended and flushed line by line when local; written as a whole on an object store."""

    def __init__(self, path: ObjectStoragePath | Path) -> None:
        self.path = path
        self.local = _is_local(path)
        self.uri = _uri(path)
        self._carry_over = False  # object store: copy the kept lines of the earlier try into the new object

    def prepare(self, *, resume: bool, log: Any) -> _Existing:
        """Start fresh (first try) or take stock of an earlier try's lines, repairing the file if needed."""
        existing = _Existing()
        if self.local:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            return existing
        if not resume:
            log.info("First try: replacing the existing %s.", self.uri)
            if self.local:
                self.path.unlink()
            return existing
        changed = False
        with self.path.open("rb") as handle:
            for _line, keep, normalized in _scan(handle, existing, self.uri, log):
                changed = changed or not keep or normalized
        if self.local and changed:
            self._rewrite_local()
        elif not self.local:
            self._carry_over = existing.kept > 0
        return existing

    def _rewrite_local(self) -> None:
        """Keep only the kept lines: written to a temporary file, synced, then swapped in atomically."""
        assert isinstance(self.path, Path)
        tmp = self.path.with_name(self.path.name + ".resume-tmp")
        try:
            with self.path.open("rb") as source, tmp.open("wb") as out:
                for line, keep, _ in _scan(source, _Existing(), self.uri, None):
                    if keep:
                        out.write(line)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def open_append(self) -> Iterator[_Sink]:
        if self.local:
            local = self.path.open("ab")
            try:
                yield _LocalSink(local)
            finally:
                local.flush()
                os.fsync(local.fileno())
                local.close()
            return
        if not self._carry_over:
            with self.path.open("wb") as handle:
                yield _StreamSink(handle)
            return
        # Object stores cannot append: write a new object (the kept lines, then the new ones) and move it into
        # place when the task ends (also when it fails: every line in it is complete), so a crash before then
        # leaves the earlier try's object intact.
        tmp = self.path.with_name(self.path.name + ".resume-tmp")
        copied = False
        try:
            with tmp.open("wb") as handle:
                with self.path.open("rb") as source:
                    for line, keep, _ in _scan(source, _Existing(), self.uri, None):
                        if keep:
                            handle.write(line)
                copied = True
                yield _StreamSink(handle)
        finally:
            if copied:
                tmp.rename(self.path)  # type: ignore[arg-type]


def _scan(handle: IO[bytes], existing: _Existing, uri: str, log: Any) -> Iterator[tuple[bytes, bool, bool]]:
    """Each line of an earlier try's output: ``(line, keep, normalized)``; counts the kept ones into ``existing``.

    Dropped: a torn last line (a crash mid-write), a repeated index, and errors that never reached the model (they
    are predicted again). A last line that is complete but lost its newline is kept, with the newline restored.
    Any other unreadable line means the file is not this batch's output: that raises.
    """
    lines = iter(handle)
    raw = next(lines, None)
    number = 0
    while raw is not None:
        number += 1
        following = next(lines, None)
        line, normalized = raw, False
        if following is None and not raw.endswith(b"\n"):
            line, normalized = raw + b"\n", True
        record = _parse_line(line)
        if record is None:
            if following is not None:
                raise BasetenError(
                    f"Line {number} of {uri} is not a batch result line; move the file away or choose another "
                    "output_path."
                )
            if log is not None:
                log.warning("Dropping a torn last line (%d bytes) of %s.", len(raw), uri)
            existing.torn_bytes = len(raw)
            yield raw, False, True
            return
        index = record["index"]
        error = record.get("error")
        if index in existing.done:
            yield line, False, normalized
        elif isinstance(error, dict) and error.get("model_may_have_run") is False:
            existing.dropped_retryable += 1
            yield line, False, normalized
        else:
            existing.done.add(index)
            existing.kept += 1
            if error is not None:
                existing.failed += 1
            else:
                existing.succeeded += 1
            yield line, True, normalized
        raw = following


class _LocalSink(_Sink):
    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.handle.flush()  # to the OS: a crash of this process loses nothing written

    def sync(self) -> None:
        os.fsync(self.handle.fileno())  # to the disk, about once a second


class _StreamSink(_Sink):
    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle

    def write(self, data: bytes) -> None:
        self.handle.write(data)


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    if not raw.endswith(b"\n"):
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    index = record.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        return None
    if "output" not in record and "error" not in record:
        return None
    return record


class _LineWriter:
    """Lines finished within one event-loop tick go to the file in one write, at the end of that tick.

    A write error stops the batch (through ``on_error``) and is raised by the operator after the loop.
    """

    def __init__(
        self,
        sink: _Sink,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.sink = sink
        self.loop = loop
        self.clock = clock
        self.on_error = on_error
        self.buffer: list[str] = []
        self.scheduled = False
        self.last_sync = clock()
        self.syncing: asyncio.Future[None] | None = None
        self.error: BaseException | None = None

    def add(self, line: dict[str, Any]) -> None:
        self.buffer.append(json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str) + "\n")
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        if not self.buffer or self.error is not None:
            return
        data = "".join(self.buffer).encode()
        self.buffer.clear()
        try:
            self.sink.write(data)
        except Exception as err:
            self._failed(err)
            return
        now = self.clock()
        if now - self.last_sync >= _FSYNC_INTERVAL and (self.syncing is None or self.syncing.done()):
            # fsync can take a while on a busy disk: in a thread, so the event loop keeps sending.
            self.last_sync = now
            self.syncing = self.loop.run_in_executor(None, self.sink.sync)
            self.syncing.add_done_callback(self._synced)

    def _synced(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self._failed(future.exception())  # type: ignore[arg-type]

    def _failed(self, err: BaseException) -> None:
        if self.error is None:
            self.error = err
            self.on_error(err)


# --- run state and progress ---------------------------------------------------------------------------------


class _RunState:
    """Counters of this try, in-flight items, and the stop request (``on_kill`` may come from another thread)."""

    def __init__(self, *, existing: _Existing, total: int | None) -> None:
        self.existing = existing
        self.total = total
        self.succeeded = 0
        self.failed = 0
        self.in_flight: dict[int, Any] = {}
        self.stop_reason: str | None = None
        self.stopped = asyncio.Event()
        self.writer: _LineWriter | None = None
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

    def count(self, line: dict[str, Any]) -> None:
        if "error" in line:
            self.failed += 1
        else:
            self.succeeded += 1


class _Progress:
    def __init__(self, operator: BasetenBatchPredictOperator, state: _RunState) -> None:
        self.operator = operator
        self.state = state
        self.clock = operator._clock
        self.started = self.clock()
        self.last = self.started

    def maybe_log(self) -> None:
        if self.clock() - self.last >= self.operator.progress_interval:
            self.log_now()

    def log_now(self, *, final: bool = False) -> None:
        now = self.last = self.clock()
        state, existing = self.state, self.state.existing
        done_now = state.succeeded + state.failed
        elapsed = max(now - self.started, 1e-9)
        rate = done_now / elapsed
        total = state.total
        done = done_now + existing.kept
        if total is None:
            eta = "?"
        elif rate > 0:
            eta = f"{max(total - done, 0) / rate:.0f}s"
        else:
            eta = "?"
        self.operator.log.info(
            "Batch %s: %d/%s done (%d failed, %d in flight, %d from an earlier try), %.1f predicts/s, ETA %s",
            ("stopped" if state.stop_reason else "finished") if final else "progress",
            done,
            "?" if total is None else total,
            state.failed + existing.failed,
            len(state.in_flight),
            existing.kept,
            rate,
            eta,
        )


# --- helpers --------------------------------------------------------------------------------------------------


def model_may_have_run(err: BaseException) -> bool:
    """Whether a failed predict may have reached (and been billed by) the model: if so, it is never re-sent."""
    if isinstance(err, BasetenConfigError):
        return False
    if isinstance(err, BasetenAPIError):
        return (err.status_code or 0) not in _NOT_RUN_STATUSES
    import httpx

    if isinstance(err, httpx.TransportError):
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


def _parse_list(text: str) -> Any:
    """A rendered template: JSON, or the Python literal a plain ``{{ ... }}`` of a list renders to."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise BasetenConfigError("inputs rendered to a string that is neither a JSON list nor a Python list.") from None


def _is_fatal(err: BaseException) -> bool:
    return isinstance(err, BasetenAPIError) and (err.status_code or 0) in _FATAL_STATUSES


def _is_retry(context: Context) -> bool:
    """Resume on every try but the first. Outside a task instance (a bare ``execute({})``) there is no retry."""
    ti = context.get("ti") if hasattr(context, "get") else None
    try_number = getattr(ti, "try_number", None)
    return isinstance(try_number, int) and try_number > 1


def _as_path(value: str | ObjectStoragePath) -> ObjectStoragePath | Path:
    """A local ``Path`` for local files (appends, flush, fsync, truncate), else an ``ObjectStoragePath``."""
    if isinstance(value, str):
        if "://" not in value:
            return Path(os.path.abspath(os.path.expanduser(value)))
        if value.startswith("file://"):
            return Path(value[len("file://") :])
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        return ObjectStoragePath(value)
    if getattr(value, "protocol", None) in ("file", "local", ""):
        return Path(str(value.path))
    return value


def _uri(path: ObjectStoragePath | Path) -> str:
    return path.as_uri() if _is_local(path) else str(path)


def _is_local(path: ObjectStoragePath | Path) -> bool:
    """A plain local path (on Airflow 3.1 an ``ObjectStoragePath`` is a ``pathlib.Path`` too: tell them apart)."""
    return isinstance(path, Path) and not hasattr(path, "protocol")

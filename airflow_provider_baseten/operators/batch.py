"""``BasetenBatchPredictOperator``: score many inputs in one task, concurrently, resumably, into JSONL output.

How it keeps up: the shared send loop (``_send_loop``): ``max_concurrency`` worker coroutines pull items from one
lazy iterator (never one task per item, never the whole input in memory) and send them on the hot path
(``hooks.hotpath``: one ``aiohttp`` session). Finished lines are queued and written in one ``write`` per event-loop
tick, so the output is current to within one tick (one part on an object store).

How it resumes: the output is the journal (``_batch_journal``). Each finished item is one line ``{"index",
"input_id", "input_fp", "output"}`` or ``{..., "error"}``; a later try reads it, drops a torn last line and every
line whose ``input_fp`` is not the current input's, and predicts only the indices that are not there (plus errors
that provably never reached the model). Items in flight when a try ends are written as ``model_may_have_run``
errors (on a kill of the process, from the intents sidecar of a local output), so no try re-sends them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.hooks.calls import encode_json
from airflow_provider_baseten.operators._base import ADDRESS_TEMPLATE_FIELDS, BasetenBaseOperator, check_seconds
from airflow_provider_baseten.operators._batch_inputs import FileSource, Item, ListSource, Source, parse_list
from airflow_provider_baseten.operators._batch_journal import compact_json
from airflow_provider_baseten.operators._batch_run import BatchRunMixin, Wording, default_output_path
from airflow_provider_baseten.operators._lineage import LineageMixin
from airflow_provider_baseten.operators._send_loop import (
    Job,
    RunState,
    SendLoop,
    Unit,
    describe_error,
    model_may_have_run,
    task_prefix,
)
from airflow_provider_baseten.operators._storage import as_path
from airflow_provider_baseten.operators.links import BasetenChainLink, BasetenModelLink

if TYPE_CHECKING:
    from pathlib import Path

    from airflow.providers.common.compat.sdk import Context, ObjectStoragePath

    from airflow_provider_baseten.hooks.addressing import Target
    from airflow_provider_baseten.hooks.baseten import BasetenHook
    from airflow_provider_baseten.hooks.calls import _Call
    from airflow_provider_baseten.hooks.hotpath import HotSender

__all__ = ["BasetenBatchPredictOperator", "describe_error", "model_may_have_run", "start_ramp"]

BATCHES_FOLDER = "baseten-batches"

OnRerun = Literal["resume", "replace", "fail"]


def start_ramp(step: float, maximum: float, concurrency: int) -> float:
    """Seconds between the starts of ``concurrency`` workers: ``step``, less where the whole ramp would pass
    ``maximum`` (the benchmark's floors start on the same ramp)."""
    return min(step, maximum / max(concurrency - 1, 1))


class BasetenBatchPredictOperator(BatchRunMixin, LineageMixin, BasetenBaseOperator):
    """Predict on many inputs with bounded concurrency, writing one JSONL line per input; resumes on a re-run.

    **Inputs.** ``inputs`` (a templated list) or ``input_path`` (a JSONL file: a local path, ``file://`` or any
    ``ObjectStoragePath`` URI, read line by line, so memory stays flat in the number of inputs; blank lines are
    skipped and take no index). Each element (line) is one record. Simple rule: the record is the model input,
    sent unchanged; its ``index`` is its 0-based position and its ``input_id`` is the index, unless ``id_field``
    names a key of the record whose value is the ``input_id``. With ``input_field``, only the value under that key
    is sent (so ``{"id": 7, "input": {...}}`` works with ``id_field="id", input_field="input"``).

    **Outputs.** ``output_path`` (templated), else ``{[baseten] output_location}/baseten-batches/{dag_id}/{run_id}/
    {task_id}[-{map_index}].jsonl``; with neither the task fails before sending anything. One line per input, in
    completion order: ``{"index", "input_id", "input_fp", "output"}`` or ``{"index", "input_id", "input_fp",
    "error": {"type", "message", "status_code", "request_id", "model_may_have_run"}}`` (``input_fp``: a
    fingerprint of the input). A local path is one file, appended and flushed as lines complete; on an object store
    (S3, GCS, ...) ``output_path`` is a folder of whole objects ``part-00000.jsonl``, ``part-00001.jsonl``, ...
    written every ``part_size`` lines or ``part_interval`` seconds, so a crash of the worker loses at most the part
    being filled (those items are predicted again). The task returns the manifest ``{output_path, parts, total,
    succeeded, failed, skipped_existing, duration_s}`` (counts over the whole output; ``parts``: the URIs of the
    files holding the lines, each opens as returned with ``ObjectStoragePath(uri)`` or ``fsspec.open(uri)``).

    **Cost, retries, re-runs.** Every input is one billed predict. Within the task, each predict is retried with
    the hook's policy only when it provably never reached the model (connect errors, 429, 503, 529, honouring
    ``Retry-After``); one that ends ambiguous (read timeout, reset mid-response) is written as an error with
    ``model_may_have_run: true`` and never re-sent. On a re-run (any try after the first: an Airflow retry or a
    clear), ``on_rerun`` decides: ``"resume"`` (default) keeps the lines whose input is unchanged (same index and
    fingerprint), drops the rest, and predicts only what is missing plus errors that never reached the model;
    ``"fail"`` resumes the same way but fails, before sending anything, when any line was written for another input;
    ``"replace"`` starts over (every input is billed again). The first try (or a bare ``execute()``) always starts a
    new output. Whatever ends a try (success, exception, ``execution_timeout``, SIGTERM, ``on_kill``), the predicts
    still in flight are written as errors with ``model_may_have_run: true``; on a local output an intent record is
    also written before each send, so even after a SIGKILL the next try writes those items as ``model_may_have_run``
    instead of re-sending them (on an object store a SIGKILL re-sends the in-flight items and the unwritten part).
    Mapped tasks need an ``output_path`` per map index (the default has one). Authentication and not-found errors
    stop the batch at once (the rest is left for a retry); ``on_kill`` stops taking inputs and lets in-flight
    predicts finish for ``kill_grace_period``.

    :param baseten_conn_id: the ``baseten`` connection (templated).
    :param model_id: the model to call (templated); exactly one of ``model_id`` and ``chain_id``.
    :param chain_id: the chain to run (``/run_remote``) instead (templated).
    :param environment: ``production`` (default), ``development`` or a named environment (templated).
    :param deployment_id: pin one deployment instead of an environment (templated).
    :param regional: use the regional host ``model-{id}-{environment}.api.baseten.co``.
    :param inputs: the inputs (templated): a list, or a JSON string of one. Exactly one of ``inputs`` and
        ``input_path``.
    :param input_path: a JSONL file of inputs (templated): local path, URI or ``ObjectStoragePath``.
    :param output_path: where to write the JSONL results (templated): local path, URI or ``ObjectStoragePath``;
        default: under ``[baseten] output_location``.
    :param id_field: key of each (dict) record whose value becomes the line's ``input_id``; default: the index.
    :param input_field: key of each (dict) record whose value is sent as the model input; default: the record.
    :param on_rerun: ``"resume"`` (default), ``"fail"`` or ``"replace"``: what a re-run does with the output of an
        earlier try (see above).
    :param part_size: object stores: lines per part (default 1000): a crash re-predicts at most this many items.
    :param part_interval: object stores: seconds after which a part is written even if it is not full (default 60).
    :param max_concurrency: predicts in flight at once (default 32); the HTTP pool holds as many connections.
    :param max_failed_fraction: the task fails when more than this fraction of all inputs ends in an error
        (default 0.0: any error fails the task, after every input was tried and written).
    :param progress_interval: seconds between progress lines in the task log (done / failed / rate / ETA).
    :param kill_grace_period: on ``on_kill``, seconds to let in-flight predicts finish (and be written) before
        they are cancelled and written as errors with ``model_may_have_run: true``.
    :param timeout: read timeout in seconds of each predict (default: the connection's).
    :param route: send each input to the model's ``/sync/{route}`` (e.g. ``v1/chat/completions``) instead of
        ``/predict`` (templated; models only). Engine routes that only compute (``v1/embeddings``, ``rerank``,
        ``classify``) are retried like reads (5xx and timeouts too); any other route is billed like a predict and
        retried only when it provably never reached the model.

    **Tracing and retry budget.** Each item is sent with ``x-baseten-customer-request-id``
    ``{dag_id}.{task_id}.{run_id}.{map_index}.{try}:{index}`` (characters outside ``[A-Za-z0-9._:+~-]`` become
    ``_``; a long prefix is shortened with a hash), also written in its line as ``customer_request_id``, so one item
    can be found in Baseten's logs. All items share one retry budget (at most 10 retries or 5% of the items
    sent, whichever is more; 429 and 529 answers, which say when to come back, spend none), so a storm of 5xx or
    connection errors cannot multiply the load; once it is spent, a failing item is written as an
    error (re-sent by a task retry only if it never reached the model). Items go out on the hot path
    (:mod:`~airflow_provider_baseten.hooks.hotpath`): one ``aiohttp`` session, the hook's retry and error rules.
    """

    template_fields: Sequence[str] = (*ADDRESS_TEMPLATE_FIELDS, "inputs", "input_path", "output_path", "route")
    template_fields_renderers = {"inputs": "json"}
    operator_extra_links = (BasetenModelLink(), BasetenChainLink())
    ui_color = "#e5fff0"

    #: Retries the batch affords per item sent, at least 10 (one :class:`~airflow_provider_baseten.hooks.
    #: retry_budget.RetryBudget` for the whole batch; 429/529 spend none). Baseten's performance client uses 5%.
    retry_budget_fraction = 0.05
    wording = Wording(
        title="Batch predict", run="batch", items="inputs", sent="predicted", results="results", id_key="input_id"
    )
    #: An item in flight when a try ended may have run: written as an error, never re-sent.
    resends_in_flight = False

    #: Seconds between the starts of consecutive workers (the whole ramp at most :attr:`start_ramp_max`): the
    #: first wave goes out spread over a few tens of milliseconds instead of as one burst, and later waves stay
    #: spread, so the model server and this process do not queue a burst of ``max_concurrency`` on every round trip
    #: (measured: ``benchmarks/batch_predict.py``). Costs at most ``start_ramp_max`` once, before the last worker
    #: starts.
    start_ramp_step = 0.0005
    start_ramp_max = 0.05

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
        on_rerun: OnRerun = "resume",
        part_size: int = 1000,
        part_interval: float = 60.0,
        max_concurrency: int = 32,
        max_failed_fraction: float = 0.0,
        progress_interval: float = 10.0,
        kill_grace_period: float = 10.0,
        timeout: float | None = None,
        route: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.inputs = inputs
        self.input_path = input_path
        self.output_path = output_path
        self.id_field = id_field
        self.input_field = input_field
        self.on_rerun = on_rerun
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.max_failed_fraction = max_failed_fraction
        if (inputs is None) == (input_path is None):
            raise BasetenConfigError("Pass exactly one of inputs= (a list) and input_path= (a JSONL file).")
        if isinstance(inputs, tuple | set | dict):
            raise BasetenConfigError("inputs must be a list (or a templated string rendering to one).")
        if on_rerun not in get_args(OnRerun):
            raise BasetenConfigError(f"on_rerun must be one of {', '.join(get_args(OnRerun))}; got {on_rerun!r}.")
        for name, count in (("max_concurrency", max_concurrency), ("part_size", part_size)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise BasetenConfigError(f"{name} must be a positive integer, got {count!r}.")
        if isinstance(max_failed_fraction, bool) or not isinstance(max_failed_fraction, int | float):
            raise BasetenConfigError(f"max_failed_fraction must be a number from 0 to 1, got {max_failed_fraction!r}.")
        if not 0.0 <= max_failed_fraction <= 1.0:
            raise BasetenConfigError(f"max_failed_fraction must be a number from 0 to 1, got {max_failed_fraction!r}.")
        self.part_interval = check_seconds(part_interval, "part_interval")
        self.progress_interval = check_seconds(progress_interval, "progress_interval", allow_zero=True)
        self.kill_grace_period = check_seconds(kill_grace_period, "kill_grace_period", allow_zero=True)
        self.timeout = None if timeout is None else check_seconds(timeout, "timeout")
        self.route = route
        if route is not None:
            from airflow_provider_baseten.hooks.addressing import validate_route

            if "{{" not in str(route):
                validate_route(route)  # a literal route fails here; a templated one when the call is built
            if self.chain_id is not None:
                raise BasetenConfigError("route= sends to a deployed model's /sync/{route}; chains have none.")
        for name, key in (("id_field", id_field), ("input_field", input_field)):
            if key is not None and (not isinstance(key, str) or not key):
                raise BasetenConfigError(f"{name} must be a non-empty string (a key of each record).")
        self._run_state: RunState | None = None

    # --- execute ----------------------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        run = self._begin(context, 1)
        call = self._call(self.hook, run.target)
        job = _PredictJob(run.source.items(skip=run.existing.done), call, task_prefix(context, self))
        when = "was in flight when an earlier try ended"
        self._send_all(run, job, [_in_flight_line(intent, when) for intent in run.existing.stranded.values()])
        manifest = {"output_path": run.output.uri, "parts": run.output.part_uris(), **self._counts(run)}
        return self._outcome(run, manifest)

    # --- inputs and outputs -------------------------------------------------------------------------------------

    def _source(self) -> Source:
        if self.input_path not in (None, ""):
            if self.inputs not in (None, ""):
                raise BasetenConfigError("Pass exactly one of inputs= and input_path=.")
            return FileSource(as_path(self.input_path), self.id_field, self.input_field)  # type: ignore[arg-type]
        inputs: Any = self.inputs
        if isinstance(inputs, str):
            inputs = parse_list(inputs)
        if not isinstance(inputs, list | tuple):
            raise BasetenConfigError(f"inputs must render to a list, got {type(inputs).__name__}.")
        return ListSource(list(inputs), self.id_field, self.input_field)

    def _output_path(self, context: Context) -> ObjectStoragePath | Path:
        return default_output_path(self.output_path, context, BATCHES_FOLDER, ".jsonl")

    def _loop(self, job: Job, state: RunState) -> SendLoop:
        """The shared send loop, its workers started on :meth:`_ramp`."""
        return SendLoop(self, job, state, ramp=self._ramp())

    def _ramp(self) -> float:
        """Seconds between worker starts: :attr:`start_ramp_step`, less where the ramp would pass its maximum."""
        return start_ramp(self.start_ramp_step, self.start_ramp_max, self.max_concurrency)

    # --- the requests -------------------------------------------------------------------------------------------

    def _call(self, hook: BasetenHook, target: Target) -> _Call:
        """What every item is sent as: the predict (run_remote) of ``target``, or its ``/sync/{route}``."""
        if self.route is None:
            return hook._inference_call(target, None, self.timeout, "json")
        from airflow_provider_baseten.hooks.calls import _Call
        from airflow_provider_baseten.hooks.hotpath import sync_route_idempotent

        endpoint = target.sync_endpoint(self.route)
        idempotent = sync_route_idempotent(self.route)
        return _Call("POST", endpoint, f"sync {self.route} on {target.describe()}", idempotent, None, self.timeout)


class _PredictJob:
    """One predict per input, sent with its ``x-baseten-customer-request-id`` (journaled in its intent)."""

    progress_format = "Batch %s: %d/%s done (%d failed, %d in flight, %d from an earlier try), %.1f predicts/s, ETA %s"

    def __init__(self, items: Iterator[Item], call: _Call, prefix: str) -> None:
        from airflow_provider_baseten.hooks.hotpath import customer_request_id

        self.items = items
        self.call = call
        self.prefix = prefix
        self.request_id = customer_request_id

    def take(self) -> tuple[Unit | None, list[dict[str, Any]]]:
        item = next(self.items, None)
        if item is None:
            return None, []
        line: dict[str, Any] = {"index": item.index, "input_id": item.input_id, "input_fp": item.fingerprint}
        if item.error is not None:
            line["error"] = item.error
            return None, [line]
        line["customer_request_id"] = self.request_id(self.prefix, item.index)
        return Unit([line], item.payload), []

    async def send(self, sender: HotSender, unit: Unit) -> list[dict[str, Any]]:
        [line] = unit.lines
        # msgspec, else json.dumps, where NaN and the like fail (an error line)
        body = compact_json(unit.payload) or encode_json(unit.payload)
        # raw: the answer goes into the line as the model wrote it, never decoded and encoded again
        result = await sender.predict(self.call, body, request_id=line["customer_request_id"], raw=True)
        return [{**line, "output": result.data}]

    def abandoned(self, unit: Unit) -> list[dict[str, Any]]:
        """The model may have run it: never re-sent."""
        return [_in_flight_line(unit.lines[0], "was in flight when the batch stopped")]

    def progress_extra(self) -> tuple[Any, ...]:
        return ()


def _in_flight_line(intent: dict[str, Any], when: str) -> dict[str, Any]:
    return {
        "index": intent["index"],
        "input_id": intent.get("input_id"),
        "input_fp": intent.get("input_fp"),
        "error": {
            "type": "Cancelled",
            "message": f"The predict {when}; the model may have run, so it is not re-sent on a retry.",
            "status_code": None,
            "request_id": None,
            "model_may_have_run": True,
        },
    }

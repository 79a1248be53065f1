"""The steps of one try of a journaled batch operator (batch predict, embeddings, rerank, classify).

Every such ``execute`` is the same sequence: take stock of what earlier tries wrote (``on_rerun``), run the
shared send loop (``_send_loop``) over the operator's job into the output journal (``_batch_journal``), count the
whole output into the manifest, then decide the outcome (a failed write, an error every input would hit, an early
stop, ``max_failed_fraction``). :class:`BatchRunMixin` holds those steps once; an operator says what it calls its
inputs and whether a unit in flight when a try ended is sent again (no side effects) or never re-sent (the model
may have run it), and its ``execute`` builds its job and calls the steps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_baseten.exceptions import BasetenConfigError, BasetenError
from airflow_provider_baseten.operators._batch_journal import BatchOutput, Existing, find_stale
from airflow_provider_baseten.operators._event_loop import run_to_end
from airflow_provider_baseten.operators._send_loop import Job, RunState, SendLoop
from airflow_provider_baseten.operators._storage import as_path, storage_uri, warn_if_not_shared

if TYPE_CHECKING:
    from pathlib import Path

    from airflow.providers.common.compat.sdk import Context, ObjectStoragePath

    from airflow_provider_baseten.hooks.addressing import Target
    from airflow_provider_baseten.operators._batch_inputs import Source

__all__ = ["BatchRunMixin", "Try", "Wording", "default_output_path", "is_rerun"]

Line = dict[str, Any]


class Wording:
    """How an operator's messages name its run and its inputs (``"batch"``, ``"inputs"``, ``"predicted"``)."""

    __slots__ = ("id_key", "items", "results", "run", "sent", "title")

    def __init__(self, *, title: str, run: str, items: str, sent: str, results: str, id_key: str) -> None:
        self.title = title  # "Batch", as in "Batch finished"
        self.run = run  # "batch", as in "The batch stopped early"
        self.items = items  # "inputs"
        self.sent = sent  # "predicted", as in "every input is predicted"
        self.results = results  # "results", as in "Writing the results to ... failed"
        self.id_key = id_key  # the line's id key, "input_id" or "id"


@dataclass(slots=True)
class Try:
    """One try of a batch operator: its target, inputs, output (path and journal), run state and start time."""

    target: Target
    source: Source
    path: ObjectStoragePath | Path
    output: BatchOutput
    state: RunState
    started: float

    @property
    def existing(self) -> Existing:
        """What earlier tries left (``state.existing``)."""
        return self.state.existing


class BatchRunMixin:
    """The shared steps of a journaled batch ``execute`` (see the module docstring); mixed into the operator.

    The operator provides ``on_rerun``, ``max_failed_fraction``, ``hook``, ``log``, ``_clock``, ``_sleep`` and the
    send loop's parameters (``_send_loop.Host``).
    """

    wording: Wording
    #: Whether a unit in flight when an earlier try ended (an intent without a line) is sent again: ``True`` when
    #: the call has no side effects (the job releases it), ``False`` when the model may have run it (the job's
    #: ``earlier`` lines write it as an error instead).
    resends_in_flight: bool
    #: Retries the whole try affords per request sent (at least 10; 429/529 spend none): one ``RetryBudget``.
    retry_budget_fraction = 0.05
    #: Injectable for tests: a monotonic clock and an async sleep (progress reporting and the kill grace period).
    _clock: Callable[[], float] = staticmethod(time.monotonic)
    _sleep: Callable[[float], Awaitable[None]] = staticmethod(asyncio.sleep)
    on_rerun: str
    max_failed_fraction: float
    max_concurrency: int
    _run_state: RunState | None
    log: Any
    hook: Any
    part_size: int
    part_interval: float
    target: Target
    check_active_before_sending: Callable[[Target, Context], None]
    _source: Callable[[], Source]
    _output_path: Callable[[Context], ObjectStoragePath | Path]

    def _begin(self, context: Context, per_request: int) -> Try:
        """Everything before the first send: the target, inputs and output; warn of a worker-local output, persist
        the link, take stock of earlier tries, check the deployment is active (may defer to activate it) and
        resolve the connection. Nothing is sent yet."""
        started = self._clock()
        target = self.target
        source = self._source()
        path = self._output_path(context)
        output = self._output_of(path)
        warn_if_not_shared(path, f"The {self.wording.run} output", self.log)
        if "ti" in context:
            from airflow_provider_baseten.operators.links import BasetenChainLink, BasetenModelLink

            (BasetenModelLink if target.kind == "model" else BasetenChainLink).persist(context, self)  # type: ignore[arg-type]
        existing = self._take_stock(output, source, rerun=is_rerun(context))
        self.log.info(
            "%s on %s: %s %s, %d per request, concurrency %d, output %s",
            self.wording.title,
            target.describe(),
            "?" if source.total is None else source.total,
            self.wording.items,
            per_request,
            self.max_concurrency,
            storage_uri(path),
        )
        self.check_active_before_sending(target, context)  # INACTIVE: every request would 404; may defer to activate
        self.hook.settings  # noqa: B018  (resolve the connection synchronously, before the event loop)
        state = self._run_state = RunState(existing=existing, total=source.total)
        return Try(target, source, path, output, state, started)

    def _output_of(self, path: ObjectStoragePath | Path) -> BatchOutput:
        """The journal the lines are written to (embeddings' Parquet output writes it beside the file)."""
        return BatchOutput.at(path, part_size=self.part_size, part_interval=self.part_interval)

    def _take_stock(self, output: BatchOutput, source: Source, *, rerun: bool) -> Existing:
        """What of an earlier try's output this try keeps, by ``on_rerun``; the rest is removed from the output."""
        words = self.wording
        if not output.exists():
            return Existing()
        if not rerun or self.on_rerun == "replace":
            self.log.info(
                "%s: replacing the existing output %s; every %s is %s.",
                "First try" if not rerun else "on_rerun='replace'",
                output.uri,
                words.items.rstrip("s"),
                words.sent,
            )
            output.delete()
            return Existing()
        loaded = output.load(self.log)
        stale = find_stale(loaded, source.fingerprints())
        if stale.first is not None:
            index, input_id = stale.first
            now = (
                f"is past the end of the {words.items}" if input_id is None else f"now has {words.id_key} {input_id!r}"
            )
            if self.on_rerun == "fail":
                raise BasetenConfigError(
                    f"The output at {output.uri} was written for other {words.items}: {stale.indices.count} lines do "
                    f"not match the current input at their index (first: index {index}, which {now}). "
                    "on_rerun='fail' does not mix them: move the output away, choose another output_path, or use "
                    f"on_rerun='resume' (sends only the changed {words.items}) or 'replace'."
                )
            self.log.warning(
                "%d lines of %s were written for other %s (first: index %d, which %s): they are dropped and those "
                "%s %s again.",
                stale.indices.count,
                output.uri,
                words.items,
                index,
                now,
                words.items,
                words.sent,
            )
        existing = output.compact(stale.indices, loaded)
        if not self.resends_in_flight:
            for index in existing.stranded:
                existing.done.add(index)  # written as may-have-run lines by the job's earlier lines, never re-sent
        if existing.kept or existing.stranded:
            self.log.info(
                "Resuming: %d %s already written to %s (%d failed); %d errors that never reached the model are "
                "sent again; %d were in flight when an earlier try ended and are %s.",
                existing.kept,
                words.items,
                output.uri,
                existing.failed,
                existing.dropped_retryable,
                len(existing.stranded),
                "sent again" if self.resends_in_flight else "not re-sent",
            )
        return existing

    def _loop(self, job: Job, state: RunState) -> SendLoop:
        """The send loop of this try; an operator may tune it (batch predict's worker start ramp)."""
        return SendLoop(self, job, state)  # type: ignore[arg-type]

    def _send_all(self, run: Try, job: Job, earlier: Iterable[Line] = ()) -> None:
        """Run the send loop to its end into the output (in-flight units are settled however it ends).

        The intents sidecar is forgotten only when every unit this try sent has its line.
        """
        state = run.state
        try:
            with run.output.open_sink(self._clock) as sink:
                run_to_end(self._loop(job, state).run(sink, earlier))
            if not state.in_flight and state.writer is not None and state.writer.error is None:
                run.output.forget_intents()
        finally:
            self._run_state = None

    def _raise_if_write_failed(self, run: Try) -> None:
        writer = run.state.writer
        if writer is not None and writer.error is not None:
            raise BasetenError(f"Writing the {self.wording.results} to {run.output.uri} failed.") from writer.error

    def _counts(self, run: Try) -> dict[str, int]:
        """``total``, ``succeeded``, ``failed`` and ``skipped_existing`` over the whole output (earlier tries too)."""
        source, state, existing = run.source, run.state, run.state.existing
        return {
            "total": source.total if source.total is not None else source.seen,
            "succeeded": existing.succeeded + state.succeeded,
            "failed": existing.failed + state.failed,
            "skipped_existing": existing.kept,
        }

    def _outcome(self, run: Try, manifest: dict[str, Any]) -> dict[str, Any]:
        """Log the manifest, then raise for a fatal error, an early stop or too many failures; else return it."""
        words, state = self.wording, run.state
        manifest["duration_s"] = round(self._clock() - run.started, 3)
        self.log.info("%s finished: %s", words.title, {**manifest, "parts": len(manifest.get("parts", ()))})
        self._raise_if_write_failed(run)
        if state.fatal is not None:
            self.log.error("Stopped at the first error that every request would hit; the rest is left for a retry.")
            raise state.fatal
        if state.stop_reason:
            raise BasetenError(f"The {words.run} stopped early: {state.stop_reason} Written so far: {manifest}.")
        total, failed = manifest["total"], manifest["failed"]
        if total and failed / total > self.max_failed_fraction:
            raise BasetenError(
                f"{failed} of {total} {words.items} failed ({failed / total:.1%}), over max_failed_fraction="
                f"{self.max_failed_fraction}; see the error lines in {run.output.uri}. A task retry re-sends only "
                "errors that never reached the model."
            )
        return manifest

    def on_kill(self) -> None:
        """Stop taking inputs; let in-flight requests finish for ``kill_grace_period``; written lines stay."""
        state = self._run_state
        if state is not None:
            state.request_stop("the task was killed (on_kill).")


def default_output_path(
    output_path: Any, context: Context | dict[str, Any], folder: str, suffix: str
) -> ObjectStoragePath | Path:
    """``output_path`` as a path, else ``{[baseten] output_location}/{folder}/{dag_id}/{run_id}/{task_id}...``."""
    if output_path not in (None, ""):
        return as_path(output_path)
    from airflow_provider_baseten.operators._results import required_location, task_result_path

    if "ti" not in context:
        raise BasetenConfigError("Pass output_path= when running outside a task instance.")
    base = required_location(None, folder)
    return as_path(task_result_path(context, base, suffix=suffix))  # type: ignore[arg-type]


def is_rerun(context: Context) -> bool:
    """Every try but the first (a retry or a clear). Outside a task instance (a bare ``execute({})``): none."""
    ti = context.get("ti") if hasattr(context, "get") else None
    try_number = getattr(ti, "try_number", None)
    return isinstance(try_number, int) and try_number > 1

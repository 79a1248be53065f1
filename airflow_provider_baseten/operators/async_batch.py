"""``BasetenAsyncBatchOperator``: thousands of async requests from one task, waited on by one trigger.

How it runs: the worker submits up to ``max_in_flight`` requests, paced by a token bucket shared by the process,
recording each in the manifest (``_async_manifest``: an intent before the send, the outcome after); then it defers
to one :class:`~airflow_provider_baseten.triggers.async_batch.BasetenAsyncBatchTrigger` whose kwargs are the
manifest's URI and plain values. The trigger only reads Baseten; when enough requests finished that more inputs
fit under ``max_in_flight``, it reports ``capacity`` and the task resumes on a worker, submits the next inputs and
defers again (rule 1 of the design: only the worker submits). Once every request is terminal the task ends with
counts per status and the manifest's URI.
"""

from __future__ import annotations

import concurrent.futures
import math
import string
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_baseten.exceptions import (
    BasetenAmbiguousSubmitError,
    BasetenAPIError,
    BasetenAsyncRequestError,
    BasetenAuthError,
    BasetenConfigError,
    BasetenConnectionError,
    BasetenError,
    BasetenNotFoundError,
    BasetenRateLimitError,
)
from airflow_provider_baseten.operators._async_manifest import (
    NOT_SUBMITTED,
    RESUBMITTABLE,
    Manifest,
    cancel_record,
)
from airflow_provider_baseten.operators._base import (
    ADDRESS_TEMPLATE_FIELDS,
    BasetenBaseOperator,
    check_literal_async_options,
    check_seconds,
    is_templated,
)
from airflow_provider_baseten.operators._event_loop import run_to_end
from airflow_provider_baseten.operators.links import BasetenChainLink, BasetenModelLink
from airflow_provider_baseten.triggers._deliveries import check_outputs_location

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context, ObjectStoragePath

    from airflow_provider_baseten.hooks.addressing import Target
    from airflow_provider_baseten.hooks.ratelimit import TokenBucket
    from airflow_provider_baseten.operators._batch_inputs import Item, Source

__all__ = ["BasetenAsyncBatchOperator"]

MANIFESTS_FOLDER = "baseten-async-batches"
#: Baseten's async submit limit (requests per second per organization): the most ``submit_rate`` and its burst may take.
SUBMIT_LIMIT = 200.0
#: A wave (one intents part, its sends, one outcomes part) holds about this many seconds of submits: a worker
#: killed mid-wave leaves at most one wave of inputs ``AMBIGUOUS`` (never re-sent).
WAVE_SECONDS = 0.5
#: Consecutive waves in which nothing was accepted (every submit refused with 429) before the task stops submitting.
MAX_IDLE_WAVES = 10
_OUTPUT_FIELDS = frozenset({"index", "input_id"})


class BasetenAsyncBatchOperator(BasetenBaseOperator):
    """Submit one async request per input (model or chain) and wait for all of them with one trigger.

    **Inputs.** ``inputs`` (a templated list) or ``input_path`` (a JSONL file at a local path or any
    ``ObjectStoragePath`` URI), with ``id_field``/``input_field`` as in
    :class:`~airflow_provider_baseten.operators.batch.BasetenBatchPredictOperator`. Every record must be a JSON
    object (an async ``model_input``).

    **The manifest** (``manifest_location``, default ``{[baseten] output_location}/baseten-async-batches/{dag_id}/
    {run_id}/{task_id}[-{map_index}]/``) records per input index: the request id, status, timestamps and errors, in
    whole-object JSONL parts plus a small ``index.json``. Before each wave of submits an intent line per input is
    written, after it the outcomes. The task returns ``{manifest_uri, total, counts, succeeded, failed}``.

    **Cost, retries, crashes.** Every accepted submit is billed work. A task retry (or a re-run on the same
    manifest) continues from the manifest: accepted requests are waited on, never submitted again; an input whose
    submit may have reached Baseten (a kill between the intent and the outcome, a read timeout, a 502) is recorded
    ``AMBIGUOUS`` and never re-sent; inputs never submitted are submitted. Inputs that ended ``FAILED``,
    ``EXPIRED``, ``CANCELED``, ``WEBHOOK_FAILED`` or ``LOST`` (Baseten forgot the id, 404) are submitted again on a
    retry only when ``resubmit`` names their status. A worker SIGKILLed mid-submit costs at most one wave of
    ``AMBIGUOUS`` inputs (about half a second of submits).

    **Limits.** Submits are paced by ``submit_rate`` (shared by every operator of the process with the same rate),
    429s honour ``Retry-After`` and halve the rate (AIMD); at most ``max_in_flight`` requests are ``QUEUED`` or
    ``IN_PROGRESS`` at once (Baseten's organization limit is 50,000): the rest are submitted as earlier ones finish.
    Status reads share the connection's status budget (``status_rate_limit``, 15 req/s) with every other wait.

    **Success.** Only ``SUCCEEDED`` counts as a success; the task fails with
    :class:`~airflow_provider_baseten.exceptions.BasetenAsyncRequestError` (carrying the result) when more than
    ``max_failed_fraction`` of the inputs did not succeed. ``timeout``/``execution_timeout`` become one absolute
    deadline, also enforced while deferred: at the deadline the queued requests are canceled and the task fails.
    Killing the task cancels the requests still ``QUEUED`` (inside the status budget) and records the outcomes.

    :param model_id: the model to call (templated); exactly one of ``model_id`` and ``chain_id``.
    :param chain_id: the chain to run (templated).
    :param environment: ``production`` (default), ``development`` or a named environment (templated).
    :param deployment_id: pin one deployment instead of an environment (templated).
    :param inputs: the inputs (templated): a list of JSON objects, or a JSON string of one.
    :param input_path: a JSONL file of inputs (templated).
    :param id_field: key of each record whose value is its ``input_id`` in the manifest (default: the index).
    :param input_field: key of each record whose value is sent as ``model_input`` (default: the record).
    :param webhook_endpoint: HTTPS URL Baseten posts each output to (templated).
    :param webhook_outputs: where the :class:`~airflow_provider_baseten.webhooks.WebhookReceiver` behind
        ``webhook_endpoint`` stores the deliveries (``URI[/prefix]``, templated; needs ``webhook_endpoint``): the
        trigger lists it each interval and ends a delivered request without a status read (its manifest entry
        records the output's URI); requests with no delivery are read once the queue holds none of the batch.
    :param priority: 0 (default; runs first), 1 or 2.
    :param max_time_in_queue_seconds: 10 to 259200; default: the time left before the deadline, else the maximum
        (the batch bounds its own queue with ``max_in_flight``; Baseten's 600 s would expire later inputs).
    :param inference_retry_config: how Baseten retries the model's 5xx (as the single async operator).
    :param output_uri_template: where the model writes each output, recorded per input in the manifest
        (templated; ``{index}`` and ``{input_id}`` are filled per input), e.g. ``s3://b/out/{input_id}.json``.
    :param submit_rate: submits per second (default 50; Baseten allows 200).
    :param submit_concurrency: submits in flight at once (threads; default 8).
    :param max_in_flight: requests queued or running at once (default 1000).
    :param poll_interval: seconds between status rounds (default 30, jittered).
    :param timeout: seconds (or a ``timedelta``) the whole batch may take; with ``execution_timeout``, one deadline.
    :param resubmit: statuses a task retry submits again, from ``FAILED``, ``EXPIRED``, ``LOST``, ``CANCELED``,
        ``WEBHOOK_FAILED`` (default none).
    :param max_failed_fraction: the task fails when more than this fraction of inputs did not succeed (default 0).
    :param manifest_location: where the manifest lives (templated): a local path, URI or ``ObjectStoragePath``.
    :param deferrable: wait in the triggerer (default); ``False`` waits on the worker with the same loop.
    :param cancel_on_kill: cancel the queued requests when a user kills the task (default).
    """

    template_fields: Sequence[str] = (
        *ADDRESS_TEMPLATE_FIELDS,
        "inputs",
        "input_path",
        "webhook_endpoint",
        "webhook_outputs",
        "output_uri_template",
        "manifest_location",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"inputs": "json"}
    operator_extra_links = (BasetenModelLink(), BasetenChainLink())
    ui_color = "#e8e5ff"

    # Test seams (not serialized): the pacing clock and sleep (monotonic), and the wall clock of deadlines.
    _clock = staticmethod(time.monotonic)
    _sleep = staticmethod(time.sleep)
    _wall = staticmethod(time.time)

    def __init__(
        self,
        *,
        inputs: list[Any] | str | None = None,
        input_path: str | ObjectStoragePath | None = None,
        id_field: str | None = None,
        input_field: str | None = None,
        webhook_endpoint: str | None = None,
        webhook_outputs: str | None = None,
        priority: int = 0,
        max_time_in_queue_seconds: int | None = None,
        inference_retry_config: dict[str, int] | None = None,
        output_uri_template: str | None = None,
        submit_rate: float = 50.0,
        submit_concurrency: int = 8,
        max_in_flight: int = 1000,
        poll_interval: float = 30.0,
        timeout: float | timedelta | None = None,
        resubmit: Iterable[str] = (),
        max_failed_fraction: float = 0.0,
        manifest_location: str | ObjectStoragePath | None = None,
        deferrable: bool = True,
        cancel_on_kill: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (inputs is None) == (input_path is None):
            raise BasetenConfigError("Pass exactly one of inputs= (a list) and input_path= (a JSONL file).")
        if isinstance(inputs, list) and not inputs:
            raise BasetenConfigError("inputs is an empty list: there is nothing to submit.")
        self.inputs = inputs
        self.input_path = input_path
        self.id_field = id_field
        self.input_field = input_field
        self.webhook_endpoint = webhook_endpoint
        if webhook_outputs is not None:
            if webhook_endpoint is None:
                raise BasetenConfigError(
                    "webhook_outputs needs webhook_endpoint=: without a webhook nothing is delivered to the store."
                )
            if not is_templated(webhook_outputs):
                check_outputs_location(webhook_outputs)
        self.webhook_outputs = webhook_outputs
        self.priority = priority
        self.max_time_in_queue_seconds = max_time_in_queue_seconds
        self.inference_retry_config = inference_retry_config
        check_literal_async_options(self)
        self.output_uri_template = output_uri_template
        if output_uri_template is not None and not is_templated(output_uri_template):
            _check_output_template(output_uri_template)
        number = isinstance(submit_rate, int | float) and not isinstance(submit_rate, bool)
        if not number or not 0 < submit_rate <= SUBMIT_LIMIT:
            raise BasetenConfigError(
                f"submit_rate must be a number of submits a second above 0 and at most Baseten's limit of 200, got "
                f"{submit_rate!r}."
            )
        self.submit_rate = float(submit_rate)
        for name, count in (("submit_concurrency", submit_concurrency), ("max_in_flight", max_in_flight)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise BasetenConfigError(f"{name} must be a positive integer, got {count!r}.")
        if max_in_flight > 50_000:
            raise BasetenConfigError(f"max_in_flight={max_in_flight} is over Baseten's organization limit of 50,000.")
        self.submit_concurrency = submit_concurrency
        self.max_in_flight = max_in_flight
        self.poll_interval = check_seconds(poll_interval, "poll_interval")
        self.timeout = None if timeout is None else check_seconds(timeout, "timeout")
        self.resubmit = tuple(resubmit)
        unknown = sorted(set(self.resubmit) - RESUBMITTABLE)
        if unknown:
            raise BasetenConfigError(
                f"resubmit names {unknown}; only {sorted(RESUBMITTABLE)} can be submitted again (AMBIGUOUS inputs "
                "never are: they may already run)."
            )
        if isinstance(max_failed_fraction, bool) or not isinstance(max_failed_fraction, int | float):
            raise BasetenConfigError(f"max_failed_fraction must be a number from 0 to 1, got {max_failed_fraction!r}.")
        if not 0.0 <= max_failed_fraction <= 1.0:
            raise BasetenConfigError(f"max_failed_fraction must be a number from 0 to 1, got {max_failed_fraction!r}.")
        self.max_failed_fraction = float(max_failed_fraction)
        self.manifest_location = manifest_location
        self.deferrable = deferrable
        self.cancel_on_kill = cancel_on_kill
        self._manifest: Manifest | None = None
        self._deadline: float | None = None
        self._stopping = False  # a plain flag: operators are deep-copied, an Event (a lock) cannot be

    # --- execute ------------------------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        """A new try: load the manifest, mark the inputs ``resubmit`` names, submit up to the cap, then wait."""
        manifest, source, total = self._prepare(context)
        again = {index for index, entry in manifest.entries.items() if entry.status in self.resubmit and index < total}
        if again:
            self.log.info("Submitting %d inputs again (resubmit=%s).", len(again), list(self.resubmit))
        summary = manifest.counts(total)
        if len(manifest.entries):
            self.log.info("Resuming from the manifest %s: %s", manifest.uri, summary)
        return self._submit_and_wait(context, manifest, source, total, again)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """The trigger's one event: ``capacity`` (submit more), ``done``, ``timeout`` (cancel, fail) or ``error``."""
        event = _validated_event(event)
        manifest, source, total = self._prepare(context, deadline=event.get("deadline"))
        return self._after_wait(context, event, manifest, source, total)

    def _prepare(self, context: Context, deadline: float | None = None) -> tuple[Manifest, Source, int]:
        from airflow_provider_baseten.hooks.async_requests import task_deadline

        target = self.target
        source = self._source()
        if "ti" in context:
            (BasetenModelLink if target.kind == "model" else BasetenChainLink).persist(context, self)
        # After a deferral the deadline comes back in the event: a resumed try must not restart its timeout.
        self._deadline = deadline
        if deadline is None:
            self._deadline = task_deadline(
                context, self._wall(), timeout=self.timeout, execution_timeout=self.execution_timeout
            )
        manifest = self._manifest = Manifest(self._manifest_uri(context)).load()
        manifest.check_inputs(source.fingerprints())  # one pass over the inputs, which also counts them
        total = source.seen
        if total == 0:
            raise BasetenConfigError("The batch has no inputs: there is nothing to submit.")
        return manifest, source, total

    def _submit_and_wait(
        self, context: Context, manifest: Manifest, source: Source, total: int, again: set[int] | frozenset[int]
    ) -> dict[str, Any]:
        while True:
            if not manifest.entries:  # INACTIVE: every submit would 404; fails naming the option, or activates
                self.check_active_before_sending(self.target, context)
            self._submit(manifest, source, total, again)
            again = frozenset()
            remaining = _unsubmitted(manifest, total)
            in_flight = len(manifest.in_flight())
            manifest.write_index(target=self.target.to_kwargs(), total=total)
            if in_flight == 0 and (remaining == 0 or self._stopping):
                return self._finish(manifest, total)
            if in_flight == 0:
                raise BasetenRateLimitError(
                    f"No submit of the batch was accepted in {MAX_IDLE_WAVES} waves (every one refused with 429, or "
                    f"never reached Baseten); {remaining} inputs are left for a task retry, which continues from "
                    f"{manifest.uri}."
                )
            refill_below = None
            if remaining and not self._stopping:
                refill_below = max(0, self.max_in_flight - min(remaining, max(1, self.max_in_flight // 4)))
            self.log.info(
                "%d requests in flight, %d inputs not submitted yet; %s.",
                in_flight,
                remaining,
                "deferring to the triggerer" if self.deferrable else "waiting on the worker",
            )
            trigger = self._trigger(manifest, total, refill_below)
            if self.deferrable:
                from airflow_provider_baseten.hooks.async_requests import defer_timeout

                self.defer(
                    trigger=trigger,
                    method_name="execute_complete",
                    timeout=defer_timeout(self._deadline, self._wall(), self.poll_interval),
                )
            event = run_to_end(self._wait_here(trigger, manifest))
            if event["status"] != "capacity":
                return self._after_wait(context, event, manifest, source, total)

    async def _wait_here(self, trigger: Any, manifest: Manifest) -> dict[str, Any]:
        """``deferrable=False``: the trigger's loop, run on the worker over the in-memory manifest."""
        from airflow_provider_baseten.hooks.baseten import close_shared_async_clients

        trigger._manifest = manifest
        try:
            return next(iter([event.payload async for event in trigger.run()]))
        finally:
            await close_shared_async_clients()

    def _after_wait(
        self, context: Context, event: dict[str, Any], manifest: Manifest, source: Source, total: int
    ) -> dict[str, Any]:
        status = event["status"]
        if status in ("capacity", "done") and _unsubmitted(manifest, total) and not self._stopping:
            return self._submit_and_wait(context, manifest, source, total, frozenset())
        if status == "timeout":
            self.log.warning("The batch's deadline passed: canceling its queued requests.")
            self._cancel_queued(manifest)
            raise BasetenAsyncRequestError(
                f"The async batch did not finish before the task's deadline: {manifest.counts(total)} "
                f"(manifest {manifest.uri}).",
                manifest=self._result(manifest, total),
            )
        if status == "error":
            raise BasetenAsyncRequestError(
                f"{event.get('message')} Manifest: {manifest.uri}.", manifest=self._result(manifest, total)
            )
        return self._finish(manifest, total)

    def _trigger(self, manifest: Manifest, total: int, refill_below: int | None) -> Any:
        from airflow_provider_baseten.triggers.async_batch import BasetenAsyncBatchTrigger

        return BasetenAsyncBatchTrigger(
            manifest_uri=manifest.uri,
            total=total,
            baseten_conn_id=self.baseten_conn_id,
            **self.target.to_kwargs(),
            poll_interval=self.poll_interval,
            deadline=self._deadline,
            refill_below=refill_below,
            cancel_on_kill=self.cancel_on_kill,
            webhook_outputs=None if self.webhook_outputs is None else check_outputs_location(self.webhook_outputs),
        )

    def _result(self, manifest: Manifest, total: int) -> dict[str, Any]:
        counts = manifest.counts(total)
        succeeded = counts.get("SUCCEEDED", 0)
        return {
            "manifest_uri": manifest.uri,
            "total": total,
            "counts": counts,
            "succeeded": succeeded,
            "failed": total - succeeded,
        }

    def _finish(self, manifest: Manifest, total: int) -> dict[str, Any]:
        manifest.write_index(target=self.target.to_kwargs(), total=total)
        result = self._result(manifest, total)
        self.log.info("Async batch finished: %s", result)
        fraction = result["failed"] / total
        if fraction > self.max_failed_fraction:
            raise BasetenAsyncRequestError(
                f"{result['failed']} of {total} inputs did not succeed ({fraction:.1%}), over max_failed_fraction="
                f"{self.max_failed_fraction}: {result['counts']}. See {manifest.uri}; a retry submits again only the "
                f"statuses resubmit= names (now {list(self.resubmit)}).",
                manifest=result,
            )
        return result

    # --- inputs and the manifest's place --------------------------------------------------------------------------

    def _source(self) -> Source:
        from airflow_provider_baseten.operators.batch import BasetenBatchPredictOperator

        # The batch operator's reading of inputs= / input_path= / id_field / input_field, unchanged.
        return BasetenBatchPredictOperator._source(self)  # type: ignore[arg-type]

    def _manifest_uri(self, context: Context) -> str:
        from airflow_provider_baseten.operators._results import required_location, task_result_path
        from airflow_provider_baseten.operators._storage import storage_uri, warn_if_not_shared

        if self.manifest_location not in (None, ""):
            from airflow_provider_baseten.operators._storage import as_path

            path = as_path(self.manifest_location)  # type: ignore[arg-type]
        else:
            if "ti" not in context:
                raise BasetenConfigError("Pass manifest_location= when running outside a task instance.")
            path = task_result_path(context, required_location(None, MANIFESTS_FOLDER), suffix="")
        warn_if_not_shared(path, "The async batch manifest", self.log)
        return storage_uri(path)

    # --- submitting -------------------------------------------------------------------------------------------------

    def _bucket(self) -> TokenBucket:
        from airflow_provider_baseten.hooks.ratelimit import shared_sync_bucket

        key = ("async_submit", self.hook.settings, self.submit_rate)
        return shared_sync_bucket(key, self.submit_rate, clock=self._clock, sleep=self._sleep, limit=SUBMIT_LIMIT)

    def _candidates(self, manifest: Manifest, source: Source, again: set[int] | frozenset[int]) -> Iterator[Item]:
        for item in source.items():
            entry = manifest.entries.get(item.index)
            fresh = entry is None or entry.status == NOT_SUBMITTED
            if fresh or (item.index in again and entry.terminal and entry.status in self.resubmit):  # type: ignore[union-attr]
                yield item

    def _submit(self, manifest: Manifest, source: Source, total: int, again: set[int] | frozenset[int]) -> None:
        """Submit inputs in waves until ``max_in_flight`` is reached, the inputs end, or a stop."""
        target, bucket = self.target, self._bucket()
        wave_size = max(self.submit_concurrency, math.ceil(self.submit_rate * WAVE_SECONDS))
        candidates = self._candidates(manifest, source, again)
        idle, released = 0, False
        with concurrent.futures.ThreadPoolExecutor(self.submit_concurrency, "baseten-submit") as pool:
            while not self._stopping and idle < MAX_IDLE_WAVES:
                room = self.max_in_flight - len(manifest.in_flight())
                wave = [item for _, item in zip(range(min(room, wave_size)), candidates, strict=False)]
                if not wave and room > 0 and released:
                    # inputs refused with 429 are NOT_SUBMITTED again: one more pass over the inputs for them
                    candidates, released = self._candidates(manifest, source, again), False
                    continue
                if not wave:
                    return
                accepted, refused = self._wave(manifest, target, wave, bucket, pool)
                idle = 0 if accepted else idle + 1
                released = released or refused > 0

    def _wave(
        self,
        manifest: Manifest,
        target: Target,
        wave: list[Item],
        bucket: TokenBucket,
        pool: concurrent.futures.ThreadPoolExecutor,
    ) -> tuple[int, int]:
        """One wave: intents (durable) -> concurrent sends -> outcomes. Returns (accepted, released) counts."""
        requests, outcomes = {}, []
        for item in wave:
            attempt = manifest.entries[item.index].attempt + 1 if item.index in manifest.entries else 0
            try:
                if item.error is not None:
                    raise BasetenConfigError(item.error["message"])
                requests[item.index] = (attempt, self._request(target, item), self._output_uri(item))
            except BasetenError as err:
                outcomes.append(_outcome("rejected", item.index, attempt, error=_error(err)))
        manifest.write(
            [
                {"event": "intent", "index": item.index, "attempt": requests[item.index][0]}
                | {"input_fp": item.fingerprint, "input_id": item.input_id}
                for item in wave
                if item.index in requests
            ]
        )
        futures = {
            pool.submit(self._send, target, request, bucket): (index, attempt, uri)
            for index, (attempt, request, uri) in requests.items()
        }
        fatal: list[BaseException] = []
        handled: set[concurrent.futures.Future[tuple[str, Any]]] = set()

        def record(future: concurrent.futures.Future[tuple[str, Any]]) -> None:
            handled.add(future)
            index, attempt, uri = futures[future]
            event, detail = future.result()
            if event == "fatal":
                fatal.append(detail)
                self._stopping = True
                event = "released"
            outcome = _outcome(event, index, attempt)
            if event == "accepted":
                outcome["request_id"] = detail
                if uri:
                    outcome["output_uri"] = uri
            elif event != "released":
                outcome["error"] = _error(detail)
            outcomes.append(outcome)

        try:
            for future in concurrent.futures.as_completed(futures):
                record(future)
        finally:
            if len(handled) < len(futures):
                # execution_timeout or SIGTERM interrupted the wave: sends not started are released, those in
                # flight finish (bounded by the hook's timeouts) and are recorded like the rest.
                self._stopping = True
                concurrent.futures.wait(futures)
                for future in futures:
                    if future not in handled:
                        record(future)
            manifest.write(outcomes)
        if fatal:
            raise fatal[0]
        events = [record["event"] for record in outcomes]
        return events.count("accepted"), events.count("released")

    def _send(self, target: Target, request: Any, bucket: TokenBucket) -> tuple[str, Any]:
        """One paced submit: ``(event, request id | error)``; the hook already retried what provably never ran."""
        from airflow_provider_baseten.hooks.ratelimit import budget_feedback

        if self._stopping:
            return "released", None
        granted = bucket.acquire()
        try:
            with budget_feedback(bucket, granted):
                return "accepted", self.hook.async_predict(target, request).request_id
        except BasetenRateLimitError:
            return "released", None  # 429 after the hook's retries: never queued, sent again in a later wave
        except (BasetenAuthError, BasetenNotFoundError) as err:
            return "fatal", err  # every input would meet it: stop, leave the rest for a retry
        except BasetenConnectionError as err:
            return ("released", None) if err.never_sent else ("ambiguous", err)
        except BasetenAmbiguousSubmitError as err:
            return "ambiguous", err
        except BasetenAPIError as err:
            if (err.status_code or 500) >= 500:
                return "ambiguous", err
            return "rejected", err
        except Exception as err:  # unknown: it may have been queued
            return "ambiguous", err

    def _request(self, target: Target, item: Item) -> Any:
        from airflow_provider_baseten.hooks.async_requests import (
            MAX_QUEUE_SECONDS,
            build_async_request,
            default_queue_seconds,
        )

        queue_seconds = self.max_time_in_queue_seconds
        if queue_seconds is None:
            # max_in_flight bounds the queue, not Baseten's 600 s default: a batch's later inputs wait their turn.
            queue_seconds = default_queue_seconds(self._deadline, self._wall()) or MAX_QUEUE_SECONDS
        return build_async_request(
            target,
            item.payload,
            webhook_endpoint=self.webhook_endpoint,
            priority=self.priority,
            max_time_in_queue_seconds=queue_seconds,
            inference_retry_config=self.inference_retry_config,
        )

    def _output_uri(self, item: Item) -> str | None:
        if not self.output_uri_template:
            return None
        return _check_output_template(self.output_uri_template).format(index=item.index, input_id=item.input_id)

    # --- kill ---------------------------------------------------------------------------------------------------

    def on_kill(self) -> None:
        """Stop submitting; cancel the requests still ``QUEUED`` (inside the status budget); record the outcomes."""
        self._stopping = True
        manifest = self._manifest
        if manifest is None or not self.cancel_on_kill:
            return
        try:
            self._cancel_queued(manifest)
        except Exception as err:
            self.log.warning("Could not cancel the batch's queued requests: %s: %s", type(err).__name__, err)

    def _cancel_queued(self, manifest: Manifest, chunk: int = 100) -> None:
        """Cancel what the manifest last saw ``QUEUED``, recording outcomes every ``chunk`` cancels."""
        from airflow_provider_baseten.hooks.models import AsyncRequestStatus

        target = self.target
        queued = [entry for entry in manifest.in_flight() if entry.status == AsyncRequestStatus.QUEUED]
        for start in range(0, len(queued), chunk):
            records = []
            for entry in queued[start : start + chunk]:
                assert entry.request_id is not None
                try:
                    outcome: Any = self.hook.cancel_async_request(target, entry.request_id)
                except Exception as err:
                    outcome = err
                records.append(cancel_record(entry, outcome))
            manifest.write(records)
        self.log.info("Asked Baseten to cancel %d queued requests of the batch.", len(queued))


def _unsubmitted(manifest: Manifest, total: int) -> int:
    return manifest.counts(total).get(NOT_SUBMITTED, 0)


def _outcome(event: str, index: int, attempt: int, **fields: Any) -> dict[str, Any]:
    return {"event": event, "index": index, "attempt": attempt, **fields}


def _error(err: Any) -> dict[str, Any]:
    return {
        "type": type(err).__name__,
        "message": str(err)[:500],
        "status_code": getattr(err, "status_code", None),
    }


def _check_output_template(template: str) -> str:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise BasetenConfigError(f"output_uri_template {template!r} is not a valid template: {err}") from None
    unknown = sorted(names - _OUTPUT_FIELDS)
    if unknown:
        raise BasetenConfigError(f"output_uri_template may use only {{index}} and {{input_id}}; it names {unknown}.")
    return template


def _validated_event(event: Any) -> dict[str, Any]:
    from airflow_provider_baseten.triggers.async_batch import BATCH_EVENT_STATUSES

    if not isinstance(event, dict) or event.get("status") not in BATCH_EVENT_STATUSES:
        raise BasetenAsyncRequestError(
            f"The task resumed without a valid batch trigger event (got {event!r:.200}); the batch's outcome is "
            "unknown. A retry continues from the manifest."
        )
    return event

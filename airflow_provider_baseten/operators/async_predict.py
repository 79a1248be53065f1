"""``BasetenAsyncPredictOperator``: submit an async request on the worker, wait for it on the worker or in the
triggerer, and survive retries, restarts, kills and timeouts without losing or duplicating paid work."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import ResumableJobMixin, conf

from airflow_provider_baseten.exceptions import BasetenAsyncRequestError, BasetenConfigError, BasetenNotFoundError
from airflow_provider_baseten.hooks.async_requests import (
    AsyncRequestWatch,
    build_async_request,
    build_manifest,
    cancel_quietly,
    default_queue_seconds,
    defer_timeout,
    event_for_state,
    is_success,
    is_terminal,
    manifest_or_raise,
    parse_timestamp,
    reattach_supported,
    task_deadline,
    validate_event,
    wait_sync,
)
from airflow_provider_baseten.operators._base import (
    ADDRESS_TEMPLATE_FIELDS,
    BasetenBaseOperator,
    check_literal_async_options,
    check_seconds,
)
from airflow_provider_baseten.operators.links import BasetenAsyncRequestLink

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_baseten.hooks.models import AsyncPredictRequest, AsyncRequestState

#: Below Airflow 3.3 ``ResumableJobMixin`` is common-compat's stand-in: no task state store, no re-attach.
REATTACH_SUPPORTED: bool = reattach_supported()
#: Task-state-store key marking that the stored request already finished this task green (see resubmit_on_clear).
DONE_KEY = "baseten_async_request_done"
#: What :meth:`get_job_status` reports for a stored request Baseten no longer knows (404): submit fresh.
_GONE = "NOT_FOUND"


class BasetenAsyncPredictOperator(ResumableJobMixin, BasetenBaseOperator):
    """Submit an async prediction (``async_predict`` for a model, ``async_run_remote`` for a chain) and wait for it.

    The request is validated before anything is sent (ranges, webhook URL, the 256 KiB body limit). The submit
    happens on the worker; the ``request_id`` goes to XCom (key ``request_id``, and the extra link) and, on Airflow
    3.3+, to the task state store. The status is then read once: an already finished request is not waited for.
    Otherwise the task waits on the worker or, with ``deferrable=True``, in the triggerer
    (:class:`~airflow_provider_baseten.triggers.baseten.BasetenAsyncRequestTrigger`); both use the same waiting loop,
    so ``poll_interval`` and ``timeout`` mean the same in either mode. The log shows every status change and, once a
    minute, the status, the time waited and the deployment's queue depth.

    Returns a manifest, never the prediction (Baseten keeps no async outputs; they go to the webhook, or wherever the
    model writes them): ``{request_id, model_id | chain_id, deployment_id, status, webhook_status, created_at,
    status_at, errors}``, plus ``output_uri`` when given. Only ``SUCCEEDED`` finishes green; ``FAILED``, ``EXPIRED``,
    ``CANCELED``, a status Baseten no longer knows (404 once its 1 h retention passed) and ``WEBHOOK_FAILED`` (unless
    ``fail_on_webhook_failure=False``) fail the task with
    :class:`~airflow_provider_baseten.exceptions.BasetenAsyncRequestError`, which carries the manifest.

    **Cost, retries, idempotency.** Every submit queues new, billed work. On Airflow 3.3+ (``durable=True``, the
    default) a task retry re-attaches instead of resubmitting: a stored request that is ``QUEUED`` or ``IN_PROGRESS``
    is waited for again, a ``SUCCEEDED`` one finishes the task without a new POST, and a ``FAILED``, ``EXPIRED``,
    ``CANCELED``, ``WEBHOOK_FAILED`` or forgotten (404) one is submitted fresh; any other error reading it fails the
    try. Below 3.3 there is no task state store: a crash between the submit and the deferral (or during a wait on
    the worker) means the retry submits again, and the task logs this once.

    **Timeouts and kills.** ``timeout`` and the task's ``execution_timeout`` become one absolute deadline, checked
    before every poll (also while deferred, where Airflow does not enforce ``execution_timeout``). At the deadline the
    request is canceled (best effort: Baseten cancels only ``QUEUED`` requests) and the task fails with
    :class:`~airflow_provider_baseten.hooks.async_requests.BasetenAsyncRequestTimeoutError`. A user who kills the task
    (mark failed/success, clear) cancels the request too: ``on_kill`` on the worker, the trigger's ``on_kill`` in the
    triggerer (Airflow 3.3+). A triggerer restart does not: the trigger resumes the wait without a new POST.

    **Models that write their own outputs.** Without a webhook, the model must persist its output itself: pass the
    destination in ``model_input`` and the same templated value as ``output_uri``, e.g.
    ``output_uri="s3://bucket/scores/{{ ds }}/{{ ti.map_index }}.json"``; the manifest then tells downstream tasks
    where to read. To receive outputs on a webhook, verify each delivery with
    :func:`airflow_provider_baseten.webhooks.verify_webhook_signature`.

    :param model_id: the model to call (templated); exactly one of ``model_id`` and ``chain_id``.
    :param chain_id: the chain to run (templated).
    :param environment: ``production`` (default), ``development`` or a named environment (templated).
    :param deployment_id: pin one deployment instead of an environment (templated).
    :param regional: use the regional host ``model-{id}-{environment}.api.baseten.co``.
    :param baseten_conn_id: the ``baseten`` connection (templated).
    :param model_input: the JSON object passed to the model's ``predict`` (templated; a JSON string is parsed).
    :param webhook_endpoint: HTTPS URL Baseten posts the output to (``http://localhost`` for development; templated).
    :param priority: 0 (default; runs first), 1 or 2.
    :param max_time_in_queue_seconds: 10 to 259200; past it the request ends ``EXPIRED``. Default: the time left
        before the deadline when there is one, else Baseten's default (600).
    :param inference_retry_config: how Baseten retries the model's 5xx:
        ``{"max_attempts": 1..10, "initial_delay_ms": 0..10000, "max_delay_ms": 0..60000}``.
    :param wait_for_completion: wait until the request ends (default); ``False`` returns the manifest right after
        the submit (and one status read).
    :param deferrable: wait in the triggerer without holding a worker slot; default from
        ``[operators] default_deferrable``.
    :param poll_interval: seconds between status reads (default 30, jittered by +/-25%). Every trigger of a
        triggerer shares one poll budget per connection (extra ``status_rate_limit``, default 15 req/s).
    :param timeout: how long to wait for the request, in seconds or a ``timedelta`` (default: no limit besides
        ``execution_timeout`` and ``max_time_in_queue_seconds``).
    :param fail_on_webhook_failure: fail on ``WEBHOOK_FAILED`` (the model ran but its output could not be
        delivered, so it is lost); ``False`` accepts it.
    :param resubmit_on_clear: on Airflow 3.3+, when a task whose request already succeeded is cleared by hand, submit
        new work (default). ``False`` returns the earlier request's manifest instead, as long as Baseten still knows
        it (1 h after completion). Retries after a failure always re-attach.
    :param output_uri: where the model writes its own output (templated); copied into the manifest.
    :param durable: (Airflow 3.3+, from ``ResumableJobMixin``) record the request in the task state store so retries
        re-attach (default ``True``).
    """

    template_fields: Sequence[str] = (*ADDRESS_TEMPLATE_FIELDS, "model_input", "webhook_endpoint", "output_uri")
    template_fields_renderers: ClassVar[dict[str, str]] = {"model_input": "json"}
    operator_extra_links = (BasetenAsyncRequestLink(),)
    external_id_key = "baseten_async_request_id"
    ui_color = "#e8e5ff"

    # Test seams (not serialized): the wall clock and the sleep of the wait on the worker.
    _clock = staticmethod(time.time)
    _sleep = staticmethod(time.sleep)
    _notice_logged: ClassVar[bool] = False

    def __init__(
        self,
        *,
        model_input: dict[str, Any] | str,
        webhook_endpoint: str | None = None,
        priority: int = 0,
        max_time_in_queue_seconds: int | None = None,
        inference_retry_config: dict[str, int] | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        timeout: float | timedelta | None = None,
        fail_on_webhook_failure: bool = True,
        resubmit_on_clear: bool = True,
        output_uri: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_input = model_input
        self.webhook_endpoint = webhook_endpoint
        self.priority = priority
        self.max_time_in_queue_seconds = max_time_in_queue_seconds
        self.inference_retry_config = inference_retry_config
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = check_seconds(poll_interval, "poll_interval")
        self.timeout = None if timeout is None else check_seconds(timeout, "timeout")
        self.fail_on_webhook_failure = fail_on_webhook_failure
        self.resubmit_on_clear = resubmit_on_clear
        self.output_uri = output_uri
        check_literal_async_options(self)
        self.request_id: str | None = None
        self._deadline: float | None = None
        self._request: AsyncPredictRequest | None = None
        self._known_state: AsyncRequestState | None = None
        self._started_at: float | None = None
        self._result: dict[str, Any] | None = None

    # --- execute -----------------------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        now = self._clock()
        self._deadline = task_deadline(context, now, timeout=self.timeout, execution_timeout=self.execution_timeout)
        self._request = self._validated_request(now)  # before any request, including a re-attach lookup
        if not REATTACH_SUPPORTED:
            self._notice_no_reattach()
        elif self.resubmit_on_clear:
            self._forget_finished_request(context)
        result = self.execute_resumable(context)
        # The SDK's mixin returns poll_until_complete()'s value when it re-attaches, get_job_result()'s otherwise.
        return self._result if self._result is not None else result  # type: ignore[no-any-return]

    def _validated_request(self, now: float) -> AsyncPredictRequest:
        queue_seconds = self.max_time_in_queue_seconds
        if queue_seconds is None:
            queue_seconds = default_queue_seconds(self._deadline, now)
        elif self._deadline is not None and queue_seconds > self._deadline - now:
            self.log.warning(
                "max_time_in_queue_seconds=%s is longer than the %.0f s left before the task's deadline: the request "
                "may still be queued when the task times out (it is then canceled).",
                queue_seconds,
                self._deadline - now,
            )
        return build_async_request(
            self.target,
            self.model_input,
            webhook_endpoint=self.webhook_endpoint,
            priority=self.priority,
            max_time_in_queue_seconds=queue_seconds,
            inference_retry_config=self.inference_retry_config,
        )

    def _notice_no_reattach(self) -> None:
        if not BasetenAsyncPredictOperator._notice_logged:
            BasetenAsyncPredictOperator._notice_logged = True
            self.log.warning(
                "This Airflow has no task state store (Airflow 3.3+): a retry cannot re-attach to a submitted async "
                "request, so a crash between the submit and the deferral (or during a wait on the worker) submits "
                "it again on retry, as new billed work."
            )

    def _forget_finished_request(self, context: Context) -> None:
        """A manual clear of a task that already finished green with its request: submit new work."""
        store: Any = context.get("task_state_store")  # Airflow 3.3+; absent from older Context types
        if store is None or not getattr(self, "durable", False):
            return
        stored = store.get(self.external_id_key)
        if stored and store.get(DONE_KEY) == stored:
            self.log.info(
                "Async request %s already finished an earlier run of this task (the task was cleared): submitting new "
                "work (resubmit_on_clear=True).",
                stored,
            )
            store.delete(self.external_id_key)

    # --- ResumableJobMixin -------------------------------------------------------------------------------------

    def submit_job(self, context: Context) -> str:
        """POST the request (once: retried only when it provably never reached Baseten)."""
        if self._request is None:
            self._request = self._validated_request(self._clock())
        request = self._request
        response = self.call_activating(self.target, lambda: self.hook.async_predict(self.target, request), context)
        self.request_id = response.request_id
        self._started_at = self._clock()
        self.log.info("Submitted async request %s to %s.", self.request_id, self.target.describe())
        return self.request_id

    def get_job_status(self, external_id: Any, context: Context) -> str:
        """Status of the request an earlier try stored (Airflow 3.3+). 404 means: submit fresh."""
        request_id = str(external_id)
        try:
            state = self.hook.get_async_request(self.target, request_id)
        except BasetenNotFoundError:
            self.log.info("Async request %s from an earlier try is no longer known to Baseten.", request_id)
            return _GONE
        if is_terminal(state.status) and state.known_status is None:
            raise BasetenAsyncRequestError(
                f"Async request {request_id} from an earlier try has status {state.status!r}, which this provider "
                "does not know; not submitting new work over it.",
                manifest=build_manifest(request_id, self.target, state, output_uri=self.output_uri),
            )
        self._known_state = state
        return state.status

    def is_job_active(self, status: str) -> bool:
        return status != _GONE and not is_terminal(status)

    def is_job_succeeded(self, status: str) -> bool:
        return is_success(status, fail_on_webhook_failure=self.fail_on_webhook_failure)

    def poll_until_complete(self, external_id: Any, context: Context) -> None:
        """Read the status once; finish if it ended, else wait on the worker or defer (raises ``TaskDeferred``)."""
        self.request_id = str(external_id)
        BasetenAsyncRequestLink.persist(context, self, self.request_id)
        watch = self._watch()
        outcome: AsyncRequestState | Exception
        if self._known_state is not None and self._known_state.request_id == self.request_id:
            outcome = self._known_state
        else:
            try:
                outcome = self.hook.get_async_request(self.target, self.request_id)
            except Exception as exc:
                outcome = exc
        step = watch.step(outcome, self._clock())
        if step.event is not None:
            self._result = self._finish(step.event, context)
        elif not self.wait_for_completion:
            self._result = build_manifest(self.request_id, self.target, watch.last_state, output_uri=self.output_uri)
            self._mark_done(context)
        elif self.deferrable:
            self._defer(watch)
        else:
            event = wait_sync(self.hook, watch, sleep=self._sleep, clock=self._clock, first_delay=step.delay)
            self._result = self._finish(event, context)

    def get_job_result(self, external_id: Any, context: Context) -> dict[str, Any]:
        if self._result is None:
            # A retry found the stored request already succeeded: finish with its manifest, no new POST.
            self.request_id = str(external_id)
            BasetenAsyncRequestLink.persist(context, self, self.request_id)
            state = self._known_state
            assert state is not None
            event = event_for_state(
                state, self.target, fail_on_webhook_failure=self.fail_on_webhook_failure, output_uri=self.output_uri
            )
            self._result = self._finish(event, context)
        assert self._result is not None
        return self._result

    # --- waiting -------------------------------------------------------------------------------------------------

    def _watch(self) -> AsyncRequestWatch:
        assert self.request_id is not None
        started_at = self._started_at
        if started_at is None and self._known_state is not None:  # re-attached: waited since the first submit
            started_at = parse_timestamp(self._known_state.created_at)
        return AsyncRequestWatch(
            target=self.target,
            request_id=self.request_id,
            poll_interval=self.poll_interval,
            deadline=self._deadline,
            started_at=started_at if started_at is not None else self._clock(),
            fail_on_webhook_failure=self.fail_on_webhook_failure,
            output_uri=self.output_uri,
            log=self.log,
        )

    def _defer(self, watch: AsyncRequestWatch) -> None:
        # Imported here, not at DAG parse: the trigger module pulls in Airflow's trigger base (~10 ms).
        from airflow_provider_baseten.triggers.async_request import BasetenAsyncRequestTrigger

        trigger = BasetenAsyncRequestTrigger.for_watch(watch, baseten_conn_id=self.baseten_conn_id)
        self.log.info("Deferring: the triggerer waits for %s.", watch.describe(self._clock()))
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            timeout=defer_timeout(watch.deadline, self._clock(), self.poll_interval),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger's one event: the allow-list decides; a ``timeout`` cancels first."""
        return self._finish(event, context)

    def _finish(self, event: Any, context: Context) -> dict[str, Any]:
        event = validate_event(event)
        self.request_id = event["request_id"]
        if event["status"] == "timeout":
            cancel_quietly(self.hook, self.target, self.request_id, self.log, "the task's deadline passed")
        manifest = manifest_or_raise(event)
        if manifest.get("status") != "SUCCEEDED":
            self.log.warning("%s", event["message"])
        else:
            self.log.info("%s", event["message"])
        self._mark_done(context)
        return manifest

    def _mark_done(self, context: Context) -> None:
        """Record that this task finished green with its request (a later manual clear then submits new work)."""
        store: Any = context.get("task_state_store")  # Airflow 3.3+; absent from older Context types
        if store is None or not REATTACH_SUPPORTED or not getattr(self, "durable", False):
            return
        try:
            store.set(DONE_KEY, self.request_id)
        except Exception as err:
            self.log.warning("Could not record async request %s as finished: %s", self.request_id, err)

    def on_kill(self) -> None:
        """Cancel the request when the task is killed on the worker (kill, or ``execution_timeout``)."""
        try:
            target = self.target
        except BasetenConfigError:
            return
        cancel_quietly(self.hook, target, self.request_id, self.log, "the task was killed")

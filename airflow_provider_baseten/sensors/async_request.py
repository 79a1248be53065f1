"""``BasetenAsyncRequestSensor``: wait for an async request that something else submitted."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowSensorTimeout, BaseSensorOperator, PokeReturnValue, conf

from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.hooks.addressing import validate_request_id
from airflow_provider_baseten.hooks.async_requests import (
    AsyncRequestWatch,
    PollStep,
    cancel_quietly,
    defer_timeout,
    manifest_or_raise,
    task_deadline,
    validate_event,
)
from airflow_provider_baseten.operators._base import ADDRESS_TEMPLATE_FIELDS, BasetenBaseOperator, check_seconds
from airflow_provider_baseten.operators.links import BasetenAsyncRequestLink

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class BasetenAsyncRequestSensor(BaseSensorOperator, BasetenBaseOperator):
    """Wait until an existing async request ends, and return its manifest.

    Pairs with ``BasetenAsyncPredictOperator(wait_for_completion=False)`` (``request_id`` from its XCom) or any
    request submitted elsewhere. It only reads, so a retry never submits anything. Same contract as the operator:
    ``SUCCEEDED`` returns the manifest ``{request_id, model_id | chain_id, deployment_id, status, webhook_status,
    created_at, status_at, errors}`` (plus ``output_uri`` when given); ``FAILED``, ``EXPIRED``, ``CANCELED``, a status
    Baseten no longer knows (404) and ``WEBHOOK_FAILED`` (unless ``fail_on_webhook_failure=False``) fail with
    :class:`~airflow_provider_baseten.exceptions.BasetenAsyncRequestError`.

    Pokes on the worker (``mode="poke"`` or ``"reschedule"``, every ``poke_interval`` seconds) or, with
    ``deferrable=True``, waits in the triggerer after one status read. ``timeout`` (the sensor's) and
    ``execution_timeout`` bound the wait; at the deadline the sensor fails with ``AirflowSensorTimeout`` and leaves
    the request alone: it belongs to whoever submitted it. Likewise a kill does not cancel it unless
    ``cancel_on_kill=True``.

    :param request_id: the async request to wait for (templated), e.g.
        ``"{{ ti.xcom_pull(task_ids='submit', key='request_id') }}"``.
    :param model_id: the model the request was sent to (templated); exactly one of ``model_id`` and ``chain_id``.
    :param chain_id: the chain the request was sent to (templated).
    :param environment: the environment it was sent to (templated); status reads go to the same host.
    :param deployment_id: the pinned deployment, if any (templated).
    :param regional: whether the request went to a regional host.
    :param baseten_conn_id: the ``baseten`` connection (templated).
    :param deferrable: wait in the triggerer; default from ``[operators] default_deferrable``.
    :param fail_on_webhook_failure: fail on ``WEBHOOK_FAILED`` (default); ``False`` accepts it.
    :param cancel_on_kill: cancel the request when a user kills this task (default ``False``: only watch).
    :param output_uri: where the model writes its own output (templated); copied into the manifest.
    :param poll_interval: seconds between status reads: the operators' name for the sensor's ``poke_interval``
        (default 60); pass one of the two.
    """

    template_fields: Sequence[str] = (*ADDRESS_TEMPLATE_FIELDS, "request_id", "output_uri")
    operator_extra_links = (BasetenAsyncRequestLink(),)
    ui_color = "#e8e5ff"

    _clock = staticmethod(time.time)

    def __init__(
        self,
        *,
        request_id: str,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        fail_on_webhook_failure: bool = True,
        cancel_on_kill: bool = False,
        output_uri: str | None = None,
        poll_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        if poll_interval is not None:
            if kwargs.get("poke_interval") is not None:
                raise BasetenConfigError("Pass poll_interval or poke_interval (the same setting), not both.")
            kwargs["poke_interval"] = check_seconds(poll_interval, "poll_interval")
        super().__init__(**kwargs)
        self.request_id = request_id
        self.deferrable = deferrable
        self.fail_on_webhook_failure = fail_on_webhook_failure
        self.cancel_on_kill = cancel_on_kill
        self.output_uri = output_uri
        self._watch: AsyncRequestWatch | None = None

    def _new_watch(self, context: Context) -> AsyncRequestWatch:
        now = self._clock()
        deadline = task_deadline(context, now, timeout=self.timeout, execution_timeout=self.execution_timeout)
        return AsyncRequestWatch(
            target=self.target,
            request_id=validate_request_id(self.request_id),
            poll_interval=self.poke_interval,
            # Poke mode: BaseSensorOperator enforces the sensor timeout; the trigger gets the deadline when deferred.
            deadline=deadline if self.deferrable else None,
            started_at=now,
            fail_on_webhook_failure=self.fail_on_webhook_failure,
            output_uri=self.output_uri,
            log=self.log,
        )

    def execute(self, context: Context) -> Any:
        self._watch = self._new_watch(context)
        BasetenAsyncRequestLink.persist(context, self, self._watch.request_id)
        if not self.deferrable:
            return super().execute(context)
        step = self._read(self._watch)
        if step.event is not None:
            return self._finish(step.event)
        # Imported here, not at DAG parse: the trigger module pulls in Airflow's trigger base (~10 ms).
        from airflow_provider_baseten.triggers.async_request import BasetenAsyncRequestTrigger

        self.log.info("Deferring: the triggerer waits for %s.", self._watch.describe(self._clock()))
        self.defer(
            trigger=BasetenAsyncRequestTrigger.for_watch(
                self._watch, baseten_conn_id=self.baseten_conn_id, cancel_on_kill=self.cancel_on_kill
            ),
            method_name="execute_complete",
            timeout=defer_timeout(self._watch.deadline, self._clock(), self.poke_interval),
        )

    def _read(self, watch: AsyncRequestWatch) -> PollStep:
        """One status read through the shared mapping (transient errors count against the watch's budget)."""
        outcome: Any
        try:
            outcome = self.hook.get_async_request(watch.target, watch.request_id)
        except Exception as exc:
            outcome = exc
        step = watch.step(outcome, self._clock())
        if step.wants_queue_depth:
            try:
                queue = self.hook.get_async_queue_status(watch.target)
            except Exception:
                queue = None
            watch.report_progress(queue, self._clock())
        return step

    def poke(self, context: Context) -> bool | PokeReturnValue:
        if self._watch is None:  # reschedule mode: a fresh instance per poke
            self._watch = self._new_watch(context)
        step = self._read(self._watch)
        if step.event is None:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._finish(step.event))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._finish(event)

    def _finish(self, event: Any) -> dict[str, Any]:
        event = validate_event(event)
        if event["status"] == "timeout":
            raise AirflowSensorTimeout(event["message"])
        manifest = manifest_or_raise(event)
        self.log.info("%s", event["message"])
        return manifest

    def on_kill(self) -> None:
        if not self.cancel_on_kill:
            return
        try:
            target, request_id = self.target, validate_request_id(self.request_id)
        except BasetenConfigError:
            return
        cancel_quietly(self.hook, target, request_id, self.log, "the task was killed")

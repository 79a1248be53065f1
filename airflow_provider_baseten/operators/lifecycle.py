"""The model lifecycle as tasks: scale up for a batch window and put it back, and promote a deployment.

``BasetenBatchWindowOperator`` (setup) raises a deployment's autoscaling floor and waits until that many replicas
are up; ``BasetenRestoreAutoscalingOperator`` (teardown) puts back exactly the fields the window changed;
:func:`batch_window` wires the pair as Airflow setup/teardown around the batch tasks. ``BasetenPromoteOperator``
promotes a deployment and waits until the promotion ends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import conf

from airflow_provider_baseten.exceptions import BasetenConfigError, BasetenDeploymentError
from airflow_provider_baseten.hooks.addressing import Target, validate_environment, validate_id
from airflow_provider_baseten.operators._base import (
    ADDRESS_TEMPLATE_FIELDS,
    DEFER_TIMEOUT_MARGIN,
    BasetenBaseOperator,
    check_seconds,
    is_templated,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_baseten.hooks.models import Deployment

#: XCom key (and return value) of the setup: what the window changed and what was there before.
WINDOW_XCOM_KEY = "baseten_window"
#: Task-state-store key (Airflow 3.3+) of the settings found before the first try raised them.
ORIGINAL_KEY = "baseten_window_original"
#: Airflow Variable prefix holding them below 3.3 (no task state store): one Variable per setup task instance.
FALLBACK_VARIABLE_PREFIX = "baseten_window"


# --- where the original settings are kept ----------------------------------------------------------------------


class _OriginalStore:
    """The setup's durable memory of the original settings: the task state store (3.3+), else an Airflow Variable.

    The task state store survives retries of the same task instance. Below 3.3 a Variable named
    ``baseten_window/{dag_id}/{task_id}/{run_id}/{map_index}`` does the same (the restore deletes it).
    """

    def __init__(self, context: Context) -> None:
        self.store: Any = context.get("task_state_store")  # Airflow 3.3+; absent from older Context types
        ti = context["ti"]
        self.variable = "/".join(
            [FALLBACK_VARIABLE_PREFIX, ti.dag_id, ti.task_id, ti.run_id, str(getattr(ti, "map_index", -1))]
        )

    @property
    def key(self) -> str | None:
        """The Variable to delete after a restore (``None`` with a task state store)."""
        return None if self.store is not None else self.variable

    def get(self) -> dict[str, Any] | None:
        if self.store is not None:
            raw = self.store.get(ORIGINAL_KEY)
        else:
            from airflow.providers.common.compat.sdk import Variable

            raw = Variable.get(self.variable, default=None)
        return json.loads(raw) if isinstance(raw, str) else None

    def set(self, record: dict[str, Any]) -> None:
        raw = json.dumps(record, sort_keys=True)
        if self.store is not None:
            self.store.set(ORIGINAL_KEY, raw)
        else:
            from airflow.providers.common.compat.sdk import Variable

            Variable.set(self.variable, raw, description="Baseten batch window: autoscaling before the window")


def _delete_fallback_variable(key: str | None, log: Any) -> None:
    if not key:
        return
    try:
        from airflow.providers.common.compat.sdk import Variable

        Variable.delete(key)
    except Exception as err:
        log.warning("Could not delete Variable %s (the window's saved settings): %s", key, err)


def settings_before(current: dict[str, Any], saved: dict[str, Any] | None, target: dict[str, Any]) -> dict[str, Any]:
    """The settings as they were before any window: ``current``, except that a field still showing the value an
    earlier try of this window set takes the original that try saved (so raised values never become "originals")."""
    if not saved or saved.get("target") != target:
        return dict(current)
    window, original = saved.get("window") or {}, saved.get("original") or {}
    return {
        **current,
        **{name: original[name] for name, value in window.items() if name in original and current.get(name) == value},
    }


def restore_plan(record: dict[str, Any], current: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(to send, left alone)``: fields still at the window's value go back; ones changed since are left."""
    window, original = record["window"], record["original"]
    send, left = {}, {}
    for name, value in window.items():
        now = current.get(name)
        if now == original.get(name):
            continue
        if now == value:
            send[name] = original.get(name)
        else:
            left[name] = now
    return send, left


class BasetenBatchWindowOperator(BasetenBaseOperator):
    """Raise a model deployment's autoscaling floor for a batch window and wait until that many replicas are up.

    Reads the deployment's autoscaling settings, saves the values of the fields it is about to change (once,
    durably: the task state store on Airflow 3.3+, an Airflow Variable below), PATCHes only those fields
    (``min_replica``, ``max_replica`` when the floor needs it or is given, and any of ``autoscaling``), and waits until
    the deployment is ``ACTIVE`` with ``active_replica_count >= min_replica``, on the worker or, with
    ``deferrable=True``, in the triggerer (the wake operator's readiness machinery).

    **Retries and re-runs.** A retried or re-run setup never takes values it raised itself for the originals: a field
    that still shows the window's value keeps the saved original. The record ``{target, window, original}`` is pushed
    to XCom (key ``baseten_window``) before the PATCH, so the restore finds it even when this task fails afterwards.
    When the last try fails, this task restores the settings itself (Airflow does not run a teardown whose setup
    failed).

    **Cost.** Every replica above the previous floor is billed from the moment it starts until the restore.

    :param min_replica: the floor for the window (templated).
    :param max_replica: the ceiling for the window; by default raised to ``min_replica`` only when it is lower.
    :param autoscaling: other ``UpdateAutoscalingSettingsV1`` fields for the window (``scale_down_delay``, ...).
    :param wait_for_replicas: wait until ``min_replica`` replicas are active (default).
    :param deferrable: wait in the triggerer; default from ``[operators] default_deferrable``.
    :param poll_interval: seconds between status reads (default 15).
    :param timeout: how long to wait after the PATCH (default 30 minutes), an absolute deadline also when deferred.
    """

    template_fields: Sequence[str] = (*ADDRESS_TEMPLATE_FIELDS, "min_replica", "max_replica", "autoscaling")
    target_kind = "model"
    ui_color = "#fff4d6"
    _clock = staticmethod(time.time)
    _sleep = staticmethod(time.sleep)

    def __init__(
        self,
        *,
        min_replica: int | str,
        max_replica: int | str | None = None,
        autoscaling: dict[str, Any] | None = None,
        wait_for_replicas: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 15.0,
        timeout: float | timedelta = timedelta(minutes=30),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.min_replica = min_replica
        self.max_replica = max_replica
        self.autoscaling = autoscaling
        self.wait_for_replicas = bool(wait_for_replicas)
        self.deferrable = bool(deferrable)
        self.poll_interval = check_seconds(poll_interval, "poll_interval")
        self.timeout = check_seconds(timeout, "timeout")
        if not any(is_templated(value) for value in (min_replica, max_replica, autoscaling)):
            self._window({"min_replica": 0, "max_replica": 0})

    def _window(self, current: dict[str, Any]) -> dict[str, Any]:
        """The fields this window sets, validated (before any request)."""
        from airflow_provider_baseten.hooks.management import autoscaling_update

        window: dict[str, Any] = dict(self.autoscaling or {})
        for name in ("min_replica", "max_replica"):
            if name in window:
                raise BasetenConfigError(f"Pass {name} as its own argument, not inside autoscaling.")
        window["min_replica"] = _as_int(self.min_replica, "min_replica")
        if self.max_replica is not None:
            window["max_replica"] = _as_int(self.max_replica, "max_replica")
        elif (current.get("max_replica") or 0) < window["min_replica"]:
            window["max_replica"] = window["min_replica"]
        if window.get("max_replica", window["min_replica"]) < window["min_replica"]:
            raise BasetenConfigError(
                f"max_replica {window['max_replica']} is below min_replica {window['min_replica']}."
            )
        return autoscaling_update(window).body()

    def execute(self, context: Context) -> dict[str, Any]:
        target = self.target
        before = self.hook.get_deployment(target)
        store = _OriginalStore(context)
        baseline = settings_before(_settings_of(before), store.get(), target.to_kwargs())
        window = self._window(baseline)
        original = {name: baseline.get(name) for name in window}
        record = {"target": target.to_kwargs(), "window": window, "original": original, "store_key": store.key}
        store.set(record)
        context["ti"].xcom_push(key=WINDOW_XCOM_KEY, value=record)
        self.log.info("Batch window for %s: setting %s (before: %s).", target.describe(), window, original)
        self._record = record
        try:
            answer = self.hook.update_autoscaling(target, window)
            self.log.info("Baseten answered %s: %s", answer.status, answer.message)
            if self.wait_for_replicas and window["min_replica"] > 0:
                record = {**record, "deployment": self._wait(target, before)}
        except Exception:
            self._restore_if_last_try(context, record)
            raise
        return record

    def _wait(self, target: Target, before: Deployment) -> dict[str, Any]:
        from airflow_provider_baseten.hooks.readiness import ReadinessWatch

        now = self._clock()
        watch = ReadinessWatch(
            target=target,
            woke_at=now,
            deadline=now + self.timeout,
            poll_interval=self.poll_interval,
            last_status=before.status,
            min_replicas=_as_int(self.min_replica, "min_replica"),
            logger=self.log,
        )
        return self.wait_until_ready(watch, clock=self._clock, sleep=self._sleep)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        record = context["ti"].xcom_pull(task_ids=self.task_id, key=WINDOW_XCOM_KEY)
        try:
            deployment = self.readiness_result(event)
        except Exception:
            if isinstance(record, dict):
                self._restore_if_last_try(context, record)
            raise
        return {**(record or {}), "deployment": deployment}

    def _restore_if_last_try(self, context: Context, record: dict[str, Any]) -> None:
        ti = context["ti"]
        if getattr(ti, "try_number", 1) <= (self.retries or 0):
            self.log.warning("The window failed; a retry follows, so the raised settings stay for it.")
            return
        self.log.warning("The window's last try failed: restoring the settings it changed.")
        try:
            restore(self.hook, record, self.log)
        except Exception as err:
            self.log.warning("Could not restore %s after the failure: %s", record.get("target"), err)


def restore(hook: Any, record: dict[str, Any], log: Any) -> dict[str, Any]:
    """Put back the fields of ``record`` that still show the window's values. Running it twice changes nothing."""
    target = Target.of(**record["target"])
    current = hook.get_autoscaling(target).model_dump(mode="json")
    send, left = restore_plan(record, current)
    for name, value in left.items():
        log.warning(
            "%s: %s was changed during the window (now %s); leaving it as it is.", target.describe(), name, value
        )
    if not send:
        log.info("%s: nothing to restore (the settings are already back).", target.describe())
    else:
        answer = hook.update_autoscaling(target, send)
        log.info("%s: restored %s (Baseten: %s).", target.describe(), send, answer.status)
    _delete_fallback_variable(record.get("store_key"), log)
    return {"target": record["target"], "restored": send, "left": left}


class BasetenRestoreAutoscalingOperator(BasetenBaseOperator):
    """Teardown of a batch window: put back the autoscaling fields the window changed, as they were before it.

    Reads the window's record from the setup's XCom (key ``baseten_window``). A field that still shows the
    window's value gets its original back; a field someone changed during the window is left as it is (with a
    warning), and fields the window did not touch are never sent. A second run finds nothing to send: harmless.
    Without a record (the setup never got as far as saving one) there is nothing to restore.

    :param setup_task_id: the :class:`BasetenBatchWindowOperator` task whose window this restores.
    """

    template_fields: Sequence[str] = ("baseten_conn_id", "setup_task_id")
    requires_target = False
    ui_color = "#fff4d6"

    def __init__(self, *, setup_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.setup_task_id = setup_task_id

    def execute(self, context: Context) -> dict[str, Any] | None:
        record = context["ti"].xcom_pull(task_ids=self.setup_task_id, key=WINDOW_XCOM_KEY)
        if not isinstance(record, dict):
            self.log.warning("Task %s left no batch window record: nothing to restore.", self.setup_task_id)
            return None
        try:
            return restore(self.hook, record, self.log)
        finally:
            self.hook.close()


def batch_window(
    *,
    model_id: str,
    min_replica: int | str,
    task_id: str = "baseten_window",
    around: Any = None,
    baseten_conn_id: str = "baseten_default",
    environment: str = "production",
    deployment_id: str | None = None,
    **setup_kwargs: Any,
) -> tuple[BasetenBatchWindowOperator, BasetenRestoreAutoscalingOperator]:
    """A batch window as Airflow setup/teardown: ``{task_id}_scale_up`` and ``{task_id}_restore``.

    The restore is the setup's teardown, so it runs when the batch tasks fail (and clearing a batch task re-runs the
    window around it). With ``around`` (a task or a list), ``setup >> around >> teardown`` is wired too; otherwise
    wire the batch tasks between them yourself. Other keyword arguments go to :class:`BasetenBatchWindowOperator`.
    """
    setup = BasetenBatchWindowOperator(
        task_id=f"{task_id}_scale_up",
        model_id=model_id,
        environment=environment,
        deployment_id=deployment_id,
        baseten_conn_id=baseten_conn_id,
        min_replica=min_replica,
        **setup_kwargs,
    )
    teardown = BasetenRestoreAutoscalingOperator(
        task_id=f"{task_id}_restore", setup_task_id=setup.task_id, baseten_conn_id=baseten_conn_id
    )
    teardown.as_teardown(setups=setup)
    if around is not None:
        setup >> around >> teardown
    return setup, teardown


def _settings_of(deployment: Deployment) -> dict[str, Any]:
    if deployment.autoscaling_settings is None:
        raise BasetenDeploymentError(f"Deployment {deployment.id} reports no autoscaling settings (still deploying?).")
    return deployment.autoscaling_settings.model_dump(mode="json")


def _as_int(value: object, name: str) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise BasetenConfigError(f"{name} must be a whole number, got {value!r}.") from None
    if number < 0:
        raise BasetenConfigError(f"{name} must be at least 0, got {value!r}.")
    return number


# --- promotion ---------------------------------------------------------------------------------------------------


class BasetenPromoteOperator(BasetenBaseOperator):
    """Promote a deployment (an id, or ``development``) to an environment or production, and wait until it ends.

    Before promoting, the environment is read: a promotion of the same deployment already in progress is waited on
    (not started again), and an environment that already serves it is success at once, so a task retry never starts
    a second promotion. A promotion of another deployment in progress fails the task. Otherwise the promote is sent
    (``POST .../environments/{env}/promote``, or ``.../deployments/{id}/promote`` for production), and the task waits
    on the worker or, with ``deferrable=True``, in the triggerer, until ``SUCCEEDED`` (green) or ``FAILED`` /
    ``CANCELED`` (fails with Baseten's message).

    ``timeout`` is an absolute deadline (also when deferred); at it the promotion is canceled (best effort) unless
    ``cancel_on_timeout=False``. Killing the task cancels the promotion (``on_kill`` on the worker; the trigger's
    ``on_kill`` on Airflow 3.3+).

    Returns the environment's new current deployment (``DeploymentV1`` as a dict).

    :param model_id: the model (templated).
    :param deployment_id: the deployment to promote, or ``development`` (templated).
    :param environment: the environment to promote to (default ``production``; templated).
    :param scale_down_previous: scale the previous deployment down after the promotion (default).
    :param preserve_env_instance_type: keep the environment's instance type (default).
    :param deferrable: wait in the triggerer; default from ``[operators] default_deferrable``.
    :param poll_interval: seconds between reads (default 15).
    :param timeout: how long the promotion may take (default 1 hour).
    :param cancel_on_timeout: cancel the promotion at the deadline (default).
    """

    template_fields: Sequence[str] = ("baseten_conn_id", "model_id", "deployment_id", "environment")
    requires_target = False
    ui_color = "#e5ffe8"
    _clock = staticmethod(time.time)
    _sleep = staticmethod(time.sleep)

    def __init__(
        self,
        *,
        model_id: str,
        deployment_id: str,
        environment: str = "production",
        scale_down_previous: bool = True,
        preserve_env_instance_type: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 15.0,
        timeout: float | timedelta = timedelta(hours=1),
        cancel_on_timeout: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_id=model_id, **kwargs)
        self.deployment_id = deployment_id
        self.environment = environment
        self.scale_down_previous = bool(scale_down_previous)
        self.preserve_env_instance_type = bool(preserve_env_instance_type)
        self.deferrable = bool(deferrable)
        self.poll_interval = check_seconds(poll_interval, "poll_interval")
        self.timeout = check_seconds(timeout, "timeout")
        self.cancel_on_timeout = bool(cancel_on_timeout)
        self._promoting = False
        if "{{" not in f"{model_id}{deployment_id}{environment}":
            self._validate()

    def _validate(self) -> tuple[str, str, str]:
        return (
            validate_id(self.model_id, "model_id"),
            validate_id(self.deployment_id, "deployment_id"),
            validate_environment(self.environment),
        )

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_baseten.hooks.promotion import PromotionWatch

        model_id, deployment_id, environment = self._validate()
        if deployment_id == "development":
            deployment_id = self.hook.get_deployment(Target.of(model_id=model_id, environment="development")).id
        now = self._clock()
        watch = PromotionWatch(
            model_id=model_id,
            environment=environment,
            deployment_id=deployment_id,
            started_at=now,
            deadline=now + self.timeout,
            poll_interval=self.poll_interval,
            logger=self.log,
        )
        env = self.hook.get_environment(model_id, environment)
        promotion = env.in_progress_promotion
        pending = promotion is not None and (promotion.known_status is None or promotion.known_status.is_pending)
        candidate = env.candidate_deployment.id if env.candidate_deployment else None
        current = env.current_deployment.id if env.current_deployment else None
        if pending and candidate == deployment_id:
            self.log.info("%s is already in progress (%s): waiting for it.", watch.what, promotion.status)  # type: ignore[union-attr]
        elif pending:
            raise BasetenDeploymentError(
                f"{environment} of model {model_id} has a promotion of deployment {candidate} in progress; not "
                f"promoting {deployment_id} over it."
            )
        elif current == deployment_id:
            self.log.info("%s serves deployment %s already: nothing to promote.", environment, deployment_id)
            return env.current_deployment.model_dump(mode="json")  # type: ignore[union-attr]
        else:
            self.hook.promote(
                model_id,
                deployment_id,
                environment=environment,
                scale_down_previous=self.scale_down_previous,
                preserve_env_instance_type=self.preserve_env_instance_type,
            )
            self.log.info("Started %s.", watch.what)
        self._promoting = True
        if self.deferrable:
            self._defer(watch)
        event = watch.run(
            lambda left: self.hook.get_environment(model_id, environment, time_left=left),
            clock=self._clock,
            sleep=self._sleep,
        )
        return self._finish(event)

    def _defer(self, watch: Any) -> NoReturn:
        from airflow_provider_baseten.triggers.promotion import BasetenPromotionTrigger

        self.defer(
            trigger=BasetenPromotionTrigger(
                model_id=watch.model_id,
                environment=watch.environment,
                deployment_id=watch.deployment_id,
                started_at=watch.started_at,
                deadline=watch.deadline,
                poll_interval=watch.poll_interval,
                baseten_conn_id=self.baseten_conn_id,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=max(0.0, watch.deadline - self._clock()) + DEFER_TIMEOUT_MARGIN),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._finish(event)

    def _finish(self, event: Any) -> dict[str, Any]:
        from airflow_provider_baseten.hooks.promotion import promotion_from_event

        if isinstance(event, dict) and event.get("status") == "timeout" and self.cancel_on_timeout:
            self._cancel_quietly("its deadline passed")
        self._promoting = False
        event = promotion_from_event(event)
        self.log.info("%s", event["message"])
        current = (event.get("environment") or {}).get("current_deployment")
        if not isinstance(current, dict):
            raise BasetenDeploymentError(f"The promotion succeeded but the environment shows no deployment: {event!r}")
        return current

    def _cancel_quietly(self, why: str) -> None:
        try:
            model_id, _, environment = self._validate()
            answer = self.hook.cancel_promotion(model_id, environment)
            self.log.warning("Canceled the promotion to %s (%s): %s", environment, why, answer.status)
        except Exception as err:
            self.log.warning("Could not cancel the promotion to %s: %s", self.environment, err)

    def on_kill(self) -> None:
        """Cancel the promotion when the task is killed on the worker while it waits."""
        if self._promoting:
            self._cancel_quietly("the task was killed")

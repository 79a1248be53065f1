"""What every Baseten operator shares: addressing parameters, the conn id, and a lazily built hook."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar

from airflow.providers.common.compat.sdk import BaseOperator, conf

from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.hooks.addressing import Target

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_baseten.hooks.baseten import BasetenHook
    from airflow_provider_baseten.hooks.readiness import ReadinessWatch

T = TypeVar("T")

#: Templated addressing fields, so ids can come from Variables, params or XCom.
ADDRESS_TEMPLATE_FIELDS: tuple[str, ...] = ("baseten_conn_id", "model_id", "chain_id", "environment", "deployment_id")
#: How long past a wait's deadline Airflow's own deferral timeout fires: a backstop if the trigger never reports.
DEFER_TIMEOUT_MARGIN = 120.0
#: Task-state-store key (Airflow 3.3+): the activation this task instance last asked for (target and epoch time).
ACTIVATION_KEY = "baseten_activation"


class BasetenBaseOperator(BaseOperator):
    """Base of the Baseten operators: ``model_id`` or ``chain_id``, ``environment``, ``deployment_id``, ``regional``.

    Literal addressing values are validated in ``__init__`` (a typo fails at DAG-parse time); templated ones are
    validated again after rendering, in :attr:`target`, before any request is sent.

    :param baseten_conn_id: the ``baseten`` connection (templated).
    :param model_id: the model to call (templated); exactly one of ``model_id`` and ``chain_id``.
    :param chain_id: the chain to call (templated).
    :param environment: ``production`` (default), ``development`` or a named environment (templated).
    :param deployment_id: pin one deployment instead of an environment (templated).
    :param regional: use the regional host ``model-{id}-{environment}.api.baseten.co`` with bare paths.
    :param activate_if_inactive: when the deployment is ``INACTIVE`` (Baseten deactivates deployments after about two
        weeks without traffic), activate it, wait until it is ``ACTIVE`` (up to ``activation_timeout``) and then run.
        Activation starts replicas, which are billed while they run. Without it, the task fails at once with a
        message naming this option.
    :param deferrable: wait in the triggerer instead of on the worker; default from ``[operators]
        default_deferrable``. On operators that otherwise run on the worker (predict, chain run, chat, batch) it
        only concerns the activation wait: the task defers while the deployment activates, then resumes and runs.
    """

    template_fields: Sequence[str] = ADDRESS_TEMPLATE_FIELDS
    ui_color = "#e5f0ff"
    #: Subclasses that address no model (Model APIs chat) set this to False.
    requires_target: bool = True
    #: Subclasses that address only models (or only chains) say so; checked in ``__init__`` and :attr:`target`.
    target_kind: ClassVar[Literal["model", "chain"] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _naming_the_task(cls.__dict__["__init__"])  # type: ignore[method-assign]

    def __init__(
        self,
        *,
        baseten_conn_id: str = "baseten_default",
        model_id: str | None = None,
        chain_id: str | None = None,
        environment: str = "production",
        deployment_id: str | None = None,
        regional: bool = False,
        activate_if_inactive: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.activate_if_inactive = bool(activate_if_inactive)
        self.deferrable = bool(deferrable)
        self.baseten_conn_id = baseten_conn_id
        self.model_id = model_id
        self.chain_id = chain_id
        self.environment = environment
        self.deployment_id = deployment_id
        self.regional = regional
        if self.requires_target:
            self._check_kind(model_id, chain_id)
        if self.requires_target and _all_literal(model_id, chain_id, environment, deployment_id):
            Target.of(
                model_id=model_id,
                chain_id=chain_id,
                environment=environment,
                deployment_id=deployment_id,
                regional=regional,
            )

    #: How long an activation may take before the task fails; test seams for its wait on the worker.
    activation_timeout: float = 1200.0
    activation_poll_interval: float = 10.0
    #: Seconds after an activation during which an ``INACTIVE`` read is taken as stale (not yet showing it).
    activation_grace: float = 30.0
    _activation_clock = staticmethod(time.time)
    _activation_sleep = staticmethod(time.sleep)
    #: Set when the task resumes after a deferred activation wait: this try does not activate again.
    _activation_done: bool = False

    def call_activating(self, target: Target | None, call: Callable[[], T], context: Context | None = None) -> T:
        """Run ``call``; if Baseten answers 404 because the deployment is ``INACTIVE``, activate it (with
        ``activate_if_inactive``) and run ``call`` once more, or fail naming the option.

        The second call is safe: a 404 from an inactive deployment never reached the model. With ``deferrable`` the
        wait for the activation defers and the task resumes in :meth:`execute_after_activation` (``execute`` again).
        """
        from airflow_provider_baseten.exceptions import BasetenDeploymentError, BasetenNotFoundError

        try:
            return call()
        except BasetenNotFoundError as not_found:
            if target is None:
                raise
            try:
                activated = self.ensure_active(target, context)
            except BasetenDeploymentError:
                raise
            except Exception as err:
                self.log.warning("After a 404, reading the status of %s failed too: %s", target.describe(), err)
                raise not_found from None
            if not activated:
                raise
        return call()

    def check_active_before_sending(self, target: Target, context: Context) -> None:
        """Before a batch sends anything: fail (or activate, with the option) if the deployment is ``INACTIVE``.

        Every input sent to an ``INACTIVE`` deployment would 404. A status read that fails for another reason does
        not stop the batch unless ``activate_if_inactive`` asked for the check.
        """
        from airflow_provider_baseten.exceptions import BasetenDeploymentError

        try:
            self.ensure_active(target, context)
        except BasetenDeploymentError:
            raise
        except Exception as err:
            if self.activate_if_inactive:
                raise
            self.log.warning(
                "Could not read the status of %s before sending (%s); sending anyway.", target.describe(), err
            )

    def ensure_active(self, target: Target, context: Context | None = None) -> bool:
        """Read the deployment's status once; if ``INACTIVE``, activate it and wait (or fail). True if activated.

        The wait runs on the worker or, with ``deferrable``, in the triggerer (the wake operator's
        :class:`~airflow_provider_baseten.triggers.deployment.BasetenDeploymentReadyTrigger`); the task then resumes
        in :meth:`execute_after_activation`. A key that may not read the management API skips the check (the call
        then meets Baseten's own 404).
        """
        from airflow_provider_baseten.exceptions import BasetenAuthError, BasetenDeploymentError
        from airflow_provider_baseten.hooks.models import DeploymentStatus, Readiness
        from airflow_provider_baseten.hooks.readiness import ReadinessWatch, inactive_message

        try:
            if target.kind == "chain":
                status = (
                    self.hook.get_chain_deployment(target.id, target.deployment_id).status
                    if target.deployment_id
                    else _chain_status(self.hook.get_chain_environment(target.id, target.environment))
                )
            else:
                status = self.hook.get_deployment(target).status
        except BasetenAuthError:
            self.log.warning("This key cannot read the status of %s; not checking for INACTIVE.", target.describe())
            return False
        known = DeploymentStatus(status) if status is not None and status in DeploymentStatus.__members__ else None
        if known is None or known.readiness is not Readiness.INACTIVE:
            return False
        what = target.describe()
        if not self.activate_if_inactive:
            raise BasetenDeploymentError(inactive_message(what, str(status)))
        if target.kind == "chain":
            raise BasetenDeploymentError(f"{what} is {status}; Baseten's API cannot activate chains: do it in Baseten.")
        if self._activation_done:
            raise BasetenDeploymentError(
                f"{what} is {status} again right after its activation finished; not activating it twice in one try."
            )
        activated_at = self.request_activation(target, str(status), context)
        deadline = activated_at + self.activation_timeout
        if self.deferrable:
            from airflow_provider_baseten.hooks.async_requests import task_deadline

            now = self._activation_clock()
            timeout = max(0.0, deadline - now)
            deadline = task_deadline(context or {}, now, timeout=timeout, execution_timeout=self.execution_timeout) or (
                deadline
            )
        watch = ReadinessWatch(
            target=Target.of(model_id=target.id, environment=target.environment, deployment_id=target.deployment_id),
            woke_at=activated_at,
            deadline=deadline,
            poll_interval=self.activation_poll_interval,
            stale_read_grace=self.activation_grace,
            last_status=status,
            activated=True,
            logger=self.log,
        )
        self.wait_until_ready(
            watch,
            method_name="execute_after_activation",
            clock=self._activation_clock,
            sleep=self._activation_sleep,
        )
        return True

    def request_activation(self, target: Target, status: str, context: Context | None) -> float:
        """Ask Baseten to activate ``target`` (20 a minute; the hook honours a 429's ``retry_after``); when it was.

        Retry-safe: an activation this task instance requested less than ``activation_grace`` seconds ago (recorded
        in the task state store, Airflow 3.3+) is waited on, not requested again. Below 3.3 a retry may ask once more,
        which is harmless (activation is idempotent).
        """
        import json

        from airflow_provider_baseten.exceptions import BasetenDeploymentError

        what = target.describe()
        store: Any = context.get("task_state_store") if context is not None else None
        now = self._activation_clock()
        earlier = _stored_activation(store, what)
        if earlier is not None and 0 <= now - earlier <= self.activation_grace:
            self.log.info(
                "%s is %s; an earlier try asked to activate it %.0f s ago: waiting.", what, status, now - earlier
            )
            return earlier
        self.log.warning("%s is %s: activating it (activation starts billed replicas) and waiting.", what, status)
        if not self.hook.activate(target):
            raise BasetenDeploymentError(f"Baseten did not accept the activation of {what}.")
        if store is not None:
            try:
                store.set(ACTIVATION_KEY, json.dumps({"target": what, "at": now}))
            except Exception as err:
                self.log.warning("Could not record the activation of %s for a retry: %s", what, err)
        return now

    def wait_until_ready(
        self,
        watch: ReadinessWatch,
        *,
        method_name: str = "execute_complete",
        clock: Callable[[], float],
        sleep: Callable[[float], object],
    ) -> dict[str, Any]:
        """Wait until ``watch`` ends and return the deployment record of its success; anything else raises.

        With ``deferrable`` the wait goes on in :class:`~airflow_provider_baseten.triggers.deployment.
        BasetenDeploymentReadyTrigger` (reads only) and the task resumes in ``method_name``: this raises
        ``TaskDeferred``. Airflow's deferral timeout is only a backstop past the watch's own absolute deadline.
        """
        if self.deferrable:
            from airflow_provider_baseten.triggers.deployment import BasetenDeploymentReadyTrigger

            self.defer(
                trigger=BasetenDeploymentReadyTrigger.for_watch(watch, baseten_conn_id=self.baseten_conn_id),
                method_name=method_name,
                timeout=timedelta(seconds=max(0.0, watch.deadline - clock()) + DEFER_TIMEOUT_MARGIN),
            )
        event = watch.run(lambda left: self.hook.get_deployment(watch.target, time_left=left), clock=clock, sleep=sleep)
        return self.readiness_result(event)

    def readiness_result(self, event: object) -> dict[str, Any]:
        """The deployment record of a readiness event; only an explicit ``success`` passes the allow-list."""
        from airflow_provider_baseten.hooks.readiness import deployment_from_event, describe_transitions

        if isinstance(event, dict) and event.get("transitions"):
            self.log.info("Status changes: %s", describe_transitions(event["transitions"]))
        return deployment_from_event(event)["deployment"]  # type: ignore[no-any-return]

    def execute_after_activation(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after a deferred activation wait: a ``success`` event runs ``execute`` (the call) again, which
        then finds the deployment ready; any other event fails the task."""
        self.readiness_result(event)
        self._activation_done = True
        return self.execute(context)

    @property
    def target(self) -> Target:
        """The validated target, from the rendered addressing fields."""
        self._check_kind(self.model_id or None, self.chain_id or None)
        return Target.of(
            model_id=self.model_id or None,
            chain_id=self.chain_id or None,
            environment=self.environment,
            deployment_id=self.deployment_id or None,
            regional=self.regional,
        )

    @cached_property
    def hook(self) -> BasetenHook:
        from airflow_provider_baseten.hooks.baseten import BasetenHook

        return BasetenHook(self.baseten_conn_id)

    def _check_kind(self, model_id: object, chain_id: object) -> None:
        if self.target_kind == "model" and chain_id is not None:
            raise BasetenConfigError(f"{type(self).__name__} calls models: pass model_id, not chain_id.")
        if self.target_kind == "chain" and model_id is not None:
            raise BasetenConfigError(f"{type(self).__name__} runs chains: pass chain_id, not model_id.")


def _naming_the_task(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap an operator ``__init__`` so a :class:`BasetenConfigError` it raises names the task (DAG-parse errors
    otherwise say what is wrong but not where). The message is prefixed once, however deep the ``__init__`` chain."""

    @functools.wraps(init)
    def wrapper(self: BaseOperator, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except BasetenConfigError as err:
            if not getattr(err, "names_task", False):
                task_id = kwargs.get("task_id") or getattr(self, "task_id", None) or "?"
                err.args = (f"Task {task_id!r} ({type(self).__name__}): {err}", *err.args[1:])
                err.names_task = True  # type: ignore[attr-defined]
            raise

    return wrapper


BasetenBaseOperator.__init__ = _naming_the_task(BasetenBaseOperator.__init__)  # type: ignore[method-assign]


def is_templated(value: object) -> bool:
    """True for a Jinja template string or a value resolved at run time (an ``XComArg``)."""
    from airflow.providers.common.compat.sdk import XComArg

    return (isinstance(value, str) and "{{" in value) or isinstance(value, XComArg)


def _has_template(*values: object) -> bool:
    return any(is_templated(value) for value in values)


def _all_literal(*values: object) -> bool:
    """Addressing values that can be validated now: plain strings (no template) or ``None``."""
    return all(value is None or (isinstance(value, str) and not is_templated(value)) for value in values)


def check_json_value(value: Any, name: str) -> None:
    """Raise :class:`BasetenConfigError` unless ``value`` is JSON: dicts with string keys, lists, scalars.

    Values resolved at run time (``XComArg``) are skipped here; execute() checks the rendered value again.
    """
    from airflow.providers.common.compat.sdk import XComArg

    def walk(item: Any, where: str) -> None:
        if item is None or isinstance(item, (str, bool, int, XComArg)):
            return
        if isinstance(item, float):
            if not math.isfinite(item):
                raise BasetenConfigError(f"{where} is {item!r}, which JSON cannot carry.")
            return
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise BasetenConfigError(f"{where} has a key {key!r} that is not a string; JSON keys are strings.")
                walk(child, f"{where}[{key!r}]")
            return
        if isinstance(item, list | tuple):
            for index, child in enumerate(item):
                walk(child, f"{where}[{index}]")
            return
        raise BasetenConfigError(
            f"{where} must be JSON (dict, list, str, number, bool, None), not {type(item).__name__}."
        )

    walk(value, name)


class AsyncSubmitOptions(Protocol):
    """The async submission options an async operator holds (single request or batch)."""

    @property
    def webhook_endpoint(self) -> str | None: ...
    @property
    def priority(self) -> int | None: ...
    @property
    def max_time_in_queue_seconds(self) -> int | None: ...
    @property
    def inference_retry_config(self) -> dict[str, Any] | None: ...


def check_literal_async_options(op: AsyncSubmitOptions) -> None:
    """Check ``op``'s async submission options when the DAG is parsed (a templated webhook waits for rendering)."""
    from airflow_provider_baseten.hooks.async_requests import check_async_options

    webhook = op.webhook_endpoint
    check_async_options(
        webhook_endpoint=None if is_templated(webhook) else webhook,
        priority=op.priority,
        max_time_in_queue_seconds=op.max_time_in_queue_seconds,
        inference_retry_config=op.inference_retry_config,
    )


def check_seconds(value: object, name: str, *, allow_zero: bool = False) -> float:
    """A duration in seconds from a number or a ``timedelta``: positive (or zero when allowed), finite."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BasetenConfigError(f"{name} must be a number of seconds or a timedelta, got {value!r}.")
    if value < 0 or (value == 0 and not allow_zero):
        raise BasetenConfigError(f"{name} must be {'at least' if allow_zero else 'greater than'} 0, got {value!r}.")
    return float(value)


def _stored_activation(store: Any, what: str) -> float | None:
    """When this task instance asked to activate ``what`` (task state store), or ``None``."""
    import json

    if store is None:
        return None
    try:
        record = json.loads(store.get(ACTIVATION_KEY) or "null")
    except (TypeError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("target") != what:
        return None
    at = record.get("at")
    return float(at) if isinstance(at, int | float) else None


def _chain_status(environment: Any) -> str | None:
    current = environment.current_deployment
    return current.status if current is not None else None

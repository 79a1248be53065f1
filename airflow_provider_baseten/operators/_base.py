"""What every Baseten operator shares: addressing parameters, the conn id, and a lazily built hook."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.hooks.addressing import Target

if TYPE_CHECKING:
    from airflow_provider_baseten.hooks.baseten import BasetenHook

T = TypeVar("T")

#: Templated addressing fields, so ids can come from Variables, params or XCom.
ADDRESS_TEMPLATE_FIELDS: tuple[str, ...] = ("baseten_conn_id", "model_id", "chain_id", "environment", "deployment_id")


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
        weeks without traffic), activate it, wait until it is ``ACTIVE`` (on the worker, up to
        ``activation_timeout``) and then run. Activation starts replicas, which are billed while they run. Without
        it, the task fails at once with a message naming this option.
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.activate_if_inactive = bool(activate_if_inactive)
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
    _activation_clock = staticmethod(time.time)
    _activation_sleep = staticmethod(time.sleep)

    def call_activating(self, target: Target | None, call: Callable[[], T]) -> T:
        """Run ``call``; if Baseten answers 404 because the deployment is ``INACTIVE``, activate it (with
        ``activate_if_inactive``) and run ``call`` once more, or fail naming the option.

        The second call is safe: a 404 from an inactive deployment never reached the model.
        """
        from airflow_provider_baseten.exceptions import BasetenDeploymentError, BasetenNotFoundError

        try:
            return call()
        except BasetenNotFoundError as not_found:
            if target is None:
                raise
            try:
                activated = self.ensure_active(target)
            except BasetenDeploymentError:
                raise
            except Exception as err:
                self.log.warning("After a 404, reading the status of %s failed too: %s", target.describe(), err)
                raise not_found from None
            if not activated:
                raise
        return call()

    def ensure_active(self, target: Target) -> bool:
        """Read the deployment's status once; if ``INACTIVE``, activate it and wait (or fail). True if activated.

        A key that may not read the management API skips the check (the call then meets Baseten's own 404).
        """
        from airflow_provider_baseten.exceptions import BasetenAuthError, BasetenDeploymentError
        from airflow_provider_baseten.hooks.models import DeploymentStatus, Readiness

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
            raise BasetenDeploymentError(
                f"{what} is {status} (Baseten deactivates deployments after about two weeks without traffic). Pass "
                "activate_if_inactive=True to activate it and wait until it is ready; activation starts replicas, "
                "which are billed while they run."
            )
        if target.kind == "chain":
            raise BasetenDeploymentError(f"{what} is {status}; Baseten's API cannot activate chains: do it in Baseten.")
        self.log.warning("%s is %s: activating it (activation starts billed replicas) and waiting.", what, status)
        if not self.hook.activate(target):
            raise BasetenDeploymentError(f"Baseten did not accept the activation of {what}.")
        from airflow_provider_baseten.hooks.readiness import ReadinessWatch, deployment_from_event

        now = self._activation_clock()
        watch = ReadinessWatch(
            target=Target.of(model_id=target.id, environment=target.environment, deployment_id=target.deployment_id),
            woke_at=now,
            deadline=now + self.activation_timeout,
            poll_interval=self.activation_poll_interval,
            last_status=status,
            activated=True,
            logger=self.log,
        )
        event = watch.run(
            lambda left: self.hook.get_deployment(target, time_left=left),
            clock=self._activation_clock,
            sleep=self._activation_sleep,
        )
        deployment_from_event(event)
        return True

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


def check_seconds(value: object, name: str, *, allow_zero: bool = False) -> float:
    """A duration in seconds from a number or a ``timedelta``: positive (or zero when allowed), finite."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BasetenConfigError(f"{name} must be a number of seconds or a timedelta, got {value!r}.")
    if value < 0 or (value == 0 and not allow_zero):
        raise BasetenConfigError(f"{name} must be {'at least' if allow_zero else 'greater than'} 0, got {value!r}.")
    return float(value)


def _chain_status(environment: Any) -> str | None:
    current = environment.current_deployment
    return current.status if current is not None else None

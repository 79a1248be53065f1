"""What every Baseten operator shares: addressing parameters, the conn id, and a lazily built hook."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_baseten.hooks.addressing import Target

if TYPE_CHECKING:
    from airflow_provider_baseten.hooks.baseten import BasetenHook

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
    """

    template_fields: Sequence[str] = ADDRESS_TEMPLATE_FIELDS
    ui_color = "#e5f0ff"
    #: Subclasses that address no model (Model APIs chat) set this to False.
    requires_target: bool = True

    def __init__(
        self,
        *,
        baseten_conn_id: str = "baseten_default",
        model_id: str | None = None,
        chain_id: str | None = None,
        environment: str = "production",
        deployment_id: str | None = None,
        regional: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.baseten_conn_id = baseten_conn_id
        self.model_id = model_id
        self.chain_id = chain_id
        self.environment = environment
        self.deployment_id = deployment_id
        self.regional = regional
        if self.requires_target and not _has_template(model_id, chain_id, environment, deployment_id):
            Target.of(
                model_id=model_id,
                chain_id=chain_id,
                environment=environment,
                deployment_id=deployment_id,
                regional=regional,
            )

    @property
    def target(self) -> Target:
        """The validated target, from the rendered addressing fields."""
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


def _has_template(*values: object) -> bool:
    return any(isinstance(value, str) and "{{" in value for value in values)

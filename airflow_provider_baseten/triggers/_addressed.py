"""What the async triggers share: the address they watch (plain kwargs) and the one hook they poll through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_baseten.hooks.addressing import Target
    from airflow_provider_baseten.hooks.baseten import BasetenHook


class AddressedTrigger:
    """Mixin for a trigger whose kwargs name a model or chain; builds its :class:`Target` and its hook lazily."""

    baseten_conn_id: str
    model_id: str | None
    chain_id: str | None
    environment: str
    deployment_id: str | None
    regional: bool
    _sleep: Callable[[float], Awaitable[None]]
    _hook_clock: Callable[[], float] | None
    _hook: BasetenHook | None

    def _address_kwargs(self) -> dict[str, Any]:
        """The connection and address fields every addressed trigger serializes (one place for both triggers)."""
        return {
            "baseten_conn_id": self.baseten_conn_id,
            "model_id": self.model_id,
            "chain_id": self.chain_id,
            "environment": self.environment,
            "deployment_id": self.deployment_id,
            "regional": self.regional,
        }

    def _target(self) -> Target:
        from airflow_provider_baseten.hooks.addressing import Target

        return Target.of(
            model_id=self.model_id,
            chain_id=self.chain_id,
            environment=self.environment,
            deployment_id=self.deployment_id,
            regional=self.regional,
        )

    def _get_hook(self) -> BasetenHook:
        """One hook per trigger; its retry waits use the trigger's sleep, its poll budget the injected clock (tests)."""
        if self._hook is None:
            from airflow_provider_baseten.hooks.baseten import BasetenHook

            # customer_request_id="" : there is no task context to build one from in the triggerer.
            self._hook = BasetenHook(
                self.baseten_conn_id, customer_request_id="", async_sleep=self._sleep, clock=self._hook_clock
            )
        return self._hook

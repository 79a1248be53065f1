"""The management API on ``api.baseten.co``: deployment records, autoscaling, activation, promotion, chains.

:class:`BasetenManagementMixin` is part of :class:`~airflow_provider_baseten.hooks.baseten.BasetenHook`; it only
builds calls and parses answers, and sends them through the hook's one transport (retries, errors, redaction).

Baseten's management rate limits are low (100 requests a second per endpoint; activate and deactivate 20 a minute):
the hook honours their 429 ``retry_after``. Reads, autoscaling updates (only the fields sent change, so sending the
same values again changes nothing), activate, deactivate and the promotion signals are idempotent and retried on
transient errors; a promote is not (each accepted call starts a promotion) and is retried only when it provably never
reached Baseten.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_baseten.exceptions import BasetenConfigError, BasetenModelError, BasetenNotFoundError
from airflow_provider_baseten.hooks.addressing import Endpoint, Target, join_path, management_endpoint, validate_id
from airflow_provider_baseten.hooks.connection import DEFAULT_SHORT_TIMEOUT
from airflow_provider_baseten.hooks.models import (
    AutoscalingSettings,
    CancelPromotionResponse,
    ChainDeployment,
    ChainEnvironment,
    Deployment,
    Environment,
    SignalPromotionResponse,
    UpdateAutoscalingResponse,
    UpdateAutoscalingSettings,
    UserInfo,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import httpx
    from pydantic import BaseModel

    from airflow_provider_baseten.hooks.baseten import _Call
    from airflow_provider_baseten.hooks.connection import ClientSettings

    ModelT = TypeVar("ModelT", bound=BaseModel)

__all__ = ["BasetenManagementMixin", "autoscaling_update"]

#: Promotion signals beside an environment's ``promote``.
_SIGNALS = ("pause_promotion", "resume_promotion")


def _call(method: str, endpoint: Endpoint, what: str, *, idempotent: bool = True, body: Any = None) -> _Call:
    from airflow_provider_baseten.hooks.baseten import _Call  # the hook module imports this one

    return _Call(method, endpoint, what, idempotent, body, DEFAULT_SHORT_TIMEOUT)


def _validated(model: type[ModelT], data: Any, what: str) -> ModelT:
    from airflow_provider_baseten.hooks.calls import _validated as validated

    return validated(model, data, what)


def autoscaling_update(settings: UpdateAutoscalingSettings | dict[str, Any]) -> UpdateAutoscalingSettings:
    """Validate an autoscaling update (``UpdateAutoscalingSettingsV1``); a bad field fails before any request."""
    if isinstance(settings, UpdateAutoscalingSettings):
        return settings
    from pydantic import ValidationError

    try:
        update = UpdateAutoscalingSettings.model_validate(settings)
    except ValidationError as err:
        raise BasetenConfigError(f"Invalid autoscaling settings; nothing was sent: {err}") from None
    if not update.body():
        raise BasetenConfigError("The autoscaling update sets no field; nothing was sent.")
    return update


def _environment_endpoint(model_id: str, environment: str, *action: str) -> Endpoint:
    target = Target.of(model_id=model_id, environment=environment)
    return management_endpoint("models", target.id, "environments", target.environment, *action)


class BasetenManagementMixin:
    """Typed management API calls of :class:`~airflow_provider_baseten.hooks.baseten.BasetenHook`."""

    if TYPE_CHECKING:
        _send: Callable[..., httpx.Response]
        _asend: Callable[..., Awaitable[httpx.Response]]

        def _parse(self, model: type[ModelT], response: httpx.Response, call: _Call) -> ModelT: ...

        _redact: Callable[[str], str]
        _json_or_text: Callable[[httpx.Response], Any]
        aget_settings: Callable[[], Awaitable[ClientSettings]]

    # --- records ------------------------------------------------------------------------------------------------

    def _get_management(self, endpoint: Endpoint, what: str) -> httpx.Response:
        return self._send(_call("GET", endpoint, what))

    @staticmethod
    def _deployment_of(record: Any, target: Target) -> Deployment:
        what = f"status of {target.describe()}"
        if isinstance(record, dict) and "current_deployment" in record:
            current = _validated(Environment, record, what).current_deployment
            if current is None:
                raise BasetenNotFoundError(f"{target.describe()} has no current deployment.", status_code=404)
            return current
        return _validated(Deployment, record, what)

    def _json_object(self, response: httpx.Response, what: str) -> dict[str, Any]:
        """The JSON object of a 2xx answer; anything else (a proxy's HTML page, a list) is a BasetenModelError."""
        from airflow_provider_baseten.hooks.baseten import _truncate

        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise BasetenModelError(
                f"{what}: answered {response.status_code} with a body that is not a JSON object: "
                f"{_truncate(self._redact(response.text))!r}",
                status_code=response.status_code,
            )
        return body

    @staticmethod
    def _deployment_call(target: Target) -> _Call:
        return _call("GET", target.deployment_status_endpoint(), f"status of {target.describe()}")

    def get_deployment(self, target: Target, *, time_left: float | None = None) -> Deployment:
        """The deployment record (status, replicas, autoscaling) behind ``target``, from the management API.

        Inside the process's poll budget; with ``time_left`` the call, retries included, ends within that long.
        """
        call = self._deployment_call(target)
        response = self._send(call, budgeted=True, time_left=time_left)
        return self._deployment_of(self._json_object(response, call.what), target)

    async def aget_deployment(self, target: Target) -> Deployment:
        """Async twin of :meth:`get_deployment` (the readiness trigger), inside the poll budget."""
        call = self._deployment_call(target)
        return self._deployment_of(self._json_object(await self._asend(call, budgeted=True), call.what), target)

    @staticmethod
    def _environment_call(model_id: str, environment: str) -> _Call:
        """The environment read (the hook's and the hot path's promotion polls)."""
        return _call("GET", _environment_endpoint(model_id, environment), f"get environment {environment}")

    def get_environment(self, model_id: str, environment: str, *, time_left: float | None = None) -> Environment:
        """``EnvironmentV1``: current and candidate deployment, autoscaling, and the promotion in progress.

        With ``time_left`` the call, retries included, ends within that long."""
        call = self._environment_call(model_id, environment)
        return self._parse(Environment, self._send(call, time_left=time_left), call)

    async def aget_environment(self, model_id: str, environment: str) -> Environment:
        """Async twin of :meth:`get_environment` (the promotion trigger), inside the poll budget."""
        call = self._environment_call(model_id, environment)
        return self._parse(Environment, await self._asend(call, budgeted=True), call)

    def list_environments(self, model_id: str) -> list[Environment]:
        endpoint = management_endpoint("models", validate_id(model_id, "model_id"), "environments")
        records = self._json_object(self._get_management(endpoint, "list environments"), "list environments")
        return [_validated(Environment, r, "list environments") for r in records.get("environments") or []]

    def list_models(self) -> list[dict[str, Any]]:
        response = self._get_management(management_endpoint("models"), "list models")
        return list(self._json_object(response, "list models").get("models") or [])

    def get_model(self, model_id: str) -> dict[str, Any]:
        endpoint = management_endpoint("models", validate_id(model_id, "model_id"))
        return self._json_object(self._get_management(endpoint, "get model"), "get model")

    def list_deployments(self, model_id: str) -> list[Deployment]:
        endpoint = management_endpoint("models", validate_id(model_id, "model_id"), "deployments")
        response = self._get_management(endpoint, "list deployments")
        records = self._json_object(response, "list deployments").get("deployments") or []
        return [_validated(Deployment, record, "list deployments") for record in records]

    def get_user(self) -> UserInfo:
        call = _call("GET", management_endpoint("users", "me"), "get user")
        return self._parse(UserInfo, self._send(call), call)

    # --- activation ---------------------------------------------------------------------------------------------

    def _switch(self, target: Target, action: str) -> bool:
        status = target.deployment_status_endpoint()
        endpoint = Endpoint(status.host, join_path(status.path, action))
        response = self._send(_call("POST", endpoint, f"{action} {target.describe()}"))
        body = self._json_or_text(response)
        return bool(body.get("success", True)) if isinstance(body, dict) else True

    def activate(self, target: Target) -> bool:
        """Activate an ``INACTIVE`` deployment or environment (20 a minute). Idempotent.

        Activation starts replicas, which are billed while they run.
        """
        return self._switch(target, "activate")

    def deactivate(self, target: Target) -> bool:
        """Deactivate a deployment or environment: it stops serving (404) until activated. Idempotent."""
        return self._switch(target, "deactivate")

    # --- autoscaling --------------------------------------------------------------------------------------------

    def get_autoscaling(self, target: Target) -> AutoscalingSettings:
        """The current autoscaling settings of the deployment (or named environment) ``target`` addresses."""
        what = f"autoscaling settings of {target.describe()}"
        record = self._json_object(self._get_management(target.deployment_status_endpoint(), what), what)
        settings = record.get("autoscaling_settings")
        if settings is None:
            raise BasetenModelError(f"{what}: Baseten reports none (the deployment has not finished deploying).")
        return _validated(AutoscalingSettings, settings, what)

    def update_autoscaling(
        self, target: Target, settings: UpdateAutoscalingSettings | dict[str, Any]
    ) -> UpdateAutoscalingResponse:
        """PATCH only the given autoscaling fields (``ACCEPTED``, ``QUEUED`` or ``UNCHANGED``). Idempotent.

        Production, development and pinned deployments go to ``.../deployments/{which}/autoscaling_settings``; a
        named environment to ``PATCH .../environments/{env}`` with ``{"autoscaling_settings": ...}``. Raising
        ``min_replica`` starts replicas that are billed while they run.
        """
        body = autoscaling_update(settings).body()
        status = target.deployment_status_endpoint()
        what = f"update autoscaling of {target.describe()}"
        if "/environments/" in status.path:
            call = _call("PATCH", status, what, body={"autoscaling_settings": body})
        else:
            call = _call(
                "PATCH", Endpoint(status.host, join_path(status.path, "autoscaling_settings")), what, body=body
            )
        return self._parse(UpdateAutoscalingResponse, self._send(call), call)

    # --- promotion ----------------------------------------------------------------------------------------------

    def promote(
        self,
        model_id: str,
        deployment_id: str,
        *,
        environment: str = "production",
        scale_down_previous: bool = True,
        preserve_env_instance_type: bool = True,
    ) -> Deployment:
        """Start promoting ``deployment_id`` (an id or ``development``) to ``environment``; returns the deployment.

        Not idempotent (each accepted call starts a promotion): retried only when it provably never reached Baseten.
        Progress is the environment's ``in_progress_promotion`` (:meth:`get_environment`).
        """
        model_id = validate_id(model_id, "model_id")
        deployment_id = validate_id(deployment_id, "deployment_id")
        what = f"promote deployment {deployment_id} of model {model_id} to {environment}"
        if environment == "production":
            endpoint = management_endpoint("models", model_id, "deployments", deployment_id, "promote")
            body: dict[str, Any] = {
                "scale_down_previous_production": bool(scale_down_previous),
                "preserve_env_instance_type": bool(preserve_env_instance_type),
            }
        else:
            if deployment_id == "development":
                deployment_id = self.get_deployment(Target.of(model_id=model_id, environment="development")).id
            endpoint = _environment_endpoint(model_id, environment, "promote")
            body = {
                "deployment_id": deployment_id,
                "scale_down_previous_deployment": bool(scale_down_previous),
                "preserve_env_instance_type": bool(preserve_env_instance_type),
            }
        call = _call("POST", endpoint, what, idempotent=False, body=body)
        return self._parse(Deployment, self._send(call), call)

    def cancel_promotion(self, model_id: str, environment: str) -> CancelPromotionResponse:
        """Cancel the environment's promotion (``CANCELED``, or ``RAMPING_DOWN`` on the way there). Idempotent."""
        endpoint = _environment_endpoint(model_id, environment, "cancel_promotion")
        call = _call("POST", endpoint, f"cancel the promotion to {environment} of model {model_id}")
        return self._parse(CancelPromotionResponse, self._send(call), call)

    async def acancel_promotion(self, model_id: str, environment: str) -> CancelPromotionResponse:
        """Async twin of :meth:`cancel_promotion` (the promotion trigger's ``on_kill``)."""
        endpoint = _environment_endpoint(model_id, environment, "cancel_promotion")
        call = _call("POST", endpoint, f"cancel the promotion to {environment} of model {model_id}")
        return self._parse(CancelPromotionResponse, await self._asend(call), call)

    def pause_promotion(self, model_id: str, environment: str) -> bool:
        """Pause a rolling promotion where it is. Idempotent."""
        return self._signal(model_id, environment, "pause_promotion")

    def resume_promotion(self, model_id: str, environment: str) -> bool:
        """Resume a paused promotion. Idempotent."""
        return self._signal(model_id, environment, "resume_promotion")

    def _signal(self, model_id: str, environment: str, action: str) -> bool:
        assert action in _SIGNALS
        call = _call("POST", _environment_endpoint(model_id, environment, action), f"{action} of model {model_id}")
        return bool(self._parse(SignalPromotionResponse, self._send(call), call).success)

    # --- chains -------------------------------------------------------------------------------------------------

    def get_chain_deployment(self, chain_id: str, deployment_id: str) -> ChainDeployment:
        """``ChainDeploymentV1``: the chain deployment's status and each chainlet's status and replicas."""
        endpoint = management_endpoint(
            "chains", validate_id(chain_id, "chain_id"), "deployments", validate_id(deployment_id, "deployment_id")
        )
        call = _call("GET", endpoint, f"status of chain {chain_id} deployment {deployment_id}")
        return self._parse(ChainDeployment, self._send(call), call)

    def list_chain_deployments(self, chain_id: str) -> list[ChainDeployment]:
        endpoint = management_endpoint("chains", validate_id(chain_id, "chain_id"), "deployments")
        body = self._json_object(self._get_management(endpoint, "list chain deployments"), "list chain deployments")
        return [_validated(ChainDeployment, r, "list chain deployments") for r in body.get("deployments") or []]

    def list_chain_environments(self, chain_id: str) -> list[ChainEnvironment]:
        endpoint = management_endpoint("chains", validate_id(chain_id, "chain_id"), "environments")
        body = self._json_object(self._get_management(endpoint, "list chain environments"), "list chain environments")
        return [_validated(ChainEnvironment, r, "list chain environments") for r in body.get("environments") or []]

    def get_chain_environment(self, chain_id: str, environment: str) -> ChainEnvironment:
        target = Target.of(chain_id=chain_id, environment=environment)
        endpoint = management_endpoint("chains", target.id, "environments", target.environment)
        call = _call("GET", endpoint, f"get chain environment {environment}")
        return self._parse(ChainEnvironment, self._send(call), call)

    def promote_chain(
        self, chain_id: str, deployment_id: str, *, environment: str = "production", scale_down_previous: bool = True
    ) -> ChainDeployment:
        """Promote a chain deployment to an environment. Not idempotent (see :meth:`promote`)."""
        target = Target.of(chain_id=chain_id, environment=environment)
        body = {
            "deployment_id": validate_id(deployment_id, "deployment_id"),
            "scale_down_previous_deployment": bool(scale_down_previous),
        }
        endpoint = management_endpoint("chains", target.id, "environments", target.environment, "promote")
        call = _call(
            "POST", endpoint, f"promote chain {chain_id} deployment {deployment_id}", idempotent=False, body=body
        )
        return self._parse(ChainDeployment, self._send(call), call)

    def update_chainlet_autoscaling(
        self, chain_id: str, environment: str, settings: dict[str, UpdateAutoscalingSettings | dict[str, Any]]
    ) -> UpdateAutoscalingResponse:
        """Update the autoscaling of chainlets (by name) in a chain environment; only the fields given change."""
        target = Target.of(chain_id=chain_id, environment=environment)
        updates = [
            {"chainlet_name": name, "autoscaling_settings": autoscaling_update(value).body()}
            for name, value in settings.items()
        ]
        endpoint = management_endpoint(
            "chains", target.id, "environments", target.environment, "chainlet_settings", "autoscaling_settings"
        )
        call = _call("PATCH", endpoint, f"update chainlet autoscaling of chain {chain_id}", body={"updates": updates})
        return self._parse(UpdateAutoscalingResponse, self._send(call), call)

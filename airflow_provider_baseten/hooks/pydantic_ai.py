"""Baseten as a model source for Airflow's common.ai: ``@task.llm``, ``@task.agent``, ``LLMOperator``, and the rest.

A ``pydanticai_baseten`` connection holds no key of its own: its extra names a ``baseten`` connection
(``baseten_conn_id``), and the key, gateway URL, headers, proxy, TLS and timeouts all come from there, through the
same URL rules (:class:`~airflow_provider_baseten.hooks.addressing.Target`) and the same client factory
(:func:`~airflow_provider_baseten.hooks.baseten.build_async_client`) every other Baseten call uses. So the emulator
and private gateways work unchanged, and the key is masked wherever it came from.

Needs ``pip install 'airflow-provider-baseten[common-ai]'``; without it this module raises Airflow's
optional-feature exception (the rest of the provider does not import it).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowOptionalProviderFeatureException

from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.hooks.addressing import MODEL_APIS_HOST, Target

INSTALL_HINT = (
    "Baseten as a common.ai model source needs apache-airflow-providers-common-ai and pydantic-ai's OpenAI "
    "support: pip install 'airflow-provider-baseten[common-ai]'."
)

try:
    from airflow.providers.common.ai.hooks.pydantic_ai import PydanticAIHook, _has_recognized_provider_prefix
    from pydantic_ai.exceptions import ModelAuthenticationError, ModelHTTPError
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.profiles.openai import OpenAIModelProfile
    from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider
except ImportError as err:
    raise AirflowOptionalProviderFeatureException(f"{INSTALL_HINT} ({err})") from err

if TYPE_CHECKING:
    from pydantic_ai.models import Model, StreamedResponse

__all__ = ["BasetenChatModel", "BasetenModelAuthError", "PydanticAIBasetenHook"]

log = logging.getLogger(__name__)

#: The prefix of a Baseten model name (``baseten:deepseek-ai/DeepSeek-V3.1``); pydantic-ai has no such provider.
MODEL_PREFIX = "baseten"
#: Extras of a ``pydanticai_baseten`` connection (``model`` and ``fallback_conn_ids`` are common.ai's own).
KNOWN_EXTRAS = frozenset(
    {"model", "fallback_conn_ids", "baseten_conn_id", "model_id", "environment", "deployment_id", "regional"}
)


class BasetenModelAuthError(ModelHTTPError, ModelAuthenticationError, AirflowFailException):  # type: ignore[misc]
    """401/403 from Baseten: the key is rejected. Fails the task without Airflow retries (a retry cannot help).

    Still a pydantic-ai ``ModelHTTPError``, so a ``fallback_conn_ids`` chain moves on to the next connection.
    """


def _flag(value: Any, key: str) -> bool:
    if value is None or value == "" or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise BasetenConfigError(f"Connection extra {key!r} must be true or false, got {value!r}.")


def target_from_extra(extra: dict[str, Any]) -> Target | None:
    """The deployed model a connection's extra names (``model_id`` and friends), or ``None`` for Model APIs."""
    if not extra.get("model_id"):
        for key in ("environment", "deployment_id", "regional"):
            if extra.get(key):
                raise BasetenConfigError(f"Connection extra {key!r} addresses a deployed model: it needs 'model_id'.")
        return None
    return Target.of(
        model_id=extra["model_id"],
        environment=extra.get("environment") or "production",
        deployment_id=extra.get("deployment_id") or None,
        regional=_flag(extra.get("regional"), "regional"),
    )


class BasetenChatModel(OpenAIChatModel):
    """pydantic-ai's OpenAI chat model on a Baseten route, whose HTTP errors carry the provider's explanation.

    A 404 on Model APIs says the slug is unknown or not enabled for the workspace; a 401/403 raises
    :class:`BasetenModelAuthError`. Other errors keep pydantic-ai's category, so fallbacks behave as documented.
    The OpenAI SDK's own retries are off (a chat POST that may have reached the model is billed again).
    """

    def __init__(self, model_name: str, *, provider: OpenAICompatibleProvider, target: Target | None) -> None:
        super().__init__(model_name, provider=provider)
        self.target = target

    def describe_route(self) -> str:
        return self.target.describe() if self.target else f"Model APIs slug {self.model_name!r}"

    def _baseten_error(self, err: ModelHTTPError) -> ModelHTTPError:
        from airflow_provider_baseten.hooks.baseten import _error_class

        host = self.target.host if self.target else MODEL_APIS_HOST
        hint = f"Baseten {self.describe_route()} answered {err.status_code}: {_error_class(err.status_code, host).hint}"
        kwargs: dict[str, Any] = {
            "status_code": err.status_code,
            "model_name": err.model_name,
            "body": err.body,
            "headers": err.headers,
            "hint": hint.rstrip(": "),
            "retry_after": err.retry_after,
        }
        if err.status_code in (401, 403):
            return BasetenModelAuthError(
                kwargs.pop("status_code"), kwargs.pop("model_name"), kwargs.pop("body"), **kwargs
            )
        return ModelHTTPError.for_category(getattr(type(err), "category", None), **kwargs)

    @contextlib.contextmanager
    def _explained_errors(self) -> Iterator[None]:
        try:
            yield
        except ModelHTTPError as err:
            if isinstance(err, BasetenModelAuthError) or (err.hint or "").startswith("Baseten "):
                raise
            raise self._baseten_error(err) from err

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        with self._explained_errors():
            return await super().request(*args, **kwargs)

    @contextlib.asynccontextmanager
    async def request_stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[StreamedResponse]:
        with self._explained_errors():
            async with super().request_stream(*args, **kwargs) as response:
                yield response


class PydanticAIBasetenHook(PydanticAIHook):
    """Baseten Model APIs or a deployed OpenAI-compatible model as a pydantic-ai model, for common.ai.

    Connection (``conn_type="pydanticai_baseten"``), all in the extra:

    - ``baseten_conn_id``: the ``baseten`` connection to take key, gateway, headers, proxy, TLS and timeouts from
      (default ``baseten_default``).
    - ``model``: ``baseten:<slug>`` for Model APIs (``baseten:deepseek-ai/DeepSeek-V3.1``; the prefix is optional),
      or, with ``model_id``, the name sent as the request's ``model`` (default: the model id).
    - ``model_id``, ``environment``, ``deployment_id``, ``regional``: a deployed model's ``/sync/v1`` route,
      addressed as everywhere else in the provider. Empty ``model_id``: Model APIs.
    - ``fallback_conn_ids``: common.ai's fallback chain; may mix Baseten with any other ``pydanticai*`` connection.

    Every call is billed per token; a task retry sends the prompt again. The OpenAI SDK's retries are off, so a
    POST that may have reached the model is never re-sent inside one attempt.

    :param llm_conn_id: this ``pydanticai_baseten`` connection.
    :param model_id: the model name, overriding the extra's ``model`` (common.ai's meaning: not a deployed model id).
    :param fallback_conn_ids: see common.ai's ``PydanticAIHook``.
    :param baseten_conn_id: the ``baseten`` connection, overriding the extra's ``baseten_conn_id``.
    :param target: a deployed model to call, overriding the extra's ``model_id``/``environment``/...
    """

    conn_type = "pydanticai_baseten"
    default_conn_name = "pydanticai_baseten_default"
    hook_name = "Pydantic AI (Baseten)"
    model_provider = MODEL_PREFIX

    def __init__(
        self,
        llm_conn_id: str | None = None,
        model_id: str | None = None,
        fallback_conn_ids: list[str] | None = None,
        *,
        baseten_conn_id: str | None = None,
        target: Target | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(llm_conn_id, model_id, fallback_conn_ids, **kwargs)
        self.baseten_conn_id = baseten_conn_id
        self.target = target

    @staticmethod
    def get_ui_field_behaviour() -> dict[str, Any]:
        """The connection form: everything lives in the extra fields (``conn-fields`` in ``get_provider_info``)."""
        from airflow_provider_baseten.get_provider_info import PYDANTIC_AI_UI_FIELD_BEHAVIOUR

        return {key.replace("-", "_"): value for key, value in PYDANTIC_AI_UI_FIELD_BEHAVIOUR.items()}

    def _baseten_hook(self, extra: dict[str, Any]) -> Any:
        from airflow_provider_baseten.hooks.baseten import BasetenHook

        return BasetenHook(self.baseten_conn_id or extra.get("baseten_conn_id") or BasetenHook.default_conn_name)

    def _model_name(self, name: str | None, target: Target | None) -> str:
        """The name sent as ``model``: a Model APIs slug, or the deployed model's served name (default its id)."""
        if name and name.startswith(f"{MODEL_PREFIX}:"):
            name = name[len(MODEL_PREFIX) + 1 :]
        elif name and _has_recognized_provider_prefix(name):
            raise BasetenConfigError(
                f"Connection {self.llm_conn_id!r} is a Baseten connection, but the model {name!r} names another "
                "provider. Use 'baseten:<slug>' (e.g. 'baseten:deepseek-ai/DeepSeek-V3.1') here, and list the "
                "other provider's connection in fallback_conn_ids."
            )
        if name:
            return name
        if target is not None:
            return target.id
        raise BasetenConfigError(
            f"No model for connection {self.llm_conn_id!r}: set Model to a Model APIs slug such as "
            "'baseten:deepseek-ai/DeepSeek-V3.1', or Deployed model ID to a model you deployed."
        )

    def _resolve_own_model(
        self,
        *,
        forwarded_model_id: str | None = None,
        forwarded_from_conn_id: str | None = None,
        forwarded_model_provider: str | None = None,
    ) -> Model:
        """Build the pydantic-ai model from the named ``baseten`` connection (no request is sent).

        A fallback entry without its own ``model`` takes the primary's name only when it is bare or ``baseten:``
        (common.ai's forwarding rule); an ``openai:...`` name never reaches Baseten.
        """
        from openai import AsyncOpenAI

        from airflow_provider_baseten.hooks.baseten import build_async_client

        _, extra = self._get_conn_and_extra()
        unknown = sorted(set(extra) - KNOWN_EXTRAS)
        if unknown:
            log.warning("Ignoring unknown extras %s in connection %s", unknown, self.llm_conn_id)
        target = self.target or target_from_extra(extra)
        name = self._get_configured_model_name()
        if (
            not name
            and forwarded_model_id
            and not _has_recognized_provider_prefix(forwarded_model_id)
            and (":" not in forwarded_model_id or forwarded_model_provider == self.model_provider)
        ):
            name = forwarded_model_id
        model_name = self._model_name(name, target)

        baseten = self._baseten_hook(extra)
        settings = baseten.settings  # validates the connection and masks its key
        # The provider's one client factory (proxy, TLS, pool); OpenAI 3 takes an httpx client beside its httpx2 ones.
        http_client: Any = build_async_client(settings)
        client = AsyncOpenAI(**baseten._openai_kwargs(target), http_client=http_client)
        self.log.info(
            "Baseten model %s on %s via connection %s",
            model_name,
            target.describe() if target else "Model APIs",
            settings.conn_id,
        )
        # Baseten documents max_tokens; pydantic-ai would send OpenAI's newer max_completion_tokens.
        profile = OpenAIModelProfile(openai_chat_supports_max_completion_tokens=False)
        provider = OpenAICompatibleProvider(MODEL_PREFIX, openai_client=client, profile=profile)
        return BasetenChatModel(model_name, provider=provider, target=target)

    def test_connection(self) -> tuple[bool, str]:
        """Resolve the model (and fallbacks), then one authenticated call that costs no inference. Never raises."""
        ok, message = super().test_connection()
        if not ok:
            return ok, message
        try:
            return self._baseten_hook(self._get_conn_and_extra()[1]).test_connection()
        except Exception as err:
            return False, str(err)

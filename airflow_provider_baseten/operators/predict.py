"""Synchronous inference: ``BasetenPredictOperator`` (models) and ``BasetenChainRunOperator`` (chains)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_baseten.exceptions import BasetenAmbiguousSubmitError
from airflow_provider_baseten.hooks.calls import ResponseFormat, check_response_format
from airflow_provider_baseten.operators._base import (
    ADDRESS_TEMPLATE_FIELDS,
    BasetenBaseOperator,
    check_json_value,
    check_seconds,
    is_templated,
)
from airflow_provider_baseten.operators._results import (
    DEFAULT_MAX_RESULT_BYTES,
    as_storage_path,
    check_threshold,
    store_if_large,
)
from airflow_provider_baseten.operators.links import BasetenChainLink, BasetenModelLink

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context, ObjectStoragePath

    from airflow_provider_baseten.hooks.addressing import Target
    from airflow_provider_baseten.operators.links import _PersistableLink

_ASYNC_HINT = "For predictions that run this long, use BasetenAsyncPredictOperator (Baseten queues them, up to 1 h)."


class _BasetenSyncInferenceOperator(BasetenBaseOperator):
    """Shared by predict and chain run: one JSON input, one JSON answer, the same size and timeout rules."""

    #: Name of the templated input attribute (``model_input`` or ``chain_input``).
    input_field: ClassVar[str]
    link_class: ClassVar[type[_PersistableLink]]

    def __init__(
        self,
        *,
        timeout: float | None = None,
        max_result_bytes: int | None = DEFAULT_MAX_RESULT_BYTES,
        result_path: str | ObjectStoragePath | None = None,
        response_format: ResponseFormat = "json",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.timeout = None if timeout is None else check_seconds(timeout, "timeout")
        self.response_format = check_response_format(response_format)
        self.max_result_bytes = check_threshold(max_result_bytes)
        self.result_path = result_path
        if not is_templated(result_path):
            as_storage_path(result_path)

    def _payload(self) -> Any:
        payload = getattr(self, self.input_field)
        check_json_value(payload, self.input_field)
        return payload

    def execute(self, context: Context) -> Any:
        target = self.target
        payload = self._payload()
        as_storage_path(self.result_path)  # a rendered result_path fails here, before the paid call
        self.link_class.persist(context, self)
        try:
            result = self._call(target, payload, context)
        finally:
            self.hook.close()
        self.log.info(
            "%s answered %s (Baseten request id %s).", target.describe(), result.status_code, result.request_id
        )
        data = result.data
        if isinstance(data, bytes):  # response_format="bytes": XCom holds JSON, so the bytes go base64-encoded
            import base64

            data = base64.b64encode(data).decode("ascii")
        return store_if_large(data, context, threshold_bytes=self.max_result_bytes, base_path=self.result_path)

    def _call(self, target: Target, payload: Any, context: Context) -> Any:
        self.log.info(
            "Calling %s (read timeout %s).", target.describe(), f"{self.timeout} s" if self.timeout else "default"
        )
        try:
            return self.call_activating(
                target,
                lambda: self.hook.predict(target, payload, timeout=self.timeout, response_format=self.response_format),
                context,
            )
        except BasetenAmbiguousSubmitError as err:
            import httpx

            if isinstance(err.__cause__, httpx.ReadTimeout):
                raise BasetenAmbiguousSubmitError(f"{err} {_ASYNC_HINT}") from err
            raise


class BasetenPredictOperator(_BasetenSyncInferenceOperator):
    """Call a deployed model's ``/predict`` once and return its JSON answer (to XCom).

    **Cost, retries, idempotency.** Every run is a billed prediction. The hook retries the call only when it provably
    never reached the model (connect errors, 429, 503); after that, an error fails the task, and a *task retry sends a
    new, billed prediction*. A read timeout is not retried (the model may still be running). Baseten's sync predict
    ends with a 504 after its server timeout; the error then suggests ``BasetenAsyncPredictOperator``.

    Results larger than ``max_result_bytes`` (as JSON) are written to object storage and the task returns the file's
    URI instead (``{result_path}/{dag_id}/{run_id}/{task_id}[-{map_index}].json``; a retry overwrites it).
    Map over inputs with ``BasetenPredictOperator.partial(model_id=...).expand(model_input=[...])``.

    :param model_input: the JSON body sent to the model (templated; rendered as JSON in the UI).
    :param model_id: the model to call (templated).
    :param environment: ``production`` (default), ``development`` or a named environment (templated).
    :param deployment_id: pin one deployment instead of an environment (templated).
    :param regional: use the regional host ``model-{id}-{environment}.api.baseten.co``.
    :param baseten_conn_id: the ``baseten`` connection (templated).
    :param timeout: read timeout in seconds for this call; default: the connection's ``timeout`` (1230 s).
    :param max_result_bytes: results whose JSON is larger go to object storage (default 1 MiB; ``None``: never).
    :param result_path: base folder (URI or ``ObjectStoragePath``) for large results (templated); default
        ``{[baseten] output_location}/baseten-results``; with neither, results stay in XCom.
    :param response_format: ``"json"`` (default: a 2xx answer that is not JSON fails the task, naming the status,
        content type and the start of the body), ``"text"`` (the body as a string) or ``"bytes"`` (the body,
        base64-encoded into a string for XCom; decode with ``base64.b64decode``).
    """

    template_fields: Sequence[str] = (*ADDRESS_TEMPLATE_FIELDS, "model_input", "result_path")
    template_fields_renderers: ClassVar[dict[str, str]] = {"model_input": "json"}
    operator_extra_links = (BasetenModelLink(),)
    target_kind = "model"
    input_field = "model_input"
    link_class = BasetenModelLink

    def __init__(self, *, model_input: Any, model_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(model_id=model_id, **kwargs)
        self.model_input = model_input
        check_json_value(model_input, "model_input")


class BasetenChainRunOperator(_BasetenSyncInferenceOperator):
    """Run a deployed chain once (``/run_remote``) and return its JSON answer (to XCom).

    **Cost, retries, idempotency.** Every run executes (and bills) every chainlet the chain calls. The hook retries
    only when the call provably never reached the chain; a *task retry runs the chain again*. Long runs end with
    Baseten's 504; use ``BasetenAsyncPredictOperator`` with ``chain_id`` for those.

    Results larger than ``max_result_bytes`` go to object storage, as for :class:`BasetenPredictOperator`.

    :param chain_input: the JSON body sent to the chain's entrypoint (templated; rendered as JSON in the UI).
    :param chain_id: the chain to run (templated).
    :param environment: ``production`` (default), ``development`` or a named environment (templated).
    :param deployment_id: pin one chain deployment instead of an environment (templated).
    :param regional: use the regional host ``chain-{id}-{environment}.api.baseten.co``.
    :param baseten_conn_id: the ``baseten`` connection (templated).

    ``timeout``, ``max_result_bytes``, ``result_path`` and ``response_format`` work as for
    :class:`BasetenPredictOperator`.
    """

    template_fields: Sequence[str] = (*ADDRESS_TEMPLATE_FIELDS, "chain_input", "result_path")
    template_fields_renderers: ClassVar[dict[str, str]] = {"chain_input": "json"}
    operator_extra_links = (BasetenChainLink(),)
    target_kind = "chain"
    input_field = "chain_input"
    link_class = BasetenChainLink

    def __init__(self, *, chain_input: Any, chain_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(chain_id=chain_id, **kwargs)
        self.chain_input = chain_input
        check_json_value(chain_input, "chain_input")

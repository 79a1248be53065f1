"""Engine deployments' sync routes (BEI embeddings, rerank, classify, any ``/sync/{route}``): a mixin of the hook.

Bodies are field for field what Baseten's ``baseten-performance-client`` sends (``tests/integration/
test_engine_fidelity.py`` records it). These routes have no side effects, so they follow the *idempotent* row of
:mod:`airflow_provider_baseten.hooks.retries`: 408, 429, 5xx, timeouts and resets are retried. A
:class:`~airflow_provider_baseten.hooks.retry_budget.RetryBudget` passed as ``retry_budget=`` bounds the retries of
a whole batch (every call given the same object), so a failure storm cannot multiply the load.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from array import array
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack

from airflow_provider_baseten.exceptions import BasetenConfigError, BasetenModelError
from airflow_provider_baseten.hooks.calls import CUSTOMER_REQUEST_ID_HEADER, _Call, _validated

if TYPE_CHECKING:
    import httpx

    from airflow_provider_baseten.hooks.addressing import Target
    from airflow_provider_baseten.hooks.engine_models import ClassifyLabel, EmbeddingsResponse, RerankResult
    from airflow_provider_baseten.hooks.retry_budget import RetryBudget

__all__ = ["ClassifyOptions", "EmbedOptions", "EncodingFormat", "EngineMixin", "EngineOptions", "RerankOptions"]

EncodingFormat = Literal["float", "base64"]
TruncationDirection = Literal["Left", "Right"]


class EngineOptions(TypedDict, total=False):
    """Keyword options of every engine call."""

    timeout: float | None
    """Read timeout in seconds (default: the hook's, else the connection's)."""
    request_id: str | None
    """Sent as ``x-baseten-customer-request-id`` (default: the hook's, built from the running task)."""
    retry_budget: RetryBudget | None
    """A batch-wide retry budget shared by every call of the batch."""


class EmbedOptions(EngineOptions, total=False):
    model: str
    dimensions: int | None
    encoding_format: EncodingFormat | None


class _ScoringOptions(EngineOptions, total=False):
    raw_scores: bool
    truncate: bool | None
    truncation_direction: TruncationDirection
    model: str | None


class RerankOptions(_ScoringOptions, total=False):
    return_text: bool


class ClassifyOptions(_ScoringOptions, total=False):
    pass


#: A customer request id: visible ASCII and spaces (it goes into a header), at most 256 characters.
_CUSTOMER_ID = re.compile(r"[\x20-\x7e]{1,256}")


def _texts(value: object, what: str) -> list[str]:
    """``value`` as a non-empty list of strings, or a BasetenConfigError naming what is wrong (never the texts)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise BasetenConfigError(f"{what} must be a list of strings, got {type(value).__name__}; nothing was sent.")
    texts = list(value)
    if not texts:
        raise BasetenConfigError(f"{what} is empty; nothing was sent.")
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise BasetenConfigError(f"{what}[{position}] is a {type(text).__name__}, not a string; nothing was sent.")
    return texts


def _headers(request_id: str | None) -> dict[str, str]:
    if request_id is None:
        return {}
    if not isinstance(request_id, str) or not _CUSTOMER_ID.fullmatch(request_id):
        raise BasetenConfigError(
            "request_id must be 1-256 visible ASCII characters (it is sent as x-baseten-customer-request-id); "
            "nothing was sent."
        )
    return {CUSTOMER_REQUEST_ID_HEADER: request_id}


def _float32(encoded: str, position: int, what: str) -> list[float]:
    """A base64 ``embedding`` (little-endian float32, as OpenAI and BEI send it) as floats."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except ValueError:
        raise BasetenModelError(f"{what}: embedding {position} is not valid base64.") from None
    if len(raw) % 4:
        raise BasetenModelError(f"{what}: embedding {position} is {len(raw)} bytes, not a float32 vector.")
    vector = array("f")
    vector.frombytes(raw)
    if sys.byteorder == "big":
        vector.byteswap()
    return vector.tolist()


@cache
def _adapter(shape: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(shape)


def _all_validated(shape: Any, answer: Any, what: str, one_by_one: Callable[[], Any]) -> Any:
    """``answer`` validated as ``shape`` (a list of answer models) in one pydantic call: the per-item loop cost
    rerank and classify jobs a fifth of their client CPU. When it fails, ``one_by_one`` (the per-item
    :func:`_validated`) runs instead, for the error that names the bad fields."""
    from pydantic import ValidationError

    try:
        return _adapter(shape).validate_python(answer)
    except ValidationError:
        return one_by_one()


@cache
def _json_decoder() -> Callable[[bytes], Any]:
    """``msgspec.json.decode`` where installed (Airflow's task SDK brings it): it parses an embeddings answer of
    float vectors about 8 times faster than ``json.loads`` (1 MB, 128 texts at 384 dimensions: 9 ms against 72)."""
    try:
        import msgspec.json
    except ImportError:
        return json.loads
    return msgspec.json.decode


@cache
def _typed_embeddings_decoder() -> Callable[[bytes], Any] | None:
    """A msgspec decoder of the embeddings answer into typed structs: types are checked while parsing, in C, so
    the hot path skips the pydantic pass (which took a third of an embeddings run's client CPU). ``None`` without
    msgspec."""
    try:
        import msgspec
    except ImportError:
        return None

    # defstruct, not class bodies: this module's annotations are strings, which msgspec cannot resolve locally.
    vector = msgspec.defstruct("Vector", [("index", int), ("embedding", list[float] | str)])
    usage = msgspec.defstruct("Usage", [("prompt_tokens", int, 0), ("total_tokens", int, 0)])
    answer = msgspec.defstruct(
        "Answer",
        [("data", list[vector]), ("usage", usage | None, None), ("model", str | None, None)],  # type: ignore[valid-type]
    )
    return msgspec.json.Decoder(answer).decode


class EngineMixin:
    """Engine calls of :class:`~airflow_provider_baseten.hooks.baseten.BasetenHook`."""

    if TYPE_CHECKING:

        def _send(self, call: _Call) -> httpx.Response: ...

        async def _asend(self, call: _Call, *, client: httpx.AsyncClient | None = None) -> httpx.Response: ...

        def _bad_body(
            self, response: httpx.Response, call: _Call, expected: str, hint: str = ""
        ) -> BasetenModelError: ...

    # --- sending ------------------------------------------------------------------------------------------------

    @staticmethod
    def _engine_call(
        target: Target,
        route: str,
        body: Any,
        timeout: float | None,
        request_id: str | None,
        retry_budget: RetryBudget | None,
    ) -> _Call:
        if not isinstance(route, str) or route.startswith("/") or not route:
            raise BasetenConfigError(
                f"Invalid sync route {route!r}: expected a relative path such as 'v1/embeddings' (no leading '/')."
            )
        endpoint = target.sync_endpoint(route)
        what = f"sync/{route} on {target.describe()}"
        return _Call("POST", endpoint, what, True, body, timeout, _headers(request_id), retry_budget)

    def _engine_json(self, call: _Call) -> Any:
        if call.retry_budget is not None:
            call.retry_budget.record_request()
        return self._engine_data(self._send(call), call)

    async def _engine_ajson(self, call: _Call, client: httpx.AsyncClient | None) -> Any:
        if call.retry_budget is not None:
            call.retry_budget.record_request()
        return self._engine_data(await self._asend(call, client=client), call)

    def _engine_data(self, response: httpx.Response, call: _Call) -> Any:
        """The answer's JSON (``None`` if empty); a 2xx body that is not JSON is a BasetenModelError."""
        if not response.content:
            return None
        try:
            return _json_decoder()(response.content)
        except ValueError:
            raise self._bad_body(response, call, "JSON") from None

    def sync_request(
        self,
        target: Target,
        route: str,
        body: Any,
        *,
        timeout: float | None = None,
        request_id: str | None = None,
        retry_budget: RetryBudget | None = None,
    ) -> Any:
        """``POST /{env}/sync/{route}`` on the model host (bare ``/sync/{route}`` on regional hosts): parsed JSON.

        For routes without side effects (an engine's embeddings, rerank, classify, tokenize...): retried on 408,
        429, 5xx, timeouts and resets. A billed generation (``v1/chat/completions``) belongs in ``chat_completion``,
        which is not retried once it may have run. ``request_id`` is sent as ``x-baseten-customer-request-id``.
        """
        return self._engine_json(self._engine_call(target, route, body, timeout, request_id, retry_budget))

    async def async_sync_request(
        self,
        target: Target,
        route: str,
        body: Any,
        *,
        timeout: float | None = None,  # noqa: ASYNC109  (the HTTP read timeout, as in sync_request())
        request_id: str | None = None,
        retry_budget: RetryBudget | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> Any:
        """Async twin of :meth:`sync_request`, on the shared async client unless one is given."""
        call = self._engine_call(target, route, body, timeout, request_id, retry_budget)
        return await self._engine_ajson(call, client)

    # --- embeddings ------------------------------------------------------------------------------------------

    @classmethod
    def _embed_call(cls, target: Target, texts: Sequence[str], options: EmbedOptions) -> _Call:
        _check_options(options, EmbedOptions, "embed")
        body: dict[str, Any] = {"input": _texts(texts, "texts"), "model": options.get("model", "model")}
        encoding_format = options.get("encoding_format")
        if encoding_format is not None:
            if encoding_format not in ("float", "base64"):
                raise BasetenConfigError(f"encoding_format must be 'float' or 'base64', got {encoding_format!r}.")
            body["encoding_format"] = encoding_format
        dimensions = options.get("dimensions")
        if dimensions is not None:
            if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
                raise BasetenConfigError(f"dimensions must be a positive integer, got {dimensions!r}.")
            body["dimensions"] = dimensions
        return cls._options_call(target, "v1/embeddings", body, options)

    @staticmethod
    def _embeddings_of(answer: Any, call: _Call) -> EmbeddingsResponse:
        """The answer, base64 vectors decoded, checked: one vector per input, indices ``0..n-1``, equal lengths."""
        from airflow_provider_baseten.hooks.engine_models import EmbeddingsResponse

        what = call.what
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            raise BasetenModelError(f"{what}: the answer is not an embeddings list (no 'data' array).")
        decoded: dict[int, list[float]] = {}  # base64 vectors: floats by construction, not validated again
        items = []
        for position, item in enumerate(data):
            if isinstance(item, dict) and isinstance(item.get("embedding"), str):
                decoded[position] = _float32(item["embedding"], position, what)
                item = {**item, "embedding": []}
            items.append(item)
        response = _validated(EmbeddingsResponse, {**answer, "data": items}, what)
        for position, floats in decoded.items():
            response.data[position].embedding = floats
        return EngineMixin._checked_embeddings(response, call)

    @staticmethod
    def _checked_embeddings(response: EmbeddingsResponse, call: _Call) -> EmbeddingsResponse:
        """One vector per input, indices ``0..n-1`` (sorted here), equal lengths (the ones asked for)."""
        what = call.what
        expected = len(call.json_body["input"])
        indices = sorted(item.index for item in response.data)
        if indices != list(range(expected)):
            raise BasetenModelError(
                f"{what}: sent {expected} texts but got {len(response.data)} vectors with indices that are not "
                f"0..{expected - 1} exactly once."
            )
        response.data.sort(key=lambda item: item.index)
        lengths = {len(item.embedding) for item in response.data}
        wanted = call.json_body.get("dimensions")
        if len(lengths) > 1 or (wanted is not None and lengths != {wanted}):
            raise BasetenModelError(
                f"{what}: vector lengths {sorted(lengths)} differ"
                + (f" from the {wanted} dimensions asked for." if wanted is not None else " from one another.")
            )
        return response

    def _embeddings_answer(
        self, body: bytes, call: _Call, response: Callable[[], httpx.Response]
    ) -> EmbeddingsResponse:
        """A 2xx answer's bytes (the hot path's) decoded and checked as :meth:`aembed` does; ``response`` builds
        the ``httpx.Response`` an error message needs (only on the error path).

        With msgspec, the answer is its typed struct, not the pydantic model (whose construction took a tenth of an
        embeddings run's client CPU): the same attributes (``data[i].index``, ``data[i].embedding`` as floats,
        ``usage.prompt_tokens``/``total_tokens``; ``usage`` may be ``None``), for the operator's hot path only."""
        typed = _typed_embeddings_decoder()
        if typed is not None and body:
            try:
                fast = typed(body)
            except ValueError:
                pass  # not JSON, or not this shape: the checks below say which, as aembed would
            else:
                return self._checked_embeddings(_float_vectors(fast, call.what), call)
        try:
            answer = _json_decoder()(body) if body else None
        except ValueError:
            raise self._bad_body(response(), call, "JSON") from None
        return self._embeddings_of(answer, call)

    def embed(self, target: Target, texts: Sequence[str], **options: Unpack[EmbedOptions]) -> EmbeddingsResponse:
        """``POST /sync/v1/embeddings`` (OpenAI format): one vector per text, in input order, float32 values.

        Options (:class:`EmbedOptions`): ``model`` (default ``"model"``; BEI ignores it), ``dimensions``,
        ``encoding_format`` (``"float"`` or ``"base64"``, decoded here either way), ``timeout``, ``request_id``,
        ``retry_budget``. One request for all ``texts`` (pack them yourself, e.g. 8-128 per call). Retried like
        every engine route; an answer with a vector missing, repeated or of another length raises
        :class:`~airflow_provider_baseten.exceptions.BasetenModelError`.
        """
        call = self._embed_call(target, texts, options)
        return self._embeddings_of(self._engine_json(call), call)

    async def aembed(
        self,
        target: Target,
        texts: Sequence[str],
        *,
        client: httpx.AsyncClient | None = None,
        **options: Unpack[EmbedOptions],
    ) -> EmbeddingsResponse:
        """Async twin of :meth:`embed`, on the shared async client unless one is given."""
        call = self._embed_call(target, texts, options)
        return self._embeddings_of(await self._engine_ajson(call, client), call)

    # --- rerank ----------------------------------------------------------------------------------------------

    @classmethod
    def _rerank_call(cls, target: Target, query: str, texts: Sequence[str], options: RerankOptions) -> _Call:
        _check_options(options, RerankOptions, "rerank")
        if not isinstance(query, str):
            raise BasetenConfigError(f"query must be a string, got {type(query).__name__}; nothing was sent.")
        body: dict[str, Any] = {
            "query": query,
            "raw_scores": bool(options.get("raw_scores", False)),
            "return_text": bool(options.get("return_text", False)),
            "texts": _texts(texts, "texts"),
            "truncate": bool(options.get("truncate")),
            "truncation_direction": _direction(options.get("truncation_direction", "Right")),
        }
        if options.get("model") is not None:
            body["model"] = options["model"]
        return cls._options_call(target, "rerank", body, options)

    @staticmethod
    def _rerank_of(answer: Any, call: _Call) -> list[RerankResult]:
        from airflow_provider_baseten.hooks.engine_models import RerankResult

        what = call.what
        if isinstance(answer, dict) and isinstance(answer.get("data"), list):
            answer = answer["data"]
        if not isinstance(answer, list):
            raise BasetenModelError(f"{what}: the answer is not a list of scored texts.")
        results = _all_validated(
            list[RerankResult], answer, what, lambda: [_validated(RerankResult, item, what) for item in answer]
        )
        expected = len(call.json_body["texts"])
        indices = [result.index for result in results]
        if len(set(indices)) != len(indices) or not all(0 <= index < expected for index in indices):
            raise BasetenModelError(
                f"{what}: sent {expected} texts but the answer's indices {indices} are not each one of "
                f"0..{expected - 1} at most once."
            )
        return sorted(results, key=lambda result: -result.score)

    def rerank(
        self, target: Target, query: str, texts: Sequence[str], **options: Unpack[RerankOptions]
    ) -> list[RerankResult]:
        """``POST /sync/rerank``: ``texts`` scored against ``query``, best first (``index`` is the text's position).

        Options (:class:`RerankOptions`): ``return_text``, ``truncate`` (``None`` sends ``false``, as the
        performance client does), ``raw_scores``, ``truncation_direction`` (``"Right"``), ``model``, ``timeout``,
        ``request_id``, ``retry_budget``. Retried like every engine route.
        """
        call = self._rerank_call(target, query, texts, options)
        return self._rerank_of(self._engine_json(call), call)

    async def arerank(
        self,
        target: Target,
        query: str,
        texts: Sequence[str],
        *,
        client: httpx.AsyncClient | None = None,
        **options: Unpack[RerankOptions],
    ) -> list[RerankResult]:
        """Async twin of :meth:`rerank`."""
        call = self._rerank_call(target, query, texts, options)
        return self._rerank_of(await self._engine_ajson(call, client), call)

    # --- classify --------------------------------------------------------------------------------------------

    @classmethod
    def _classify_call(cls, target: Target, inputs: Sequence[str], options: ClassifyOptions) -> _Call:
        _check_options(options, ClassifyOptions, "classify")
        body: dict[str, Any] = {
            "inputs": [[text] for text in _texts(inputs, "inputs")],
            "raw_scores": bool(options.get("raw_scores", False)),
            "truncate": bool(options.get("truncate")),
            "truncation_direction": _direction(options.get("truncation_direction", "Right")),
        }
        if options.get("model") is not None:
            body["model"] = options["model"]
        return cls._options_call(target, "predict", body, options)

    @staticmethod
    def _labels_of(answer: Any, call: _Call) -> list[list[ClassifyLabel]]:
        from airflow_provider_baseten.hooks.engine_models import ClassifyLabel

        what = call.what
        expected = len(call.json_body["inputs"])
        if not isinstance(answer, list) or not all(isinstance(labels, list) for labels in answer):
            raise BasetenModelError(f"{what}: the answer is not one list of labels per input.")
        if len(answer) != expected:
            raise BasetenModelError(f"{what}: sent {expected} inputs but got {len(answer)} lists of labels.")
        return _all_validated(
            list[list[ClassifyLabel]],
            answer,
            what,
            lambda: [[_validated(ClassifyLabel, label, what) for label in labels] for labels in answer],
        )

    def classify(
        self, target: Target, inputs: Sequence[str], **options: Unpack[ClassifyOptions]
    ) -> list[list[ClassifyLabel]]:
        """``POST /sync/predict`` on a classification engine: the labels and scores of each input, in input order.

        Options (:class:`ClassifyOptions`): ``raw_scores``, ``truncate``, ``truncation_direction``, ``model``,
        ``timeout``, ``request_id``, ``retry_budget``. Not the custom-model ``/predict`` (billed, not retried): an
        engine's classify has no side effects and is retried like every engine route.
        """
        call = self._classify_call(target, inputs, options)
        return self._labels_of(self._engine_json(call), call)

    async def aclassify(
        self,
        target: Target,
        inputs: Sequence[str],
        *,
        client: httpx.AsyncClient | None = None,
        **options: Unpack[ClassifyOptions],
    ) -> list[list[ClassifyLabel]]:
        """Async twin of :meth:`classify`."""
        call = self._classify_call(target, inputs, options)
        return self._labels_of(await self._engine_ajson(call, client), call)

    @classmethod
    def _options_call(cls, target: Target, route: str, body: dict[str, Any], options: EngineOptions) -> _Call:
        return cls._engine_call(
            target, route, body, options.get("timeout"), options.get("request_id"), options.get("retry_budget")
        )


def _float_vectors(answer: Any, what: str) -> Any:
    """The typed (already checked) msgspec answer with its base64 vectors decoded to floats, in place."""
    for position, item in enumerate(answer.data):
        if isinstance(item.embedding, str):
            item.embedding = _float32(item.embedding, position, what)
    return answer


def _check_options(options: Mapping[str, Any], allowed: type, what: str) -> None:
    """A typo (``dimension=3``) must fail, not be ignored: TypedDict keyword arguments are not checked at runtime."""
    unknown = sorted(set(options) - set(allowed.__optional_keys__))  # type: ignore[attr-defined]
    if unknown:
        raise BasetenConfigError(
            f"{what}: unknown option(s) {', '.join(unknown)}; expected {', '.join(sorted(allowed.__optional_keys__))}."  # type: ignore[attr-defined]
        )


def _direction(value: object) -> str:
    if value not in ("Left", "Right"):
        raise BasetenConfigError(f"truncation_direction must be 'Left' or 'Right', got {value!r}.")
    return str(value)

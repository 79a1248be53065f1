"""``BasetenChatOperator``: one OpenAI-compatible chat completion, on Model APIs or a deployed model.

Nothing heavy is imported here at DAG-parse time: no OpenAI SDK (the hook speaks the protocol itself), and pydantic
and ``jsonschema`` load only in ``execute`` when structured output is asked for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_baseten.exceptions import BasetenConfigError, BasetenError
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.operators._base import (
    ADDRESS_TEMPLATE_FIELDS,
    BasetenBaseOperator,
    _has_template,
    check_seconds,
)
from airflow_provider_baseten.operators._results import (
    DEFAULT_MAX_RESULT_BYTES,
    as_storage_path,
    check_threshold,
    store_if_large,
)
from airflow_provider_baseten.operators.links import BasetenModelLink

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context, ObjectStoragePath

    from airflow_provider_baseten.hooks.models import ChatCompletion

__all__ = ["BasetenChatOperator", "BasetenInvalidOutputError"]

_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})
#: Request keys the operator sets itself; ``extra_body`` may not override them.
_RESERVED_KEYS = frozenset({"model", "messages", "stream", "stream_options"})
_FORMAT_TYPES = frozenset({"text", "json_object", "json_schema"})
_SCHEMA_NAME = re.compile(r"[^A-Za-z0-9_-]+")
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n(?P<body>.*?)\n?```\s*$", re.DOTALL)
_PREVIEW = 300

Validator = Callable[[str], Any]


class BasetenInvalidOutputError(BasetenError, ValueError):
    """The model answered, but its content is not valid for the requested ``response_format``.

    The tokens were generated and billed; retrying the task asks (and pays) again.
    """


class BasetenChatOperator(BasetenBaseOperator):
    """Run one chat completion on Baseten Model APIs (``model=`` slug) or a deployed OpenAI-compatible model.

    With ``model="deepseek-ai/DeepSeek-V3.1"`` (and no ``model_id``) the request goes to Model APIs
    (``inference.baseten.co/v1/chat/completions``). With ``model_id=...`` it goes to that deployment's
    ``/sync/v1/chat/completions`` (``environment``/``deployment_id``/``regional`` as for every operator); ``model``
    is then only sent as the request's ``model`` field (default: the ``model_id``), which Baseten ignores there.

    Returns ``{content, message, parsed, tool_calls, finish_reason, usage, model, id}`` (first choice only) and also
    pushes ``usage`` under the XCom key ``usage``.

    **Cost, retries, idempotency.** Every execution generates and bills tokens; a task retry sends the conversation
    again and is billed again. The hook retries the POST only when it provably never reached the model (connect
    errors, 429, 503, 529, honouring ``Retry-After``); after a read timeout or a reset it raises
    :class:`~airflow_provider_baseten.exceptions.BasetenAmbiguousSubmitError` instead of paying twice.
    ``max_total_tokens`` is checked on the returned usage, after the tokens were billed: it stops a runaway task
    (and its downstream) but bounds nothing; ``max_tokens`` bounds the answer.

    :param baseten_conn_id: the ``baseten`` connection (templated).
    :param model_id: a deployed OpenAI-compatible model (templated); omit for Model APIs.
    :param environment: with ``model_id``: ``production`` (default), ``development`` or a named environment.
    :param deployment_id: with ``model_id``: pin one deployment (templated).
    :param regional: with ``model_id``: use the regional host.
    :param model: the Model APIs slug (templated), e.g. ``deepseek-ai/DeepSeek-V3.1``; required without ``model_id``.
    :param messages: OpenAI chat messages (templated): a list of ``{"role": ..., "content": ...}`` dicts, or a JSON
        string of one. Exactly one of ``messages`` and ``prompt``.
    :param prompt: shortcut for one user message (templated).
    :param system_prompt: a system message put first (templated); with ``prompt`` or ``messages``.
    :param response_format: structured output: a pydantic model class, a JSON schema dict (sent as
        ``{"type": "json_schema", "json_schema": {"name", "schema", "strict": true}}``), or an OpenAI
        ``response_format`` dict (``{"type": "json_schema" | "json_object" | "text", ...}``) passed as is. The
        returned content is parsed and validated; the JSON-able result is returned under ``parsed``.
    :param allow_invalid_output: with ``response_format``, return ``parsed=None`` (and the raw ``content``) with a
        warning instead of raising :class:`BasetenInvalidOutputError` when the content does not validate.
    :param tools: OpenAI ``tools`` (function definitions), passed through; calls come back under ``tool_calls``.
    :param tool_choice: OpenAI ``tool_choice`` (``"auto"``, ``"none"``, ``"required"`` or a function), passed through.
    :param max_tokens: maximum tokens of the answer (Baseten's default is 4096).
    :param temperature: sampling temperature, 0 to 2.
    :param top_p: nucleus sampling, 0 to 1.
    :param stop: stop sequence(s).
    :param seed: sampling seed.
    :param extra_body: further request fields merged into the body (templated), e.g. ``{"top_k": 20}``;
        it may not set ``model``, ``messages`` or ``stream``.
    :param stream: stream the answer into the task log line by line as it is generated; the full result (with
        usage) is still returned.
    :param max_total_tokens: fail the task when ``usage.total_tokens`` exceeds this (after billing, see above).
    :param timeout: read timeout in seconds for this request (default: the connection's).
    :param max_result_bytes: a result whose JSON is larger goes to object storage and the task returns its URI
        instead (default 1 MiB; ``None``: never).
    :param result_path: base folder (URI or ``ObjectStoragePath``) for large results (templated); default
        ``{[baseten] output_location}/baseten-results``; with neither, results stay in XCom.
    """

    template_fields: Sequence[str] = (
        *ADDRESS_TEMPLATE_FIELDS,
        "model",
        "messages",
        "prompt",
        "system_prompt",
        "extra_body",
        "result_path",
    )
    template_fields_renderers = {"messages": "json", "extra_body": "json"}
    operator_extra_links = (BasetenModelLink(),)
    requires_target = False
    ui_color = "#efe5ff"

    def __init__(
        self,
        *,
        model: str | None = None,
        messages: list[dict[str, Any]] | str | None = None,
        prompt: str | None = None,
        system_prompt: str | None = None,
        response_format: type[Any] | dict[str, Any] | None = None,
        allow_invalid_output: bool = False,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        extra_body: dict[str, Any] | None = None,
        stream: bool = False,
        max_total_tokens: int | None = None,
        timeout: float | None = None,
        max_result_bytes: int | None = DEFAULT_MAX_RESULT_BYTES,
        result_path: str | ObjectStoragePath | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.messages = messages
        self.prompt = prompt
        self.system_prompt = system_prompt
        self.response_format = response_format
        self.allow_invalid_output = allow_invalid_output
        self.tools = tools
        self.tool_choice = tool_choice
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.stop = stop
        self.seed = seed
        self.extra_body = extra_body
        self.stream = stream
        self.max_total_tokens = max_total_tokens
        self.timeout = timeout
        self.max_result_bytes = check_threshold(max_result_bytes)
        self.result_path = result_path
        self._validate_literals()
        if not _has_template(result_path):
            as_storage_path(result_path)

    # --- validation --------------------------------------------------------------------------------------------

    def _validate_literals(self) -> None:
        """What can be checked at DAG-parse time, without importing pydantic or jsonschema."""
        if self.chain_id:
            raise BasetenConfigError("BasetenChatOperator calls models, not chains: pass model= or model_id=.")
        if not self.model_id:
            if not self.model:
                raise BasetenConfigError(
                    "Pass model= (a Model APIs slug such as 'deepseek-ai/DeepSeek-V3.1') or model_id= (a deployed "
                    "OpenAI-compatible model)."
                )
            if self.deployment_id or self.regional or self.environment != "production":
                raise BasetenConfigError(
                    "environment, deployment_id and regional address a deployed model: they need model_id."
                )
        elif not _has_template(self.model_id, self.environment, self.deployment_id):
            Target.of(
                model_id=self.model_id,
                environment=self.environment,
                deployment_id=self.deployment_id,
                regional=self.regional,
            )
        if self.messages is not None and self.prompt is not None:
            raise BasetenConfigError("Pass either messages= or prompt=, not both.")
        if self.messages is None and self.prompt is None:
            raise BasetenConfigError("Pass messages= (a list of chat messages) or prompt=.")
        if isinstance(self.messages, list):
            _check_messages(self.messages)
        _check_range("max_tokens", self.max_tokens, minimum=1, integer=True)
        _check_range("max_total_tokens", self.max_total_tokens, minimum=1, integer=True)
        _check_range("temperature", self.temperature, minimum=0, maximum=2)
        _check_range("top_p", self.top_p, minimum=0, maximum=1)
        if self.timeout is not None:
            self.timeout = check_seconds(self.timeout, "timeout")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise BasetenConfigError(f"seed must be an integer, got {self.seed!r}.")
        if self.tools is not None and not (
            isinstance(self.tools, list) and all(isinstance(tool, dict) for tool in self.tools)
        ):
            raise BasetenConfigError("tools must be a list of OpenAI tool definitions (dicts).")
        if self.extra_body is not None and not _has_template(self.extra_body):
            _check_extra_body(self.extra_body)
        rf = self.response_format
        if rf is not None and not isinstance(rf, dict | type):
            raise BasetenConfigError("response_format must be a pydantic model class or a dict (JSON schema).")
        if isinstance(rf, dict) and rf.get("type") == "json_schema" and not isinstance(rf.get("json_schema"), dict):
            raise BasetenConfigError("response_format of type 'json_schema' needs a 'json_schema' object.")

    def _target_or_none(self) -> Target | None:
        """The deployed model's target, or ``None`` for Model APIs (validated after rendering)."""
        if not self.model_id:
            if not self.model:
                raise BasetenConfigError("model rendered empty and no model_id: nothing to call.")
            return None
        return self.target

    def _rendered_messages(self) -> list[dict[str, Any]]:
        messages: Any = self.messages
        if isinstance(messages, str):
            try:
                messages = json.loads(messages)
            except json.JSONDecodeError:
                raise BasetenConfigError("messages rendered to a string that is not a JSON list of messages.") from None
        if messages is None:
            if not isinstance(self.prompt, str) or not self.prompt:
                raise BasetenConfigError("prompt rendered empty.")
            messages = [{"role": "user", "content": self.prompt}]
        _check_messages(messages)
        if self.system_prompt:
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        return list(messages)

    # --- request and result ------------------------------------------------------------------------------------

    def build_request(self, target: Target | None, wire_format: dict[str, Any] | None) -> dict[str, Any]:
        """The chat request body (without ``stream``) from the rendered fields."""
        body: dict[str, Any] = {}
        if self.extra_body:
            body.update(_check_extra_body(self.extra_body))
        body["model"] = self.model or (target.id if target else None)
        body["messages"] = self._rendered_messages()
        optional = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": self.stop,
            "seed": self.seed,
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "response_format": wire_format,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        return body

    def execute(self, context: Context) -> Any:
        target = self._target_or_none()
        wire_format, validator = resolve_response_format(self.response_format)
        request = self.build_request(target, wire_format)
        as_storage_path(self.result_path)  # a bad rendered result_path fails here, before the paid call
        if target is not None and "ti" in context:
            BasetenModelLink.persist(context, self)
        where = target.describe() if target else f"Model APIs {request['model']}"
        self.log.info("Chat completion on %s (%d messages, stream=%s)", where, len(request["messages"]), self.stream)
        hook = self.hook
        try:
            if self.stream:
                completion = self.call_activating(
                    target,
                    lambda: self._streamed(hook.stream_chat_completion(request, target=target, timeout=self.timeout)),
                    context,
                )
            else:
                completion = self.call_activating(
                    target, lambda: hook.chat_completion(request, target=target, timeout=self.timeout), context
                )
        finally:
            hook.close()
        result = self._result(completion, validator)
        usage = result["usage"]
        self.log.info(
            "Chat completion %s finished (%s); usage %s", result["id"], result["finish_reason"], usage or "not reported"
        )
        ti = context.get("ti")
        if ti is not None:
            ti.xcom_push(key="usage", value=usage)
        self._check_budget(usage)
        return store_if_large(result, context, threshold_bytes=self.max_result_bytes, base_path=self.result_path)

    def _result(self, completion: ChatCompletion, validator: Validator | None) -> dict[str, Any]:
        if not completion.choices:
            raise BasetenInvalidOutputError(f"The chat completion {completion.id} has no choices.")
        choice = completion.choices[0]
        message = choice.message.model_dump(mode="json", exclude_none=True)
        content = _text_of(choice.message.content)
        tool_calls = list(choice.message.tool_calls or [])
        parsed = None
        if validator is not None and not (tool_calls and not content):
            parsed = self._parse(content, validator, choice.finish_reason)
        return {
            "content": content,
            "message": message,
            "parsed": parsed,
            "tool_calls": tool_calls,
            "finish_reason": choice.finish_reason,
            "usage": completion.usage.model_dump(mode="json") if completion.usage else None,
            "model": completion.model,
            "id": completion.id,
        }

    def _parse(self, content: str | None, validator: Validator, finish_reason: str | None) -> Any:
        try:
            if content is None:
                raise ValueError("the answer has no content")
            return validator(content)
        except ValueError as err:  # json.JSONDecodeError, pydantic's ValidationError and schema errors
            hint = ""
            if finish_reason == "length":
                hint = " The answer was cut at max_tokens (finish_reason=length): raise max_tokens."
            preview = (content or "")[:_PREVIEW]
            message = f"The model's answer does not match response_format: {_first_line(err)}.{hint} "
            message += f"Content: {preview!r}"
            if self.allow_invalid_output:
                self.log.warning("%s (allow_invalid_output=True: returning parsed=None)", message)
                return None
            raise BasetenInvalidOutputError(message) from err

    def _check_budget(self, usage: dict[str, Any] | None) -> None:
        if self.max_total_tokens is None:
            return
        if not usage:
            self.log.warning("max_total_tokens is set but the server reported no usage: nothing to check.")
            return
        total = int(usage.get("total_tokens") or 0)
        if total > self.max_total_tokens:
            raise BasetenError(
                f"The chat completion used {total} tokens, over max_total_tokens={self.max_total_tokens} "
                "(the tokens are already billed; lower max_tokens or shorten the prompt)."
            )

    def _streamed(self, chunks: Iterable[dict[str, Any]]) -> ChatCompletion:
        """Log the answer line by line as it arrives, and assemble the chunks into one completion."""
        from airflow_provider_baseten.hooks.models import ChatCompletion

        assembler = StreamAssembler()
        for line in iter_lines(assembler.add(chunk) for chunk in chunks):
            self.log.info("%s", line)
        return ChatCompletion.model_validate(assembler.completion())


# --- helpers (module level so tests and other code can use them) ------------------------------------------------


class StreamAssembler:
    """Rebuild an OpenAI ``chat.completion`` from ``chat.completion.chunk`` events (first choice)."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.role = "assistant"
        self.parts: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> str:
        """Take one chunk; return the new answer text it carries."""
        self.id = self.id or chunk.get("id")
        self.model = self.model or chunk.get("model")
        self.created = self.created or chunk.get("created")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        text = ""
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            self.role = delta.get("role") or self.role
            if isinstance(delta.get("content"), str):
                text += delta["content"]
            for call in delta.get("tool_calls") or []:
                self._add_tool_call(call)
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        self.parts.append(text)
        return text

    def _add_tool_call(self, delta: dict[str, Any]) -> None:
        slot = self.tool_calls.setdefault(
            int(delta.get("index", len(self.tool_calls))),
            {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if delta.get("id"):
            slot["id"] = delta["id"]
        if delta.get("type"):
            slot["type"] = delta["type"]
        function = delta.get("function") or {}
        if function.get("name"):
            slot["function"]["name"] += function["name"]
        if function.get("arguments"):
            slot["function"]["arguments"] += function["arguments"]

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role, "content": "".join(self.parts) or None}
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[index] for index in sorted(self.tool_calls)]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
            "usage": self.usage,
        }


def resolve_response_format(response_format: Any) -> tuple[dict[str, Any] | None, Validator | None]:
    """The wire ``response_format`` and a validator of the answer's content (imports pydantic/jsonschema lazily)."""
    if response_format is None:
        return None, None
    if isinstance(response_format, type):
        from pydantic import BaseModel

        if not issubclass(response_format, BaseModel):
            raise BasetenConfigError(f"response_format class {response_format.__name__} is not a pydantic model.")
        return _json_schema_format(response_format.__name__, response_format.model_json_schema()), _pydantic_validator(
            response_format
        )
    if not isinstance(response_format, dict):
        raise BasetenConfigError("response_format must be a pydantic model class or a dict (JSON schema).")
    kind = response_format.get("type")
    if kind in _FORMAT_TYPES:
        if kind == "text":
            return dict(response_format), None
        if kind == "json_object":
            return dict(response_format), _json_validator(None)
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema is not None and not isinstance(schema, dict):
            raise BasetenConfigError("response_format.json_schema.schema must be a JSON schema object.")
        return dict(response_format), _json_validator(schema)
    title = response_format.get("title")
    return _json_schema_format(title if isinstance(title, str) else "response", response_format), _json_validator(
        response_format
    )


def _json_schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    safe = _SCHEMA_NAME.sub("_", name).strip("_")[:64] or "response"
    return {"type": "json_schema", "json_schema": {"name": safe, "schema": schema, "strict": True}}


def _strip_fence(content: str) -> str:
    """Models sometimes wrap JSON in a Markdown code fence; tolerate exactly that."""
    text = content.strip()
    match = _FENCE.match(text)
    return match.group("body") if match else text


def _json_validator(schema: dict[str, Any] | None) -> Validator:
    checker = None
    if schema is not None:
        import jsonschema

        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as err:
            raise BasetenConfigError(f"response_format is not a valid JSON schema: {err.message}") from None
        checker = cls(schema)

    def validate(content: str) -> Any:
        value = json.loads(_strip_fence(content))
        if checker is not None:
            error = next(iter(checker.iter_errors(value)), None)
            if error is not None:
                where = "/".join(str(part) for part in error.absolute_path) or "(root)"
                raise ValueError(f"schema violation at {where}: {error.message}")
        return value

    return validate


def _pydantic_validator(model: type[Any]) -> Validator:
    def validate(content: str) -> Any:
        return model.model_validate_json(_strip_fence(content)).model_dump(mode="json")

    return validate


def _text_of(content: Any) -> str | None:
    """Message content as text: a string, or the text parts of a content-part list."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def _first_line(err: BaseException) -> str:
    errors = getattr(err, "errors", None)
    if callable(errors):  # pydantic's ValidationError: name the fields, not the whole report
        items = errors()
        described = [f"{'/'.join(str(p) for p in e.get('loc', ())) or '(root)'}: {e.get('msg')}" for e in items[:3]]
        return "; ".join(described) + (f" (and {len(items) - 3} more)" if len(items) > 3 else "")
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise BasetenConfigError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts.")
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise BasetenConfigError(
                f"messages[{position}] must be a dict with a role in {sorted(_ROLES)}, got {message!r:.120}."
            )


def _check_extra_body(extra_body: Any) -> dict[str, Any]:
    if not isinstance(extra_body, dict):
        raise BasetenConfigError("extra_body must be a dict of request fields.")
    reserved = sorted(_RESERVED_KEYS.intersection(extra_body))
    if reserved:
        raise BasetenConfigError(f"extra_body may not set {', '.join(reserved)}: use the operator's parameters.")
    return extra_body


def _check_range(name: str, value: Any, *, minimum: float, maximum: float | None = None, integer: bool = False) -> None:
    if value is None:
        return
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise BasetenConfigError(f"{name} must be a{'n integer' if integer else ' number'}, got {value!r}.")
    number = float(value)  # type: ignore[arg-type]
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise BasetenConfigError(f"{name} must be {bounds}, got {value!r}.")


def iter_lines(chunks: Iterable[str]) -> Iterator[str]:
    """Split streamed text into complete lines (the last, unterminated part is yielded at the end)."""
    pending = ""
    for text in chunks:
        pending += text
        *lines, pending = pending.split("\n")
        yield from lines
    if pending:
        yield pending

"""A deterministic small "LLM" speaking the OpenAI chat completions protocol (Model APIs and deployed engines).

It answers from the messages with a few rules (arithmetic, sentiment, summaries, otherwise it repeats what it was
told), honours ``max_tokens`` (``finish_reason="length"``), ``stop`` and ``seed``, emits ``tool_calls`` when tools
are offered and the prompt names one (or ``tool_choice`` forces it), returns JSON that validates against a
``response_format`` ``json_schema`` (objects, required properties, strings, numbers, integers, booleans, enums,
arrays, ``$ref``/``anyOf``), and streams SSE chunks. Token counts come from a simple word/punctuation tokenizer:
real counts of real text, not a model's BPE counts.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

from airflow_provider_baseten.emulator.behaviours import Reply, sentiment_of, summarize

_TOKEN = re.compile(r"\w+|[^\w\s]")
_PIECE = re.compile(r"\s*\S+")
#: Tokens a chat template adds around each message, and to prime the reply (as OpenAI counts them).
_PER_MESSAGE_TOKENS = 4
_REPLY_PRIMING_TOKENS = 3
_ARITHMETIC = re.compile(r"(-?\d+(?:\.\d+)?)\s*([-+*/x\u00d7])\s*(-?\d+(?:\.\d+)?)")
_QUOTED = re.compile(r"\"([^\"]+)\"|'([^']+)'")
_CAPITALISED = re.compile(r"\b[A-Z][a-zA-Z]+\b")
_TEMPLATES = ("You said: {text}", "Here is what I heard: {text}", "Understood: {text}")


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def truncate_tokens(text: str, limit: int) -> str:
    """The prefix of ``text`` holding its first ``limit`` tokens."""
    for index, match in enumerate(_TOKEN.finditer(text)):
        if index == limit:
            return text[: match.start()].rstrip()
    return text


def message_text(content: Any) -> str:
    """Text of a message ``content``: a string, or the text parts of a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return str(content)


def prompt_tokens(messages: list[dict[str, Any]], tools: list[Any] | None) -> int:
    total = _REPLY_PRIMING_TOKENS
    for message in messages:
        total += _PER_MESSAGE_TOKENS + count_tokens(message_text(message.get("content")))
        for call in message.get("tool_calls") or []:
            total += count_tokens(json.dumps(call))
    if tools:
        total += count_tokens(json.dumps(tools))
    return total


def _last(messages: list[dict[str, Any]], role: str) -> str:
    for message in reversed(messages):
        if message.get("role") == role:
            return message_text(message.get("content")).strip()
    return ""


def answer_text(prompt: str, *, seed: int | None = None) -> str:
    """What the model says to ``prompt``: arithmetic, sentiment, a summary, or the prompt repeated."""
    lowered = prompt.lower()
    arithmetic = _ARITHMETIC.search(prompt)
    if arithmetic:
        left, op, right = float(arithmetic[1]), arithmetic[2], float(arithmetic[3])
        value = {
            "+": left + right,
            "-": left - right,
            "*": left * right,
            "x": left * right,
            "\u00d7": left * right,
        }.get(op, left / right if right else float("nan"))
        shown = int(value) if value == int(value) else round(value, 6)
        return f"{arithmetic[1]} {op} {arithmetic[3]} = {shown}."
    subject = prompt.split(":", 1)[1].strip() if ":" in prompt else prompt
    if "sentiment" in lowered:
        result = sentiment_of(subject)
        return f"The sentiment is {result['label']} (score {result['score']})."
    if "summar" in lowered:
        return f"Summary: {summarize(subject)}"
    if "how many words" in lowered or "count the words" in lowered:
        return f"The text has {len(subject.split())} words."
    template = _TEMPLATES[(seed or 0) % len(_TEMPLATES)]
    return template.format(text=prompt or "(nothing)")


# --- values that validate against a JSON schema ----------------------------------------------------------------


class _Hints:
    """Picks plausible values for schema fields from the prompt, by field name."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self.sentiment = sentiment_of(prompt)
        self.words = prompt.split()

    def string(self, name: str) -> str:
        lowered = name.lower()
        quoted = _QUOTED.search(self.prompt)
        if "sentiment" in lowered or lowered == "label":
            return str(self.sentiment["label"])
        if "summary" in lowered:
            return summarize(self.prompt)
        if quoted:
            return quoted[1] or quoted[2]
        capitalised = [word for word in _CAPITALISED.findall(self.prompt) if word != (self.words or [""])[0]]
        if capitalised and any(key in lowered for key in ("city", "location", "place", "country", "name")):
            return capitalised[-1]
        if self.words:
            return " ".join(self.words[:8]).strip(" ?!.,")
        return name

    def number(self, name: str) -> float:
        lowered = name.lower()
        if any(key in lowered for key in ("score", "confidence", "probability")):
            return float(self.sentiment["score"])
        return float(len(self.words))

    def integer(self, name: str) -> int:
        return len(self.words)

    def pick(self, options: list[Any]) -> Any:
        label = self.sentiment["label"]
        if label in options:
            return label
        lowered = self.prompt.lower()
        for option in options:
            if isinstance(option, str) and option.lower() in lowered:
                return option
        return options[0]


def _resolve_ref(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        if part:
            node = node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, Mapping) else {}
    return node if isinstance(node, Mapping) else {}


def _clamp(value: float, schema: Mapping[str, Any], step: float) -> float:
    low = schema.get("minimum")
    if "exclusiveMinimum" in schema and isinstance(schema["exclusiveMinimum"], int | float):
        low = max(low if low is not None else -1e308, schema["exclusiveMinimum"] + step)
    high = schema.get("maximum")
    if "exclusiveMaximum" in schema and isinstance(schema["exclusiveMaximum"], int | float):
        high = min(high if high is not None else 1e308, schema["exclusiveMaximum"] - step)
    if low is not None:
        value = max(value, low)
    if high is not None:
        value = min(value, high)
    return value


def _string_value(schema: Mapping[str, Any], name: str, hints: _Hints) -> str:
    fmt = schema.get("format")
    formats = {
        "date-time": "2025-01-01T00:00:00Z",
        "date": "2025-01-01",
        "time": "00:00:00Z",
        "email": "user@example.com",
        "uri": "https://example.com",
        "uuid": "00000000-0000-4000-8000-000000000000",
    }
    value = formats.get(fmt, "") if isinstance(fmt, str) else ""
    value = value or hints.string(name)
    min_length, max_length = int(schema.get("minLength", 0)), schema.get("maxLength")
    if len(value) < min_length:
        value = value + "x" * (min_length - len(value))
    if max_length is not None:
        value = value[: int(max_length)]
    return value


def schema_value(
    schema: Mapping[str, Any],
    *,
    hints: _Hints,
    root: Mapping[str, Any] | None = None,
    name: str = "value",
    depth: int = 0,
) -> Any:
    """A value that validates against ``schema`` (the subset structured outputs use), filled from ``hints``."""
    root = schema if root is None else root
    if depth > 8:
        return None
    if "$ref" in schema:
        return schema_value(_resolve_ref(str(schema["$ref"]), root), hints=hints, root=root, name=name, depth=depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return hints.pick(schema["enum"])
    for key in ("anyOf", "oneOf"):
        options = [option for option in schema.get(key) or [] if isinstance(option, Mapping)]
        if options:
            chosen = next((o for o in options if o.get("type") != "null"), options[0])
            return schema_value(chosen, hints=hints, root=root, name=name, depth=depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            if isinstance(part, Mapping):
                part = _resolve_ref(str(part["$ref"]), root) if "$ref" in part else part
                for key, value in part.items():
                    if key in ("properties",) and key in merged:
                        merged[key] = {**merged[key], **value}
                    elif key == "required" and key in merged:
                        merged[key] = [*merged[key], *value]
                    else:
                        merged[key] = value
        return schema_value(merged, hints=hints, root=root, name=name, depth=depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties") or {}
        return {
            key: schema_value(sub, hints=hints, root=root, name=key, depth=depth + 1)
            for key, sub in properties.items()
            if isinstance(sub, Mapping)
        }
    if kind == "array":
        count = max(int(schema.get("minItems", 0)), 1)
        if schema.get("maxItems") is not None:
            count = min(count, int(schema["maxItems"]))
        prefix = [p for p in schema.get("prefixItems") or [] if isinstance(p, Mapping)]
        items = schema.get("items")
        items = items if isinstance(items, Mapping) else {}
        values = [schema_value(p, hints=hints, root=root, name=name, depth=depth + 1) for p in prefix[:count]]
        values += [
            schema_value(items, hints=hints, root=root, name=name, depth=depth + 1) for _ in range(count - len(values))
        ]
        return values
    if kind == "string":
        return _string_value(schema, name, hints)
    if kind == "integer":
        return int(_clamp(hints.integer(name), schema, 1))
    if kind == "number":
        return _clamp(hints.number(name), schema, 1e-6)
    if kind == "boolean":
        return True
    return None


# --- completions ------------------------------------------------------------------------------------------------


def _error(message: str, status: int = 400) -> Reply:
    return Reply({"error": message}, status=status)


def _tool_name(tool: Any) -> str | None:
    if isinstance(tool, Mapping) and isinstance(tool.get("function"), Mapping):
        name = tool["function"].get("name")
        return name if isinstance(name, str) else None
    return None


def _tools_to_call(body: Mapping[str, Any], messages: list[dict[str, Any]], prompt: str) -> list[Mapping[str, Any]]:
    tools = [tool for tool in body.get("tools") or [] if _tool_name(tool)]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return []
    if isinstance(choice, Mapping):
        forced = (choice.get("function") or {}).get("name")
        return [tool for tool in tools if _tool_name(tool) == forced][:1]
    if messages and messages[-1].get("role") == "tool":
        return []  # the tool already answered: reply in words
    lowered = prompt.lower()
    named = [
        tool
        for tool in tools
        if (name := (_tool_name(tool) or "").lower()) in lowered or name.replace("_", " ") in lowered
    ]
    if choice == "required" and not named:
        named = tools[:1]
    return named if body.get("parallel_tool_calls", True) else named[:1]


def _tool_calls(tools: list[Mapping[str, Any]], prompt: str, seed: int | None) -> list[dict[str, Any]]:
    hints = _Hints(prompt)
    calls = []
    for index, tool in enumerate(tools):
        function = tool["function"]
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        arguments = schema_value(parameters, hints=hints)
        call_id = "call_" + uuid.uuid5(uuid.NAMESPACE_OID, f"{prompt}:{function['name']}:{index}:{seed}").hex[:24]
        calls.append(
            {
                "id": call_id,
                "type": "function",
                "function": {"name": function["name"], "arguments": json.dumps(arguments)},
            }
        )
    return calls


def _content(body: Mapping[str, Any], messages: list[dict[str, Any]], prompt: str, seed: int | None) -> str:
    response_format = body.get("response_format") or {}
    kind = response_format.get("type", "text") if isinstance(response_format, Mapping) else "text"
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        return json.dumps(schema_value(spec.get("schema") or {}, hints=_Hints(prompt)))
    if kind == "json_object":
        return json.dumps({"answer": answer_text(prompt, seed=seed), "words": len(prompt.split())})
    if messages and messages[-1].get("role") == "tool":
        return f"Based on the tool result: {message_text(messages[-1].get('content')).strip()}"
    return answer_text(prompt, seed=seed)


def _apply_stop(content: str, stop: Any) -> str:
    """``content`` up to the first stop sequence (which is not included)."""
    stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str) and s]
    cut = min((content.find(s) for s in stops if s in content), default=-1)
    return content[:cut] if cut >= 0 else content


def _validate(body: Mapping[str, Any]) -> str | None:
    """An error message for a request the engine rejects (400), else ``None``."""
    from pydantic import ValidationError

    from airflow_provider_baseten.hooks.models import ChatCompletionRequest

    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"Invalid request: {where}: {first['msg']}"
    if not request.messages:
        return "Invalid request: messages must not be empty"
    response_format = request.response_format or {}
    if response_format.get("type") == "json_schema" and not isinstance(
        (response_format.get("json_schema") or {}).get("schema"), Mapping
    ):
        return "Invalid request: response_format.json_schema.schema must be a JSON schema object"
    if response_format.get("type") not in (None, "text", "json_object", "json_schema"):
        return f"Invalid request: unsupported response_format type {response_format.get('type')!r}"
    return None


def complete(body: Mapping[str, Any], *, model: str, now: float) -> Reply:
    """Answer one chat completion request: a ``chat.completion`` object, or SSE chunks when ``stream`` is set."""
    problem = _validate(body)
    if problem:
        return _error(problem)
    messages: list[dict[str, Any]] = [dict(m) for m in body["messages"]]
    seed = body.get("seed") if isinstance(body.get("seed"), int) else None
    prompt = _last(messages, "user")
    tools = _tools_to_call(body, messages, prompt)
    tool_calls = _tool_calls(tools, prompt, seed) if tools else None
    content: str | None = None
    finish_reason = "tool_calls" if tool_calls else "stop"
    if not tool_calls:
        content = _apply_stop(_content(body, messages, prompt, seed), body.get("stop"))
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(max_tokens, int) and count_tokens(content) > max_tokens:
            content, finish_reason = truncate_tokens(content, max_tokens), "length"
    completion_tokens = count_tokens(content or "") + sum(
        count_tokens(call["function"]["arguments"]) + 1 for call in tool_calls or []
    )
    usage = _usage(prompt_tokens(messages, body.get("tools")), completion_tokens)
    completion_id = "chatcmpl-" + uuid.uuid4().hex
    created = int(now)
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunks = _stream_chunks(
            completion_id, created, model, content, tool_calls, finish_reason, usage, include_usage=include_usage
        )
        return Reply(chunks=chunks, content_type="text/event-stream")
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return Reply(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
            "usage": usage,
        }
    )


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(payload: Any) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _stream_chunks(
    completion_id: str,
    created: int,
    model: str,
    content: str | None,
    tool_calls: list[dict[str, Any]] | None,
    finish_reason: str,
    usage: dict[str, int],
    *,
    include_usage: bool,
) -> list[str]:
    """SSE lines: role, content pieces (or tool calls), the finish chunk, usage, ``[DONE]``.

    Without ``stream_options.include_usage`` the usage rides on the finish chunk (its ``choices`` stay non-empty, so
    code reading ``chunk.choices[0]`` keeps working); with it, a last chunk with empty ``choices`` carries it, as
    OpenAI does.
    """

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return _sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [choice],
                **extra,
            }
        )

    lines = [chunk({"role": "assistant", "content": ""})]
    if tool_calls:
        for index, call in enumerate(tool_calls):
            lines.append(chunk({"tool_calls": [{"index": index, **call}]}))
    else:
        lines.extend(chunk({"content": piece}) for piece in _PIECE.findall(content or ""))
    if include_usage:
        lines.append(chunk({}, finish_reason))
        lines.append(
            _sse(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        )
    else:
        lines.append(chunk({}, finish_reason, usage=usage))
    lines.append("data: [DONE]\n\n")
    return lines


def models_list(names: list[str], *, now: float, owned_by: str = "baseten") -> dict[str, Any]:
    """``GET /v1/models`` in the OpenAI shape."""
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": int(now), "owned_by": owned_by} for name in names],
    }

"""BasetenChatOperator against respx: parameters, templating, request bodies, structured output, tools, streaming."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any
from unittest import mock

import httpx
import pytest
import respx
from pydantic import BaseModel

from airflow_provider_baseten.exceptions import BasetenConfigError, BasetenConnectionError, BasetenError
from airflow_provider_baseten.hooks.baseten import BasetenHook
from airflow_provider_baseten.operators.chat import (
    BasetenChatOperator,
    BasetenInvalidOutputError,
    StreamAssembler,
    iter_lines,
    resolve_response_format,
)

GATEWAY = "http://gw.test"
SLUG = "deepseek-ai/DeepSeek-V3.1"
MODEL_APIS_URL = f"{GATEWAY}/v1/chat/completions"
DEPLOYED_URL = f"{GATEWAY}/production/sync/v1/chat/completions"


class Verdict(BaseModel):
    label: str
    score: float


VERDICT_SCHEMA = {
    "title": "Verdict",
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["positive", "negative"]}, "score": {"type": "number"}},
    "required": ["label", "score"],
    "additionalProperties": False,
}


@pytest.fixture(autouse=True)
def _conn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_BASETEN_DEFAULT",
        json.dumps({"conn_type": "baseten", "password": "sk-test-chat-key-123", "host": GATEWAY}),
    )


@pytest.fixture
def router() -> Any:
    with respx.mock(using="httpx", assert_all_called=False, assert_all_mocked=True) as mocked:
        yield mocked


@pytest.fixture
def context() -> dict[str, Any]:
    return {"ti": mock.MagicMock(name="ti")}


def make_op(**kwargs: Any) -> BasetenChatOperator:
    kwargs.setdefault("task_id", "chat")
    if "model_id" not in kwargs:
        kwargs.setdefault("model", SLUG)
    if "messages" not in kwargs:
        kwargs.setdefault("prompt", "Hello")
    op = BasetenChatOperator(**kwargs)
    op.hook = BasetenHook(customer_request_id="")  # no task context here
    return op


def completion(
    content: str | None = "Hi there.",
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str = "stop",
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": SLUG,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": usage if usage is not None else {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


@pytest.fixture
def task_log() -> Any:
    """The operator's logger (structlog on Airflow 3.3 never reaches caplog): a mock recording each call."""
    with mock.patch.object(BasetenChatOperator, "log", new_callable=mock.PropertyMock) as prop:
        yield prop.return_value


def logged(log: mock.MagicMock, level: str = "info") -> list[str]:
    return [call.args[0] % call.args[1:] for call in getattr(log, level).call_args_list]


def sent_body(route: respx.Route) -> dict[str, Any]:
    return json.loads(route.calls.last.request.content)


# --- parameters and validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": None}, "Pass model="),
        ({"chain_id": "abc123"}, "not chains"),
        ({"messages": [{"role": "user", "content": "x"}], "prompt": "y"}, "not both"),
        ({"prompt": None, "messages": None}, "Pass messages="),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"messages": []}, "non-empty list"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_total_tokens": "many"}, "max_total_tokens"),
        ({"seed": 1.5}, "seed"),
        ({"tools": {"type": "function"}}, "tools"),
        ({"extra_body": {"model": "other"}}, "extra_body may not set model"),
        ({"extra_body": ["x"]}, "extra_body must be a dict"),
        ({"deployment_id": "dep1"}, "need model_id"),
        ({"environment": "staging"}, "need model_id"),
        ({"model_id": "bad-id!"}, "model_id"),
        ({"response_format": "json"}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "json_schema"),
        ({"timeout": -1}, "timeout"),
    ],
)
def test_invalid_literal_arguments_fail_at_parse_time(kwargs: dict[str, Any], message: str) -> None:
    kwargs.setdefault("task_id", "chat")
    kwargs.setdefault("model", SLUG)
    if "messages" not in kwargs:
        kwargs.setdefault("prompt", "Hello")
    with pytest.raises(BasetenConfigError, match=message):
        BasetenChatOperator(**kwargs)


def test_templated_model_id_is_validated_only_after_rendering() -> None:
    op = BasetenChatOperator(task_id="chat", model_id="{{ params.model }}", prompt="hi")
    op.model_id = "bad id"
    with pytest.raises(BasetenConfigError):
        op.execute({})


def test_deployed_model_without_slug_is_valid() -> None:
    op = BasetenChatOperator(task_id="chat", model_id="llm01", prompt="hi")
    assert op.model is None


def test_template_fields_cover_connection_and_prompt_fields() -> None:
    fields = set(BasetenChatOperator.template_fields)
    assert {"baseten_conn_id", "model_id", "model", "messages", "prompt", "system_prompt", "extra_body"} <= fields
    assert BasetenChatOperator.template_fields_renderers["messages"] == "json"


def test_rendering_templates_messages_prompt_and_extra_body(router: respx.MockRouter, context: dict) -> None:
    route = router.post(MODEL_APIS_URL).respond(json=completion())
    op = make_op(
        messages=[{"role": "user", "content": "Summarize {{ params.doc }}"}],
        system_prompt="You are {{ params.persona }}.",
        extra_body={"top_k": "{{ params.k }}"},
        params={"doc": "report.pdf", "persona": "terse", "k": "20"},
    )
    op.render_template_fields({"params": {"doc": "report.pdf", "persona": "terse", "k": "20"}})
    op.execute(context)
    body = sent_body(route)
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Summarize report.pdf"},
    ]
    assert body["top_k"] == "20"


def test_messages_may_render_to_a_json_string(router: respx.MockRouter, context: dict) -> None:
    route = router.post(MODEL_APIS_URL).respond(json=completion())
    op = make_op(messages='[{"role": "user", "content": "from xcom"}]')
    op.execute(context)
    assert sent_body(route)["messages"] == [{"role": "user", "content": "from xcom"}]


def test_messages_rendering_to_garbage_fail_before_sending(router: respx.MockRouter, context: dict) -> None:
    route = router.post(MODEL_APIS_URL).respond(json=completion())
    op = make_op(messages="{{ not json }}")
    op.messages = "not json"
    with pytest.raises(BasetenConfigError, match="messages"):
        op.execute(context)
    assert not route.called


# --- requests and results ---------------------------------------------------------------------------------------


def test_model_apis_request_carries_every_generation_parameter(router: respx.MockRouter, context: dict) -> None:
    route = router.post(MODEL_APIS_URL).respond(json=completion())
    op = make_op(
        prompt="Hello",
        system_prompt="Be brief.",
        max_tokens=64,
        temperature=0.2,
        top_p=0.9,
        stop=["\n\n"],
        seed=7,
        extra_body={"top_k": 20, "parallel_tool_calls": False},
    )
    result = op.execute(context)
    request = route.calls.last.request
    assert request.headers["host"] == "inference.baseten.co"
    assert request.headers["authorization"] == "Api-Key sk-test-chat-key-123"
    assert sent_body(route) == {
        "model": SLUG,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        "max_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "seed": 7,
        "top_k": 20,
        "parallel_tool_calls": False,
    }
    assert result == {
        "content": "Hi there.",
        "message": {"role": "assistant", "content": "Hi there."},
        "parsed": None,
        "tool_calls": [],
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        "model": SLUG,
        "id": "chatcmpl-1",
    }
    context["ti"].xcom_push.assert_called_once_with(key="usage", value=result["usage"])


def test_deployed_model_uses_its_sync_chat_route(router: respx.MockRouter, context: dict) -> None:
    route = router.post(DEPLOYED_URL).respond(json=completion())
    make_op(model_id="llm01").execute(context)
    request = route.calls.last.request
    assert request.headers["host"] == "model-llm01.api.baseten.co"
    assert sent_body(route)["model"] == "llm01"


def test_deployed_model_named_environment(router: respx.MockRouter, context: dict) -> None:
    route = router.post(f"{GATEWAY}/environments/staging/sync/v1/chat/completions").respond(json=completion())
    make_op(model_id="llm01", environment="staging", model="my-served-name").execute(context)
    assert sent_body(route)["model"] == "my-served-name"


def test_api_error_propagates_with_the_hooks_type(router: respx.MockRouter, context: dict) -> None:
    router.post(MODEL_APIS_URL).respond(404, json={"error": "model not found"})
    from airflow_provider_baseten.exceptions import BasetenModelAPINotEnabledError

    with pytest.raises(BasetenModelAPINotEnabledError):
        make_op().execute(context)


# --- structured output ------------------------------------------------------------------------------------------


def test_json_schema_dict_is_sent_strict_and_the_answer_parsed(router: respx.MockRouter, context: dict) -> None:
    route = router.post(MODEL_APIS_URL).respond(json=completion('{"label": "positive", "score": 0.9}'))
    result = make_op(response_format=VERDICT_SCHEMA).execute(context)
    assert sent_body(route)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Verdict", "schema": VERDICT_SCHEMA, "strict": True},
    }
    assert result["parsed"] == {"label": "positive", "score": 0.9}


def test_answer_in_a_code_fence_is_tolerated(router: respx.MockRouter, context: dict) -> None:
    router.post(MODEL_APIS_URL).respond(json=completion('```json\n{"label": "negative", "score": 0.1}\n```'))
    assert make_op(response_format=VERDICT_SCHEMA).execute(context)["parsed"]["label"] == "negative"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"label": "meh", "score": 0.5}', "schema violation at label"),
        ('{"label": "positive"}', "'score' is a required property"),
        ("Sure! Here is the JSON", "Expecting value"),
    ],
)
def test_invalid_answer_raises(router: respx.MockRouter, context: dict, content: str, reason: str) -> None:
    router.post(MODEL_APIS_URL).respond(json=completion(content))
    with pytest.raises(BasetenInvalidOutputError, match=reason):
        make_op(response_format=VERDICT_SCHEMA).execute(context)


def test_truncated_answer_hints_at_max_tokens(router: respx.MockRouter, context: dict) -> None:
    router.post(MODEL_APIS_URL).respond(json=completion('{"label": "posi', finish_reason="length"))
    with pytest.raises(BasetenInvalidOutputError, match="raise max_tokens"):
        make_op(response_format=VERDICT_SCHEMA).execute(context)


def test_allow_invalid_output_returns_raw_text(router: respx.MockRouter, context: dict, task_log: Any) -> None:
    router.post(MODEL_APIS_URL).respond(json=completion("not json"))
    result = make_op(response_format=VERDICT_SCHEMA, allow_invalid_output=True).execute(context)
    assert result["parsed"] is None
    assert result["content"] == "not json"
    assert "allow_invalid_output=True" in logged(task_log, "warning")[0]


def test_pydantic_model_response_format(router: respx.MockRouter, context: dict) -> None:
    route = router.post(MODEL_APIS_URL).respond(json=completion('{"label": "positive", "score": "0.75"}'))
    result = make_op(response_format=Verdict).execute(context)
    sent = sent_body(route)["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "Verdict"
    assert sent["json_schema"]["strict"] is True
    assert sent["json_schema"]["schema"] == Verdict.model_json_schema()
    assert result["parsed"] == {"label": "positive", "score": 0.75}


def test_pydantic_model_invalid_answer_names_the_field(router: respx.MockRouter, context: dict) -> None:
    router.post(MODEL_APIS_URL).respond(json=completion('{"label": "positive", "score": "high"}'))
    with pytest.raises(BasetenInvalidOutputError, match="score: Input should be a valid number"):
        make_op(response_format=Verdict).execute(context)


def test_class_that_is_not_a_pydantic_model_is_rejected(router: respx.MockRouter, context: dict) -> None:
    with pytest.raises(BasetenConfigError, match="not a pydantic model"):
        make_op(response_format=dict).execute(context)


@pytest.mark.parametrize(
    ("response_format", "content", "parsed"),
    [
        ({"type": "json_object"}, '{"any": [1, 2]}', {"any": [1, 2]}),
        ({"type": "text"}, "plain", None),
        (
            {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "array"}, "strict": False}},
            "[1]",
            [1],
        ),
    ],
)
def test_openai_response_format_dicts_pass_through(
    router: respx.MockRouter, context: dict, response_format: dict, content: str, parsed: Any
) -> None:
    route = router.post(MODEL_APIS_URL).respond(json=completion(content))
    result = make_op(response_format=response_format).execute(context)
    assert sent_body(route)["response_format"] == response_format
    assert result["parsed"] == parsed


def test_invalid_json_schema_fails_before_sending(router: respx.MockRouter, context: dict) -> None:
    route = router.post(MODEL_APIS_URL).respond(json=completion("{}"))
    with pytest.raises(BasetenConfigError, match="not a valid JSON schema"):
        make_op(response_format={"type": "object", "properties": 5}).execute(context)
    assert not route.called


def test_schema_name_is_sanitized() -> None:
    wire, _ = resolve_response_format({"title": "My Answer (v2)", "type": "object"})
    assert wire is not None
    assert wire["json_schema"]["name"] == "My_Answer_v2"


# --- tools ----------------------------------------------------------------------------------------------------------

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def test_tools_pass_through_and_tool_calls_return(router: respx.MockRouter, context: dict) -> None:
    route = router.post(MODEL_APIS_URL).respond(
        json=completion(None, tool_calls=[TOOL_CALL], finish_reason="tool_calls")
    )
    result = make_op(tools=TOOLS, tool_choice="required", response_format=VERDICT_SCHEMA).execute(context)
    body = sent_body(route)
    assert body["tools"] == TOOLS
    assert body["tool_choice"] == "required"
    assert result["tool_calls"] == [TOOL_CALL]
    assert result["finish_reason"] == "tool_calls"
    assert result["content"] is None
    assert result["parsed"] is None  # a tool call is not an answer to validate


# --- usage guard ---------------------------------------------------------------------------------------------------


def test_max_total_tokens_fails_after_pushing_usage(router: respx.MockRouter, context: dict) -> None:
    usage = {"prompt_tokens": 900, "completion_tokens": 200, "total_tokens": 1100}
    router.post(MODEL_APIS_URL).respond(json=completion(usage=usage))
    with pytest.raises(BasetenError, match="1100 tokens, over max_total_tokens=1000"):
        make_op(max_total_tokens=1000).execute(context)
    context["ti"].xcom_push.assert_called_once_with(key="usage", value=usage)


def test_max_total_tokens_within_budget_passes(router: respx.MockRouter, context: dict) -> None:
    router.post(MODEL_APIS_URL).respond(json=completion())
    assert make_op(max_total_tokens=8).execute(context)["usage"]["total_tokens"] == 8


def test_max_total_tokens_without_reported_usage_warns(router: respx.MockRouter, context: dict, task_log: Any) -> None:
    body = completion()
    del body["usage"]
    router.post(MODEL_APIS_URL).respond(json=body)
    result = make_op(max_total_tokens=10).execute(context)
    assert result["usage"] is None
    assert "reported no usage" in logged(task_log, "warning")[0]


# --- streaming --------------------------------------------------------------------------------------------------


def sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks) + b"data: [DONE]\n\n"


def delta_chunk(text: str | None = None, **extra: Any) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if text is not None:
        delta["content"] = text
    delta.update(extra.pop("delta", {}))
    return {
        "id": "chatcmpl-s",
        "model": SLUG,
        "choices": [{"index": 0, "delta": delta, "finish_reason": extra.pop("finish_reason", None)}],
        **extra,
    }


def test_stream_logs_lines_and_returns_the_full_result(router: respx.MockRouter, context: dict, task_log: Any) -> None:
    stream = sse(
        delta_chunk(delta={"role": "assistant"}),
        delta_chunk("First li"),
        delta_chunk("ne\nSecond line\nThi"),
        delta_chunk("rd", finish_reason="stop"),
        {"id": "chatcmpl-s", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}},
    )
    route = router.post(MODEL_APIS_URL).respond(content=stream, headers={"content-type": "text/event-stream"})
    result = make_op(stream=True).execute(context)
    body = sent_body(route)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    lines = logged(task_log)
    start = lines.index("First line")
    assert lines[start : start + 3] == ["First line", "Second line", "Third"]
    assert result["content"] == "First line\nSecond line\nThird"
    assert result["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
    assert result["finish_reason"] == "stop"
    assert result["id"] == "chatcmpl-s"
    context["ti"].xcom_push.assert_called_once_with(key="usage", value=result["usage"])


def test_stream_logs_each_line_before_the_next_chunk_arrives(context: dict, task_log: Any) -> None:
    seen_before_chunk: list[list[str]] = []

    def chunks(*_args: Any, **_kwargs: Any) -> Any:
        for text in ["Alpha\nBe", "ta\n", "Gamma"]:
            seen_before_chunk.append(logged(task_log))
            yield delta_chunk(text)
        yield {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}

    op = make_op(stream=True)
    with mock.patch.object(op.hook, "stream_chat_completion", side_effect=chunks):
        result = op.execute(context)
    assert seen_before_chunk[1][-1] == "Alpha"  # logged as soon as its newline arrived
    assert seen_before_chunk[2][-1] == "Beta"
    assert "Gamma" in logged(task_log)  # the unterminated tail is flushed at the end
    assert result["content"] == "Alpha\nBeta\nGamma"
    assert result["usage"]["total_tokens"] == 3


def test_stream_with_json_schema_validates_the_assembled_answer(router: respx.MockRouter, context: dict) -> None:
    stream = sse(delta_chunk('{"label": "neg'), delta_chunk('ative", "score": 0}', finish_reason="stop"))
    router.post(MODEL_APIS_URL).respond(content=stream, headers={"content-type": "text/event-stream"})
    result = make_op(stream=True, response_format=VERDICT_SCHEMA).execute(context)
    assert result["parsed"] == {"label": "negative", "score": 0}


def test_stream_assembler_joins_tool_call_deltas() -> None:
    assembler = StreamAssembler()
    assembler.add(delta_chunk(delta={"role": "assistant"}))
    assembler.add(
        delta_chunk(
            delta={"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_"}}]}
        )
    )
    assembler.add(
        delta_chunk(delta={"tool_calls": [{"index": 0, "function": {"name": "weather", "arguments": '{"ci'}}]})
    )
    assembler.add(
        delta_chunk(
            delta={"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}, finish_reason="tool_calls"
        )
    )
    done = assembler.completion()
    assert done["choices"][0]["message"]["tool_calls"] == [
        TOOL_CALL | {"function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    ]
    assert done["choices"][0]["message"]["content"] is None
    assert done["choices"][0]["finish_reason"] == "tool_calls"


def test_iter_lines_keeps_the_unterminated_tail() -> None:
    assert list(iter_lines(["a", "b\nc", "", "\n", "d"])) == ["ab", "c", "d"]


def test_stream_error_status_raises(router: respx.MockRouter, context: dict) -> None:
    router.post(MODEL_APIS_URL).respond(401, json={"error": "bad key"})
    from airflow_provider_baseten.exceptions import BasetenAuthError

    with pytest.raises(BasetenAuthError):
        make_op(stream=True).execute(context)


def test_mocked_transport_never_reaches_network(router: respx.MockRouter, context: dict) -> None:
    router.post(MODEL_APIS_URL).mock(side_effect=httpx.ConnectError("refused"))
    op = make_op()
    op.hook = BasetenHook(customer_request_id="", sleep=lambda _s: None)
    with pytest.raises(BasetenConnectionError):
        op.execute(context)
    assert router.calls.call_count == 6  # connect errors provably never reached the model: retried (5 retries)


# --- import cost ----------------------------------------------------------------------------------------------------


def test_importing_the_operator_loads_no_chat_stack() -> None:
    code = (
        "import sys\n"
        "import airflow_provider_baseten.operators.chat\n"
        "heavy = [m for m in ('openai', 'httpx_aiohttp', 'aiohttp', 'airflow_provider_baseten.hooks.baseten',"
        " 'airflow_provider_baseten.hooks.models') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# --- links and large results --------------------------------------------------------------------------------------


def test_deployed_chat_publishes_the_model_link(router: respx.MockRouter, context: dict) -> None:
    router.post(DEPLOYED_URL).respond(json=completion())
    make_op(model_id="llm01").execute(context)
    pushed = {call.kwargs["key"]: call.kwargs["value"] for call in context["ti"].xcom_push.call_args_list}
    assert pushed["_link_BasetenModelLink"] == "https://app.baseten.co/models/llm01/overview"


def test_large_result_goes_to_object_storage(router: respx.MockRouter, context: dict, tmp_path: Any) -> None:
    router.post(MODEL_APIS_URL).respond(json=completion("x" * 500))
    context["ti"].configure_mock(dag_id="dag", task_id="chat", run_id="run1", map_index=-1)
    uri = make_op(max_result_bytes=100, result_path=str(tmp_path)).execute(context)
    assert isinstance(uri, str)
    assert uri.startswith("file://")
    stored = json.loads((tmp_path / "dag" / "run1" / "chat.json").read_text())
    assert stored["content"] == "x" * 500
    context["ti"].xcom_push.assert_called_once()  # usage still pushed on its own key


def test_invalid_result_threshold_is_rejected() -> None:
    with pytest.raises(BasetenConfigError, match="max_result_bytes"):
        make_op(max_result_bytes=-1)
